"""Hypothesis strategies shared by the tests (after attrs' ``tests/strategies.py``)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import strategies as st

from tokentrail.usage import Provenance, Source, Usage, UsageTotals

counts = st.integers(min_value=0, max_value=10**9)
maybe_counts = st.none() | counts
sources = st.sampled_from(list(Source))


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    """A `Usage` that keeps the conventions: unknown is ``None``, parts never exceed a known whole."""
    input_tokens = draw(maybe_counts)
    output_tokens = draw(maybe_counts)

    def part(whole: int | None) -> int | None:
        return draw(st.none() | (counts if whole is None else st.integers(0, whole)))

    cache_read = part(input_tokens)
    room = None if input_tokens is None else input_tokens - (cache_read or 0)
    cache_write = part(room)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=part(output_tokens),
    )


def provenances() -> st.SearchStrategy[Provenance]:
    return st.builds(Provenance, input=sources, output=sources)


@st.composite
def totals(draw: st.DrawFn) -> UsageTotals:
    """A `UsageTotals` that could be the sum of real calls."""
    calls = draw(st.integers(0, 10**6))
    input_tokens, output_tokens = draw(counts), draw(counts)
    cache_read = draw(st.integers(0, input_tokens))
    return UsageTotals(
        calls=calls,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=draw(st.integers(0, input_tokens - cache_read)),
        reasoning_tokens=draw(st.integers(0, output_tokens)),
        total_tokens=input_tokens + output_tokens,
        calls_without_usage=draw(st.integers(0, calls)),
        calls_estimated=draw(st.integers(0, calls)),
    )


# -- server-sent events ---------------------------------------------------------------------------

# Data lines: any text without line breaks, multi-byte characters included, so that byte splits
# land inside UTF-8 sequences.
_line_text = st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=12)
_event_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz._"), min_size=1, max_size=20)
_endings = st.sampled_from(["\n", "\r\n", "\r"])

SseCase = tuple[list[tuple[str, bytes]], bytes]
"""The events a stream must decode to (name, data), and the stream's bytes."""


@st.composite
def sse_streams(draw: st.DrawFn) -> SseCase:
    """Events rendered to SSE bytes with mixed line endings, optional comments and optional names.

    Returns ``(expected events, rendered bytes)``; an unnamed event is expected as ``"message"``.
    """
    lines: list[str] = []
    expected: list[tuple[str, bytes]] = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.none() | _event_names)
        data = draw(st.lists(_line_text, min_size=1, max_size=4))
        block: list[str] = []
        if name is not None:
            block.append(f"event: {name}" if draw(st.booleans()) else f"event:{name}")
        for value in data:
            # "data:x" and "data: x" mean the same, unless the value itself starts with a space.
            spaced = draw(st.booleans()) or value.startswith(" ")
            block.append(f"data: {value}" if spaced else f"data:{value}")
        for _ in range(draw(st.integers(0, 2))):
            block.insert(draw(st.integers(0, len(block))), ": keepalive")
        lines += block
        lines.append("")  # the blank line that dispatches the event
        if draw(st.booleans()):
            lines += [": keepalive", ""]  # a comment-only block dispatches nothing
        expected.append((name or "message", "\n".join(data).encode()))

    out: list[str] = []
    previous = ""
    for line in lines:
        ending = draw(_endings)
        if previous == "\r" and line == "" and ending.startswith("\n"):
            # "\r" then "\n" is one CRLF, not two line ends: keep the blank line blank.
            ending = "\r"
        out.append(line + ending)
        previous = ending
    return expected, "".join(out).encode()


@st.composite
def splits(draw: st.DrawFn, data: bytes, *, allow_empty: bool = False) -> list[bytes]:
    """``data`` cut at random byte positions; the pieces join back to ``data``.

    With ``allow_empty``, cut points may repeat, so some pieces are ``b""``.
    """
    if not data:
        return [b""] if allow_empty else []
    positions = st.integers(0, len(data)) if allow_empty else st.integers(1, max(1, len(data) - 1))
    cuts = sorted(draw(st.lists(positions, max_size=min(len(data), 40), unique=not allow_empty)))
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in pairwise(bounds)]
    return pieces if allow_empty else [p for p in pieces if p]
