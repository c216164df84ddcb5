"""Ollama's native API: /api/chat, /api/generate (streamed by default), /api/embed, /api/embeddings.

The quirk under test: a fully cached prompt makes Ollama leave ``prompt_eval_count`` out, and that is
an unknown input, never 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire import ollama
from tokentrail.wire._base import ParsedCall, StreamOutcome, WholeBody
from tokentrail.wire.ollama import CHAT, EMBED, EMBEDDINGS, GENERATE, SUFFIXES, JsonLines

from ..strategies import splits

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
PARTIAL = Provenance(input=Source.PARTIAL, output=Source.PARTIAL)
PAYLOADS = Path(__file__).parent.parent / "payloads" / "ollama"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def feed_all(parser: Any, pieces: list[bytes], outcome: StreamOutcome = StreamOutcome.COMPLETE) -> ParsedCall:
    for piece in pieces:
        parser.feed(piece)
    return parser.finish(outcome)


METRICS = {
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 282,
    "eval_duration": 4535599000,
}


def final(**changes: Any) -> dict[str, Any]:
    obj = {
        "model": "llama3.2",
        "created_at": "2023-08-04T19:22:45.499127Z",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "stop",
        "done": True,
        **METRICS,
    }
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not ...}


def chat_stream(last: Any = ..., *, ending: bytes = b"\n", final_newline: bool = True) -> bytes:
    lines = [
        {"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": "The"}, "done": False},
        {"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": " sky 😀"}, "done": False},
    ]
    if last is not None:
        lines.append(final() if last is ... else last)
    body = ending.join(dumps(line) for line in lines)
    return body + ending if final_newline else body


# -- non-stream ---------------------------------------------------------------------------------------


def test_chat_non_stream() -> None:
    result = CHAT.parse(dumps(final(message={"role": "assistant", "content": "Hello!"})))
    assert result.usage == Usage(input_tokens=26, output_tokens=282)
    assert (result.provenance, result.flags, result.complete, result.model) == (REPORTED, frozenset(), True, "llama3.2")
    assert result.raw_usage == {**METRICS, "done_reason": "stop"}  # counts and timings, never the message


def test_generate_non_stream() -> None:
    body = {
        "model": "gemma3",
        "response": "Hi",
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 11,
        "eval_count": 18,
    }
    assert GENERATE.parse(dumps(body)).usage == Usage(input_tokens=11, output_tokens=18)


def test_fully_cached_prompt_is_an_unknown_input_not_zero() -> None:
    # ollama/ollama#2068: prompt_eval_count disappears when the prompt was served from the cache.
    result = CHAT.parse(dumps(final(prompt_eval_count=..., prompt_eval_duration=...)))
    assert result.usage == Usage(output_tokens=282)
    assert result.usage.input_tokens is None
    assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    assert result.flags == frozenset()


def test_cached_count_is_part_of_input() -> None:
    result = CHAT.parse(dumps(final(prompt_eval_count=1210, prompt_eval_cached_count=1184, eval_count=3)))
    assert result.usage == Usage(input_tokens=1210, output_tokens=3, cache_read_tokens=1184)
    result = CHAT.parse(dumps(final(prompt_eval_count=10, prompt_eval_cached_count=11)))
    assert result.flags == {Flag.PARTS_EXCEED_WHOLE}


@pytest.mark.parametrize("bad", [-1, "26", 26.0, True])
def test_invalid_counts(bad: Any) -> None:
    result = CHAT.parse(dumps(final(prompt_eval_count=bad)))
    assert result.usage == Usage(output_tokens=282)
    assert result.flags == {Flag.INVALID_VALUE}


@pytest.mark.parametrize(
    ("body", "complete"),
    [
        (b"", True),
        (b"<html>502</html>", True),
        (b'{"error":"model \\"x\\" not found, try pulling it first"}', True),
        (dumps({"model": "m", "done": False}), False),
    ],
    ids=["empty", "html", "error", "not-done"],
)
def test_bodies_without_usage(body: bytes, complete: bool) -> None:
    result = GENERATE.parse(body)
    assert (result.usage, result.provenance, result.complete) == (Usage(), MISSING, complete)


# -- streams (the default) -----------------------------------------------------------------------------


def test_chat_stream() -> None:
    result = feed_all(CHAT.stream(), [chat_stream()])
    assert result.usage == Usage(input_tokens=26, output_tokens=282)
    assert (result.provenance, result.flags, result.complete, result.model) == (REPORTED, frozenset(), True, "llama3.2")


def test_stream_cached_prompt() -> None:
    result = feed_all(CHAT.stream(), [chat_stream(final(prompt_eval_count=...))])
    assert result.usage == Usage(output_tokens=282)
    assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    assert result.complete


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_stream_cut_before_done(outcome: StreamOutcome) -> None:
    result = feed_all(CHAT.stream(), [chat_stream(None)], outcome)
    assert (result.usage, result.provenance, result.flags, result.complete, result.model) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
        "llama3.2",
    )


def test_stream_error_line() -> None:
    result = feed_all(CHAT.stream(), [chat_stream({"error": "unexpected EOF"})])
    assert (result.usage, result.flags, result.complete) == (Usage(), {Flag.STREAM_INCOMPLETE}, False)


def test_stream_last_line_without_newline() -> None:
    assert feed_all(CHAT.stream(), [chat_stream(final_newline=False)]) == feed_all(CHAT.stream(), [chat_stream()])


def test_stream_with_crlf_and_blank_lines() -> None:
    raw = chat_stream(ending=b"\r\n").replace(b"\r\n", b"\r\n\r\n", 1)
    assert feed_all(CHAT.stream(), [raw]) == feed_all(CHAT.stream(), [chat_stream()])


def test_stream_with_malformed_lines() -> None:
    raw = b'{"done":true, broken\n[1,2]\n"text"\n' + chat_stream()
    result = feed_all(CHAT.stream(), [raw])
    assert result.usage == Usage(input_tokens=26, output_tokens=282)


def test_stream_read_whole_by_parse() -> None:
    for raw in (chat_stream(), chat_stream(None), chat_stream(final(prompt_eval_count=...))):
        assert CHAT.parse(raw) == feed_all(CHAT.stream(), [raw])


_STREAMS: dict[str, bytes] = {
    "chat": chat_stream(),
    "chat-crlf": chat_stream(ending=b"\r\n"),
    "chat-no-final-newline": chat_stream(final_newline=False),
    "chat-cut": chat_stream(None),
}


@pytest.mark.parametrize("name", list(_STREAMS))
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    raw = _STREAMS[name]
    whole = feed_all(CHAT.stream(), [raw])
    for i in range(1, len(raw)):
        assert feed_all(CHAT.stream(), [raw[:i], raw[i:]]) == whole, i


@settings(max_examples=40)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    raw = _STREAMS[name]
    assert feed_all(CHAT.stream(), data.draw(splits(raw, allow_empty=True)), outcome) == feed_all(
        CHAT.stream(), [raw], outcome
    )


@settings(max_examples=60)
@given(
    st.lists(
        st.text(st.characters(exclude_characters="\r\n", categories=("L", "N", "P", "S", "Zs", "Cc")), max_size=10),
        max_size=6,
    ),
    st.data(),
)
def test_json_lines_any_split(lines: list[str], data: st.DataObject) -> None:
    raw = "".join(line + "\n" for line in lines).encode()
    decoder = JsonLines()
    got: list[bytes] = []
    for piece in data.draw(splits(raw, allow_empty=True)):
        got += decoder.feed(piece)
    assert got == [line.encode().strip() for line in lines if line.encode().strip()]
    assert decoder.close() == b""


# -- requests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "stream"),
    [
        ({"model": "llama3.2", "messages": []}, True),  # absent means true on these endpoints
        ({"model": "llama3.2", "messages": [], "stream": True}, True),
        ({"model": "llama3.2", "messages": [], "stream": False}, False),
        (
            {
                "model": "llama3.2",
                "prompt": "x",
                "format": {"type": "object", "properties": {"stream": {"type": "boolean"}}},
                "stream": False,
            },
            False,
        ),
    ],
)
def test_parse_request_stream_defaults_to_true(body: dict[str, Any], stream: bool) -> None:
    for parser in (CHAT, GENERATE):
        info = parser.parse_request(dumps(body))
        assert (info.model, info.stream) == ("llama3.2", stream)
    assert CHAT.parse_request(b"").stream is True


def test_embed_requests_never_stream() -> None:
    info = EMBED.parse_request(dumps({"model": "all-minilm", "input": ["a"]}))
    assert (info.model, info.stream) == ("all-minilm", False)
    assert isinstance(EMBED.stream(), WholeBody) and isinstance(EMBEDDINGS.stream(), WholeBody)
    assert EMBEDDINGS.parse_request(dumps({"model": "all-minilm", "prompt": "a"})).model == "all-minilm"


# -- embeddings -------------------------------------------------------------------------------------------


def test_embed() -> None:
    body = {
        "model": "all-minilm",
        "embeddings": [[0.01, -0.0017]],
        "total_duration": 14143917,
        "load_duration": 1019500,
        "prompt_eval_count": 8,
    }
    result = EMBED.parse(dumps(body))
    assert result.usage == Usage(input_tokens=8, output_tokens=0)
    assert (result.model, result.provenance) == ("all-minilm", REPORTED)
    assert result.raw_usage == {"prompt_eval_count": 8, "total_duration": 14143917, "load_duration": 1019500}


def test_embed_without_prompt_eval_count() -> None:
    result = EMBED.parse(dumps({"model": "all-minilm", "embeddings": [[0.1]]}))
    assert result.usage == Usage(output_tokens=0)
    assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    assert EMBED.parse(b'{"error":"model not found"}').usage == Usage()


def test_embed_large_body() -> None:
    row = ",".join(["0.0123456789"] * 768)
    body = (
        b'{"model":"nomic-embed-text","embeddings":['
        + ",".join(f"[{row}]" for _ in range(300)).encode()
        + b'],"prompt_eval_count":4000}'
    )
    assert len(body) > 2_000_000
    result = EMBED.parse(body)
    assert (result.usage, result.model) == (Usage(input_tokens=4000, output_tokens=0), "nomic-embed-text")


def test_legacy_embeddings_report_nothing() -> None:
    result = EMBEDDINGS.parse(dumps({"embedding": [0.567, 0.009]}))
    assert (result.usage, result.provenance, result.raw_usage) == (Usage(), MISSING, None)


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/api/chat", CHAT),
        ("/api/generate", GENERATE),
        ("/api/embed", EMBED),
        ("/api/embeddings", EMBEDDINGS),
        ("/ollama/api/chat", CHAT),
        ("/v1/chat/completions", None),
        ("/api/tags", None),
        ("/api/pull", None),
        ("/api/show", None),
    ],
)
def test_matches(path: str, parser: Any) -> None:
    assert [p for p in ollama.PARSERS if p.matches("POST", path)] == ([parser] if parser else [])
    assert path.endswith(SUFFIXES) == (parser is not None)


# -- golden corpus ----------------------------------------------------------------------------------------


def normalized(result: ParsedCall) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
    }


def parser_for(name: str) -> Any:
    for prefix, parser in (("embeddings", EMBEDDINGS), ("embed", EMBED), ("generate", GENERATE), ("chat", CHAT)):
        if name.startswith(prefix):
            return parser
    raise AssertionError(name)


def derive(path: Path) -> list[tuple[str, dict[str, Any]]]:
    parser = parser_for(path.name)
    raw = path.read_bytes()
    if path.suffix == ".json":
        return [("parse", normalized(parser.parse(raw)))]
    out = [("parse", normalized(parser.parse(raw)))]
    for how, size in (("whole", len(raw)), ("7-byte pieces", 7)):
        out.append((how, normalized(feed_all(parser.stream(), [raw[i : i + size] for i in range(0, len(raw), size)]))))
    return out


GOLDEN = sorted(
    p for p in PAYLOADS.iterdir() if p.suffix in (".json", ".ndjson") and not p.name.endswith(".expected.json")
)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden(path: Path) -> None:
    expected_path = path.with_name(path.name.split(".")[0] + ".expected.json")
    results = derive(path)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.write_text(json.dumps(results[0][1], indent=2) + "\n")
    expected = json.loads(expected_path.read_text())
    for how, got in results:
        assert got == expected, how


def test_golden_corpus_is_complete() -> None:
    assert len(GOLDEN) >= 8
    stems = {p.name.split(".")[0] for p in GOLDEN}
    assert stems == {p.name.removesuffix(".expected.json") for p in PAYLOADS.glob("*.expected.json")}
    sources = (PAYLOADS / "SOURCE.md").read_text()
    assert all(f"- SOURCE {stem}:" in sources for stem in stems), stems
