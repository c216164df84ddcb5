"""Golden corpus: every recorded payload re-derived and compared with its expected record.

Layout (after genai-prices' ``tests/dataset/``)::

    tests/payloads/<family>/<case>.json           a non-stream response body
    tests/payloads/<family>/<case>.sse            raw SSE bytes of a streamed body
    tests/payloads/<family>/<case>.expected.json  model, usage (five counts + total), provenance, flags
    tests/payloads/<family>/SOURCE.md             one "SOURCE <case>: …" line per case

A ``.json`` body goes through the family's ``parse``; an ``.sse`` body through its ``stream()``, fed
in one piece and again in 7-byte pieces, finished with ``StreamOutcome.COMPLETE``, and through its
``parse_stream`` where it has one (unless that declines). Any difference from
``.expected.json`` fails.

The expected files state the conventions (ARCHITECTURE.md §2), not whatever the code printed: write
them by hand for a new case. After a deliberate change, regenerate them with::

    UPDATE_GOLDEN=1 python -m pytest tests/wire/test_golden.py

and review the diff before committing. Cases in ``KNOWN_BUGS`` are never rewritten; they are
strict xfails until the bug is fixed, then remove them from the dict.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tokentrail.wire._base import ParsedCall, StreamOutcome, WireParser
from tokentrail.wire.openai_chat import CHAT, COMPLETIONS, EMBEDDINGS
from tokentrail.wire.openai_responses import RESPONSES

PAYLOADS = Path(__file__).parent.parent / "payloads"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

FAMILIES: dict[str, WireParser] = {
    "openai_chat": CHAT,
    "openai_responses": RESPONSES,
    "openai_embeddings": EMBEDDINGS,
}
CASE_PARSERS: dict[str, WireParser] = {"openai_chat/completions_legacy": COMPLETIONS}
"""Cases served by another parser of the same family."""

KNOWN_BUGS: dict[str, str] = {}


def normalized(result: ParsedCall) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
    }


def _cases() -> list[Any]:
    params = []
    for family in sorted(FAMILIES):
        for path in sorted((PAYLOADS / family).iterdir()):
            if path.suffix not in (".json", ".sse") or path.name.endswith(".expected.json"):
                continue
            key = f"{family}/{path.stem}"
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[key])] if key in KNOWN_BUGS else []
            params.append(pytest.param(path, id=f"{key}{path.suffix}", marks=marks))
    return params


CASES = _cases()


def derive(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(how, normalized record)`` for each way the payload is read."""
    family = path.parent.name
    parser = CASE_PARSERS.get(f"{family}/{path.stem}", FAMILIES[family])
    raw = path.read_bytes()
    if path.suffix == ".json":
        return [("parse", normalized(parser.parse(raw)))]
    out = []
    for how, size in (("whole", len(raw) or 1), ("7-byte pieces", 7)):
        stream = parser.stream()
        for i in range(0, len(raw), size):
            stream.feed(raw[i : i + size])
        out.append((how, normalized(stream.finish(StreamOutcome.COMPLETE))))
    whole = getattr(parser, "parse_stream", None)  # the one-go path for a stream held in memory
    if whole is not None:
        result = whole(raw, StreamOutcome.COMPLETE)
        if result is not None:
            out.append(("parse_stream", normalized(result)))
    return out


@pytest.mark.parametrize("path", CASES)
def test_golden(path: Path) -> None:
    expected_path = path.with_name(path.stem + ".expected.json")
    results = derive(path)
    key = f"{path.parent.name}/{path.stem}"
    if UPDATE and key not in KNOWN_BUGS:
        expected_path.write_text(json.dumps(results[0][1], indent=2) + "\n")
    expected = json.loads(expected_path.read_text())
    for how, got in results:
        assert got == expected, how


def test_the_corpus_is_there() -> None:
    assert len(CASES) >= 10
    kinds = {p.values[0].suffix for p in CASES}
    assert kinds == {".json", ".sse"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_case_has_an_expected_file_and_a_source_line(family: str) -> None:
    directory = PAYLOADS / family
    cases = {p.stem for p in directory.iterdir() if p.suffix in (".json", ".sse") and not p.name.endswith(".expected.json")}
    expected = {p.name.removesuffix(".expected.json") for p in directory.glob("*.expected.json")}
    assert cases == expected
    sources = set(re.findall(r"^- SOURCE ([\w.-]+):", (directory / "SOURCE.md").read_text(), re.MULTILINE))
    assert cases <= sources, cases - sources
    assert KNOWN_BUGS.keys() <= {f"{f}/{c}" for f in FAMILIES for c in _stems(f)}


def _stems(family: str) -> set[str]:
    return {p.name.split(".")[0] for p in (PAYLOADS / family).iterdir() if p.name != "SOURCE.md"}


def test_expected_files_follow_the_conventions() -> None:
    """The expected records themselves keep the conventions (a guard against careless regeneration)."""
    for path in PAYLOADS.glob("*/*.expected.json"):
        exp = json.loads(path.read_text())
        u = exp["usage"]
        assert set(u) == {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "total_tokens"}
        known = u["input_tokens"] is not None and u["output_tokens"] is not None
        assert u["total_tokens"] == (u["input_tokens"] + u["output_tokens"] if known else None), path
        if u["input_tokens"] is not None:
            assert (u["cache_read_tokens"] or 0) + (u["cache_write_tokens"] or 0) <= u["input_tokens"], path
        if u["output_tokens"] is not None:
            assert (u["reasoning_tokens"] or 0) <= u["output_tokens"], path
        for side in ("input", "output"):
            assert (u[f"{side}_tokens"] is None) == (exp["provenance"][side] == "missing"), path
        assert exp["flags"] == sorted(exp["flags"])
