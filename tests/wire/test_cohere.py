"""Cohere: chat v2 (SSE) and v1 (NDJSON), embed, rerank.

The decision under test: input and output are the *billed* units; ``tokens`` (which also counts what
Cohere adds and does not charge) stays in the raw usage, and is used only when no billed units exist.
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
from tokentrail.wire import cohere
from tokentrail.wire._base import ParsedCall, StreamOutcome
from tokentrail.wire.cohere import CHAT_V1, CHAT_V2, EMBED, RERANK, SUFFIXES

from ..strategies import splits

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
PAYLOADS = Path(__file__).parent.parent / "payloads" / "cohere"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def feed_all(parser: Any, pieces: list[bytes], outcome: StreamOutcome = StreamOutcome.COMPLETE) -> ParsedCall:
    for piece in pieces:
        parser.feed(piece)
    return parser.finish(outcome)


USAGE = {
    "billed_units": {"input_tokens": 17, "output_tokens": 239},
    "tokens": {"input_tokens": 83, "output_tokens": 239},
}


def v2_body(usage: Any = USAGE) -> bytes:
    message = {"role": "assistant", "content": [{"type": "text", "text": "LLMs are…"}]}
    return dumps({"id": "c14c80c3", "finish_reason": "COMPLETE", "message": message, "usage": usage})


def v2_stream(usage: Any = USAGE, *, end: bool = True, names: bool = True, ending: bytes = b"\n") -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message-start", "id": "29f14a5a", "delta": {"message": {"role": "assistant"}}},
        {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi 😀"}}}},
        {"type": "content-end", "index": 0},
    ]
    if end:
        events.append({"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": usage}})
    out = b""
    for e in events:
        if names:
            out += b"event: " + e["type"].encode() + ending
        out += b"data: " + dumps(e) + ending + ending
    return out


def v1_stream(meta: Any = None, *, end: bool = True, final_newline: bool = True) -> bytes:
    meta = meta or {
        "api_version": {"version": "1"},
        "billed_units": {"input_tokens": 4, "output_tokens": 5},
        "tokens": {"input_tokens": 70, "output_tokens": 5},
    }
    lines = [
        {"is_finished": False, "event_type": "stream-start", "generation_id": "g1"},
        {"is_finished": False, "event_type": "text-generation", "text": "The 🐧"},
    ]
    if end:
        response = {
            "response_id": "r1",
            "text": "The 🐧",
            "generation_id": "g1",
            "finish_reason": "COMPLETE",
            "meta": meta,
        }
        lines.append(
            {"is_finished": True, "event_type": "stream-end", "response": response, "finish_reason": "COMPLETE"}
        )
    body = b"\n".join(dumps(line) for line in lines)
    return body + b"\n" if final_newline else body


# -- chat v2 ---------------------------------------------------------------------------------------------


def test_v2_billed_units_are_the_usage_and_tokens_stay_raw() -> None:
    result = CHAT_V2.parse(v2_body())
    assert result.usage == Usage(input_tokens=17, output_tokens=239)
    assert (result.provenance, result.flags, result.response_id, result.model) == (
        REPORTED,
        frozenset(),
        "c14c80c3",
        None,
    )
    assert result.raw_usage == USAGE


def test_v2_cached_tokens_are_part_of_input() -> None:
    usage = {
        "billed_units": {"input_tokens": 1480, "output_tokens": 12},
        "tokens": {"input_tokens": 1500, "output_tokens": 12},
        "cached_tokens": 600,
    }
    assert CHAT_V2.parse(v2_body(usage)).usage == Usage(input_tokens=1480, output_tokens=12, cache_read_tokens=600)
    usage["cached_tokens"] = 2000
    assert CHAT_V2.parse(v2_body(usage)).flags == {Flag.PARTS_EXCEED_WHOLE}


def test_v2_tokens_only_when_no_billed_units() -> None:
    result = CHAT_V2.parse(v2_body({"tokens": {"input_tokens": 10, "output_tokens": 2}}))
    assert result.usage == Usage(input_tokens=10, output_tokens=2)
    assert result.provenance == REPORTED


def test_v2_billed_units_with_one_side_missing_does_not_fall_back() -> None:
    # The billed output is unknown; the raw token count of it is not the bill.
    result = CHAT_V2.parse(
        v2_body({"billed_units": {"input_tokens": 10}, "tokens": {"input_tokens": 12, "output_tokens": 2}})
    )
    assert result.usage == Usage(input_tokens=10)
    assert result.provenance == Provenance(input=Source.REPORTED, output=Source.MISSING)


@pytest.mark.parametrize("bad", [-1, "17", 17.5, True, [17]])
def test_v2_invalid_billed_count(bad: Any) -> None:
    result = CHAT_V2.parse(v2_body({"billed_units": {"input_tokens": bad, "output_tokens": 3}}))
    assert result.usage == Usage(output_tokens=3)
    assert result.flags == {Flag.INVALID_VALUE}


@pytest.mark.parametrize("body", [b"", b"<html>", b'{"message":"invalid api token"}', v2_body(None), v2_body("x")])
def test_v2_without_usage(body: bytes) -> None:
    result = CHAT_V2.parse(body)
    assert (result.usage, result.provenance) == (Usage(), MISSING)


def test_v2_stream() -> None:
    result = feed_all(CHAT_V2.stream(), [v2_stream()])
    assert result.usage == Usage(input_tokens=17, output_tokens=239)
    assert (result.provenance, result.flags, result.complete, result.response_id) == (
        REPORTED,
        frozenset(),
        True,
        "29f14a5a",
    )


def test_v2_stream_without_event_lines() -> None:
    assert feed_all(CHAT_V2.stream(), [v2_stream(names=False)]) == feed_all(CHAT_V2.stream(), [v2_stream()])


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_v2_stream_cut_before_message_end(outcome: StreamOutcome) -> None:
    result = feed_all(CHAT_V2.stream(), [v2_stream(end=False)], outcome)
    assert (result.usage, result.provenance, result.flags, result.complete) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
    )
    assert result.response_id == "29f14a5a"


def test_v2_stream_message_end_without_usage_is_complete_and_missing() -> None:
    result = feed_all(CHAT_V2.stream(), [v2_stream(None)])
    assert (result.usage, result.provenance, result.flags, result.complete) == (Usage(), MISSING, frozenset(), True)


def test_v2_stream_malformed_events_do_not_raise() -> None:
    raw = b"event: message-end\ndata: {not json\n\n" + b"data: [DONE]\n\n"
    result = feed_all(CHAT_V2.stream(), [raw])
    assert (result.usage, result.complete) == (Usage(), False)


# -- chat v1 ---------------------------------------------------------------------------------------------


def test_v1_meta() -> None:
    meta = {
        "api_version": {"version": "1"},
        "billed_units": {"input_tokens": 5, "output_tokens": 9},
        "tokens": {"input_tokens": 71, "output_tokens": 9},
    }
    body = dumps({"response_id": "r1", "text": "x", "generation_id": "g1", "finish_reason": "COMPLETE", "meta": meta})
    result = CHAT_V1.parse(body)
    assert result.usage == Usage(input_tokens=5, output_tokens=9)
    assert (result.raw_usage, result.response_id, result.provenance) == (meta, "r1", REPORTED)


def test_v1_stream() -> None:
    result = feed_all(CHAT_V1.stream(), [v1_stream()])
    assert result.usage == Usage(input_tokens=4, output_tokens=5)
    assert (result.provenance, result.flags, result.complete, result.response_id) == (REPORTED, frozenset(), True, "r1")


def test_v1_stream_last_line_without_newline() -> None:
    assert feed_all(CHAT_V1.stream(), [v1_stream(final_newline=False)]) == feed_all(CHAT_V1.stream(), [v1_stream()])


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_v1_stream_cut(outcome: StreamOutcome) -> None:
    result = feed_all(CHAT_V1.stream(), [v1_stream(end=False)], outcome)
    assert (result.usage, result.flags, result.complete) == (Usage(), {Flag.STREAM_INCOMPLETE}, False)


def test_v1_stream_cut_inside_the_last_line() -> None:
    raw = v1_stream()
    result = feed_all(CHAT_V1.stream(), [raw[:-40]], StreamOutcome.BROKEN)
    assert (result.usage, result.complete) == (Usage(), False)


def test_v1_stream_read_whole_by_parse() -> None:
    assert CHAT_V1.parse(v1_stream()) == feed_all(CHAT_V1.stream(), [v1_stream()])


# -- embed and rerank ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_embed(version: str) -> None:
    meta = {"api_version": {"version": version}, "billed_units": {"input_tokens": 20}}
    body = dumps({"id": "e1", "embeddings": {"float": [[0.1, 0.2]]}, "texts": ["a"], "meta": meta})
    result = EMBED.parse(body)
    assert result.usage == Usage(input_tokens=20, output_tokens=0)
    assert (result.provenance, result.raw_usage, result.response_id) == (REPORTED, meta, "e1")


def test_embed_images_are_not_tokens() -> None:
    result = EMBED.parse(dumps({"id": "e1", "embeddings": {}, "meta": {"billed_units": {"images": 2}}}))
    assert result.usage == Usage(output_tokens=0)
    assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)


def test_embed_large_body() -> None:
    row = ",".join(["0.0123456789"] * 1024)
    body = (
        b'{"id":"e1","embeddings":{"float":['
        + ",".join(f"[{row}]" for _ in range(200)).encode()
        + b']},"meta":{"billed_units":{"input_tokens":900}}}'
    )
    assert len(body) > 1_000_000
    assert EMBED.parse(body).usage == Usage(input_tokens=900, output_tokens=0)


def test_rerank_cohere_is_search_units() -> None:
    meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    result = RERANK.parse(dumps({"results": [{"index": 0, "relevance_score": 0.9}], "id": "r1", "meta": meta}))
    assert (result.usage, result.provenance, result.raw_usage, result.flags) == (Usage(), MISSING, meta, frozenset())


@pytest.mark.parametrize(
    "body",
    [
        {"model": "jina-reranker-v2-base-multilingual", "usage": {"total_tokens": 815}, "results": []},
        {"object": "list", "data": [], "model": "rerank-2", "usage": {"total_tokens": 815}},
    ],
)
def test_rerank_token_billed_servers(body: dict[str, Any]) -> None:
    result = RERANK.parse(dumps(body))
    assert result.usage == Usage(input_tokens=815, output_tokens=0)
    assert (result.model, result.raw_usage) == (body["model"], {"total_tokens": 815})


# -- any split, matching ---------------------------------------------------------------------------------

_STREAMS: dict[str, tuple[Any, bytes]] = {
    "v2": (CHAT_V2, v2_stream()),
    "v2-crlf": (CHAT_V2, v2_stream(ending=b"\r\n")),
    "v2-cut": (CHAT_V2, v2_stream(end=False)),
    "v1": (CHAT_V1, v1_stream()),
    "v1-no-final-newline": (CHAT_V1, v1_stream(final_newline=False)),
}


@pytest.mark.parametrize("name", list(_STREAMS))
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw])
    for i in range(1, len(raw)):
        assert feed_all(parser.stream(), [raw[:i], raw[i:]]) == whole, i


@settings(max_examples=40)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw], outcome)
    assert feed_all(parser.stream(), data.draw(splits(raw, allow_empty=True)), outcome) == whole


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/v2/chat", CHAT_V2),
        ("/v1/chat", CHAT_V1),
        ("/v1/embed", EMBED),
        ("/v2/embed", EMBED),
        ("/v1/rerank", RERANK),
        ("/v2/rerank", RERANK),
        ("/compatibility/v1/chat/completions", None),
        ("/v1/embed-jobs", None),
        ("/v1/tokenize", None),
    ],
)
def test_matches(path: str, parser: Any) -> None:
    assert [p for p in cohere.PARSERS if p.matches("POST", path)] == ([parser] if parser else [])
    assert path.endswith(SUFFIXES) == (parser is not None)


def test_parse_request() -> None:
    info = CHAT_V2.parse_request(dumps({"model": "command-a-03-2025", "messages": [], "stream": True}))
    assert (info.model, info.stream) == ("command-a-03-2025", True)
    assert CHAT_V1.parse_request(dumps({"model": "command-r", "message": "hi"})).stream is False


# -- golden corpus ----------------------------------------------------------------------------------------


def normalized(result: ParsedCall) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
    }


_BY_PREFIX: dict[str, Any] = {"chat_v2": CHAT_V2, "chat_v1": CHAT_V1, "embed": EMBED, "rerank": RERANK}


def derive(path: Path) -> list[tuple[str, dict[str, Any]]]:
    parser = next(p for prefix, p in _BY_PREFIX.items() if path.name.startswith(prefix))
    raw = path.read_bytes()
    if path.suffix == ".json":
        return [("parse", normalized(parser.parse(raw)))]
    out = []
    for how, size in (("whole", len(raw)), ("7-byte pieces", 7)):
        out.append((how, normalized(feed_all(parser.stream(), [raw[i : i + size] for i in range(0, len(raw), size)]))))
    return out


GOLDEN = sorted(
    p for p in PAYLOADS.iterdir() if p.suffix in (".json", ".sse", ".ndjson") and not p.name.endswith(".expected.json")
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
    assert len(GOLDEN) >= 10
    stems = {p.name.split(".")[0] for p in GOLDEN}
    assert stems == {p.name.removesuffix(".expected.json") for p in PAYLOADS.glob("*.expected.json")}
    sources = (PAYLOADS / "SOURCE.md").read_text()
    assert all(f"- SOURCE {stem}:" in sources for stem in stems), stems
