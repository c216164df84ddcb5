"""Gemini generateContent / streamGenerateContent and the embedding methods.

Conventions under test (ARCHITECTURE.md §2): input = promptTokenCount (cached included) +
toolUsePromptTokenCount; output = candidatesTokenCount + thoughtsTokenCount, the thoughts being the
reasoning part; the provider's totalTokenCount is checked; cumulative stream usage keeps the last
value, never the sum; a stream is whole once a finished chunk and its usage were seen.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire._base import ParsedCall, StreamOutcome, WholeBody
from tokentrail.wire.gemini import (
    EMBED,
    GENERATE,
    SUFFIXES,
    GenerateStream,
    model_from_path,
    request_from_path,
    usage_from,
)

from ..strategies import splits, usages

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
PARTIAL = Provenance(input=Source.PARTIAL, output=Source.PARTIAL)
MODEL = "gemini-2.5-flash"
PAYLOADS = Path(__file__).parent.parent / "payloads" / "gemini"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def response(
    usage: Any = ..., *, text: str = "Paris.", finish: str | None = "STOP", model: str | None = MODEL, **extra: Any
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    obj: dict[str, Any] = {"candidates": [candidate]}
    if usage is not ...:
        obj["usageMetadata"] = usage
    if model is not None:
        obj["modelVersion"] = model
    obj["responseId"] = "mrvZaPmCF8-qz7IPpdWS2Qk"
    return obj | extra


def meta(
    prompt: int | None = 10,
    candidates: int | None = 5,
    *,
    thoughts: int | None = None,
    tool: int | None = None,
    cached: int | None = None,
    total: Any = ...,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (
        ("promptTokenCount", prompt),
        ("candidatesTokenCount", candidates),
        ("thoughtsTokenCount", thoughts),
        ("toolUsePromptTokenCount", tool),
        ("cachedContentTokenCount", cached),
    ):
        if value is not None:
            out[key] = value
    out["totalTokenCount"] = (
        sum(v for v in (prompt, candidates, thoughts, tool) if v is not None) if total is ... else total
    )
    return out


def parse(usage: Any) -> ParsedCall:
    return GENERATE.parse(dumps(response(usage)))


def sse(*chunks: Any, ending: bytes = b"\r\n") -> bytes:
    return b"".join(b"data: " + (c if isinstance(c, bytes) else dumps(c)) + ending + ending for c in chunks)


def feed_all(pieces: list[bytes], outcome: StreamOutcome = StreamOutcome.COMPLETE) -> ParsedCall:
    stream = GENERATE.stream()
    for piece in pieces:
        stream.feed(piece)
    return stream.finish(outcome)


def chunks(n_text: int = 3, *, thoughts: int = 210) -> list[dict[str, Any]]:
    """A Gemini API stream: cumulative usage on every chunk, finishReason on the last."""
    out = [
        response(meta(9, None if i == 0 else 4 * i, thoughts=thoughts), text=f"part {i} — ü😀", finish=None)
        for i in range(n_text)
    ]
    return [*out, response(meta(9, 4 * n_text, thoughts=thoughts), text="", finish="STOP")]


# -- non-stream usage ------------------------------------------------------------------------------------------


def test_thoughts_are_output_beside_candidates() -> None:
    result = parse(meta(7477, 2060, thoughts=1939))
    assert result.usage == Usage(input_tokens=7477, output_tokens=3999, reasoning_tokens=1939)
    assert result.usage.total_tokens == 11476
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)
    assert (result.model, result.response_id) == (MODEL, "mrvZaPmCF8-qz7IPpdWS2Qk")


def test_tool_use_prompt_is_input_beside_the_prompt() -> None:
    result = parse(meta(151, 1089, thoughts=1120, tool=18329))
    assert result.usage == Usage(input_tokens=18480, output_tokens=2209, reasoning_tokens=1120)
    assert result.usage.total_tokens == 20689
    assert result.flags == frozenset()


def test_cached_content_is_part_of_the_prompt() -> None:
    result = parse(meta(323397, 121, cached=323383))
    assert result.usage == Usage(input_tokens=323397, output_tokens=121, cache_read_tokens=323383)
    assert result.flags == frozenset()


def test_the_raw_usage_is_kept_as_sent() -> None:
    raw = {**meta(10, 5), "trafficType": "ON_DEMAND", "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]}
    assert parse(raw).usage_object() == raw


def test_a_total_that_disagrees_is_flagged_and_kept() -> None:
    raw = meta(10, 120, thoughts=100, total=130)  # thoughts counted inside candidates by the server
    result = parse(raw)
    assert result.usage == Usage(input_tokens=10, output_tokens=220, reasoning_tokens=100)
    assert result.flags == {Flag.TOTAL_MISMATCH}
    assert result.usage_object()["totalTokenCount"] == 130


def test_omitted_zero_counts_read_as_zero_when_the_total_is_there() -> None:
    # proto3 JSON leaves out zeros: a blocked prompt has no candidatesTokenCount.
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": MODEL,
    }
    result = GENERATE.parse(dumps(blocked))
    assert result.usage == Usage(input_tokens=8, output_tokens=0)
    assert (result.provenance, result.flags) == (REPORTED, frozenset())
    assert result.usage_object() == {"promptTokenCount": 8, "totalTokenCount": 8}  # not the filled copy
    # MAX_TOKENS while thinking: every output token is a thought.
    assert parse({"promptTokenCount": 12, "thoughtsTokenCount": 1023, "totalTokenCount": 1035}).usage == Usage(
        input_tokens=12, output_tokens=1023, reasoning_tokens=1023
    )


def test_without_a_total_an_absent_count_is_unknown() -> None:
    result = parse({"promptTokenCount": 8})
    assert result.usage == Usage(input_tokens=8)
    assert result.provenance == Provenance(input=Source.REPORTED, output=Source.MISSING)
    # Optional counts never become 0.
    assert parse(meta(8, 2)).usage == Usage(input_tokens=8, output_tokens=2)


def test_an_invalid_total_does_not_fill_zeros() -> None:
    result = parse({"promptTokenCount": 8, "totalTokenCount": "8"})
    assert result.usage == Usage(input_tokens=8)
    assert result.flags == {Flag.INVALID_VALUE}


BAD = [-1, "5", True, 1.5, None, [3]]


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize(
    ("field", "side"),
    [
        ("promptTokenCount", "input"),
        ("toolUsePromptTokenCount", "input"),
        ("candidatesTokenCount", "output"),
        ("thoughtsTokenCount", "output"),
        ("cachedContentTokenCount", "cache"),
    ],
)
def test_an_invalid_count_is_flagged_and_unknown(field: str, side: str, bad: Any) -> None:
    raw = {**meta(100, 50, thoughts=20, tool=10, cached=40), field: bad}
    result = parse(raw)
    if bad is None:
        return  # null is "not reported": covered below
    assert Flag.INVALID_VALUE in result.flags
    if side == "input":
        assert (result.usage.input_tokens, result.usage.output_tokens) == (None, 70)
    elif side == "output":
        assert (result.usage.input_tokens, result.usage.output_tokens) == (110, None)
    else:
        assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (110, None)
    assert result.raw_usage[field] == bad


def test_null_counts_are_not_reported() -> None:
    result = parse(
        {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": None,
            "cachedContentTokenCount": None,
            "totalTokenCount": 15,
        }
    )
    assert (result.usage, result.flags) == (Usage(input_tokens=10, output_tokens=5), frozenset())


@pytest.mark.parametrize(
    ("raw", "flags"),
    [
        (meta(100, 5, cached=101), {Flag.PARTS_EXCEED_WHOLE}),
        # cached is part of the prompt, not of the tool-use input: 101 > 100 even with 50 tool tokens
        (meta(100, 5, cached=101, tool=50), {Flag.PARTS_EXCEED_WHOLE}),
        (meta(10, 5, thoughts=3), set()),
        (
            {
                **meta(10, 5),
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 6}, {"modality": "IMAGE", "tokenCount": 4}],
            },
            set(),
        ),
        (
            {
                **meta(10, 5),
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 6}, {"modality": "IMAGE", "tokenCount": 5}],
            },
            {Flag.PARTS_EXCEED_WHOLE},
        ),
        (
            {**meta(10, 5), "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 6}]},
            {Flag.PARTS_EXCEED_WHOLE},
        ),
        (
            {**meta(10, 5, cached=4), "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 5}]},
            {Flag.PARTS_EXCEED_WHOLE},
        ),
        ({**meta(10, 5, tool=3), "toolUsePromptTokensDetails": [{"modality": "TEXT"}]}, set()),  # omitted tokenCount: 0
        ({**meta(10, 5), "promptTokensDetails": [{"modality": "TEXT", "tokenCount": -6}]}, {Flag.INVALID_VALUE}),
        ({**meta(10, 5), "promptTokensDetails": [{"modality": "TEXT", "tokenCount": "6"}]}, {Flag.INVALID_VALUE}),
        ({**meta(10, 5), "promptTokensDetails": {"TEXT": 6}}, {Flag.INVALID_VALUE}),
        ({**meta(10, 5), "promptTokensDetails": [6]}, {Flag.INVALID_VALUE}),
    ],
)
def test_parts_and_modality_details(raw: dict[str, Any], flags: set[str]) -> None:
    result = parse(raw)
    assert result.flags == flags
    assert result.usage_object() == raw


@pytest.mark.parametrize("raw", [[1], "usage", 7, True])
def test_usage_metadata_that_is_not_an_object_is_invalid(raw: Any) -> None:
    result = parse(raw)
    assert (result.usage, result.provenance, result.flags) == (Usage(), MISSING, {Flag.INVALID_VALUE})


@pytest.mark.parametrize("raw", [b"", b"<html>502</html>", b'"text"', b"42"])
def test_a_body_that_is_not_a_response_is_unparsed(raw: bytes) -> None:
    assert GENERATE.parse(raw).flags == {Flag.UNPARSED}


def test_a_response_without_usage() -> None:
    result = GENERATE.parse(dumps(response()))
    assert (result.usage, result.provenance, result.flags, result.complete) == (Usage(), MISSING, frozenset(), True)


def test_model_and_id_from_the_top_level_only() -> None:
    call = {
        "functionCall": {
            "name": "set",
            "args": {"modelVersion": "fake", "responseId": "fake", "usageMetadata": {"promptTokenCount": 1}},
        }
    }
    obj = response(meta(10, 5))
    obj["candidates"][0]["content"]["parts"] = [call]
    result = GENERATE.parse(json.dumps(obj, sort_keys=True).encode())
    assert (result.model, result.response_id, result.usage.input_tokens) == (MODEL, "mrvZaPmCF8-qz7IPpdWS2Qk", 10)


@settings(max_examples=150)
@given(usages())
def test_any_conventional_usage_reads_back(u: Usage) -> None:
    """A usage rendered in Gemini's shape (thoughts apart from candidates) parses back to itself."""
    raw: dict[str, Any] = {}
    if u.input_tokens is not None:
        raw["promptTokenCount"] = u.input_tokens
    if u.cache_read_tokens is not None and u.input_tokens is not None:
        raw["cachedContentTokenCount"] = u.cache_read_tokens
    if u.output_tokens is not None:
        raw["candidatesTokenCount"] = u.output_tokens - (u.reasoning_tokens or 0)
        if u.reasoning_tokens is not None:
            raw["thoughtsTokenCount"] = u.reasoning_tokens
    if u.total_tokens is not None:
        raw["totalTokenCount"] = u.total_tokens
    usage, provenance, flags = usage_from(raw)
    expected = Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=raw.get("cachedContentTokenCount"),
        reasoning_tokens=raw.get("thoughtsTokenCount"),
    )
    assert (usage, flags) == (expected, set())
    assert provenance.output is (Source.REPORTED if u.output_tokens is not None else Source.MISSING)


# -- JSON-array streams (no alt=sse), read whole ------------------------------------------------------------


def test_a_json_array_takes_the_last_usage_never_the_sum() -> None:
    body = b"[" + b",\r\n".join(dumps(c) for c in chunks()) + b"]"
    result = GENERATE.parse(body)
    assert result.usage == Usage(input_tokens=9, output_tokens=222, reasoning_tokens=210)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)


def test_a_json_array_is_the_same_as_the_sse_stream() -> None:
    body = b"[" + b",\n".join(dumps(c) for c in chunks()) + b"]"
    assert GENERATE.parse(body) == feed_all([sse(*chunks())])
    cut = b"[" + b",\n".join(dumps(c) for c in chunks()[:2]) + b"]"
    assert GENERATE.parse(cut) == feed_all([sse(*chunks()[:2])])


def test_a_json_array_without_a_finish_is_incomplete() -> None:
    result = GENERATE.parse(b"[" + b",".join(dumps(c) for c in chunks()[:2]) + b"]")
    assert (result.provenance, result.flags, result.complete) == (PARTIAL, {Flag.STREAM_INCOMPLETE}, False)
    assert GENERATE.parse(b"[]").flags == {Flag.STREAM_INCOMPLETE}
    assert GENERATE.parse(b"[1, null, []]").flags == {Flag.STREAM_INCOMPLETE}


def test_a_json_array_read_through_whole_body() -> None:
    body = b"[" + b",\r\n".join(dumps(c) for c in chunks()) + b"]"
    stream = WholeBody(GENERATE)
    for i in range(0, len(body), 50):
        stream.feed(body[i : i + 50])
    assert stream.finish(StreamOutcome.COMPLETE) == GENERATE.parse(body)


# -- SSE streams (alt=sse) ---------------------------------------------------------------------------------------


def test_sse_stream_keeps_the_last_cumulative_usage() -> None:
    result = feed_all([sse(*chunks())])
    assert result.usage == Usage(input_tokens=9, output_tokens=222, reasoning_tokens=210)
    assert result.usage.total_tokens == 231
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)
    assert (result.model, result.response_id) == (MODEL, "mrvZaPmCF8-qz7IPpdWS2Qk")


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_sse_stream_cut_before_the_finished_chunk_is_partial(outcome: StreamOutcome) -> None:
    result = feed_all([sse(*chunks()[:3])], outcome)
    assert result.usage == Usage(input_tokens=9, output_tokens=218, reasoning_tokens=210)
    assert result.provenance == PARTIAL
    assert result.flags == {Flag.STREAM_INCOMPLETE}
    assert not result.complete


def test_sse_stream_closed_after_the_finished_chunk_is_complete() -> None:
    result = feed_all([sse(*chunks())], StreamOutcome.CLOSED_EARLY)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)


def test_vertex_usage_after_the_finish_chunk() -> None:
    finish_only = response(text="", finish="STOP")
    usage_only = {"usageMetadata": meta(5, 9), "modelVersion": "gemini-2.0-flash-001", "responseId": "v"}
    text = response(text="Why", finish=None, model="gemini-2.0-flash-001")
    result = feed_all([sse(text, finish_only, usage_only)])
    assert (result.usage, result.provenance, result.complete) == (
        Usage(input_tokens=5, output_tokens=9),
        REPORTED,
        True,
    )
    assert result.model == "gemini-2.0-flash-001"
    cut = feed_all([sse(text, finish_only)], StreamOutcome.BROKEN)
    assert (cut.usage, cut.provenance, cut.flags, cut.complete) == (Usage(), MISSING, {Flag.STREAM_INCOMPLETE}, False)
    # Ended cleanly with no usage at all (a server or proxy that sends none): whole, usage unknown.
    ended = feed_all([sse(text, finish_only)])
    assert (ended.usage, ended.provenance, ended.flags, ended.complete) == (Usage(), MISSING, frozenset(), True)


def test_usage_before_the_finish_is_not_the_final_one() -> None:
    # The finish chunk carries no usage here: the earlier cumulative usage is only a floor.
    result = feed_all([sse(response(meta(9, 4), finish=None), response(text="", finish="STOP"))])
    assert (result.usage.output_tokens, result.provenance, result.complete) == (4, PARTIAL, False)


def test_a_blocked_prompt_ends_the_stream() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
        "modelVersion": MODEL,
    }
    result = feed_all([sse(blocked)])
    assert (result.usage, result.provenance, result.complete) == (
        Usage(input_tokens=7, output_tokens=0),
        REPORTED,
        True,
    )


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_an_error_chunk_mid_stream(outcome: StreamOutcome) -> None:
    error = {
        "error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}
    }
    result = feed_all([sse(*chunks()[:2], error)], outcome)
    assert (result.usage.output_tokens, result.provenance, result.flags, result.complete) == (
        214,
        PARTIAL,
        {Flag.STREAM_INCOMPLETE},
        False,
    )


def test_keys_named_error_or_finish_reason_inside_content_are_not_events() -> None:
    call = {"functionCall": {"name": "report", "args": {"error": "none", "finishReason": "STOP"}}}
    odd = response(meta(9, 2), finish=None)
    odd["candidates"][0]["content"]["parts"] = [call]
    text = response(meta(9, 3), finish=None, text='the "error": and "finishReason": "STOP" keys')
    result = feed_all([sse(odd, text, *chunks())])
    assert (result.provenance, result.complete) == (REPORTED, True)
    assert feed_all([sse(odd, text)]).complete is False


def test_a_null_or_unspecified_finish_reason_does_not_finish() -> None:
    null = response(meta(9, 4), finish=None)
    null["candidates"][0]["finishReason"] = None
    empty = response(meta(9, 5), finish="")
    assert feed_all([sse(null, empty)]).complete is False


def test_model_from_the_first_chunk_when_the_last_names_none() -> None:
    first = response(meta(9, 1), finish=None, model="gemini-2.5-pro")
    last = response(meta(9, 2), model=None)
    del last["responseId"]
    result = feed_all([sse(first, last)])
    assert (result.model, result.response_id) == ("gemini-2.5-pro", "mrvZaPmCF8-qz7IPpdWS2Qk")


def test_malformed_chunks_do_not_raise() -> None:
    raw = sse(b"{not json", b"[1, 2]", b'"error"', b'{"error": 1', response(meta(9, -4)))
    result = feed_all([raw])
    assert result.usage == Usage(input_tokens=9)
    assert Flag.INVALID_VALUE in result.flags
    assert feed_all([b"data: [DONE]\n\n"]).flags == {Flag.STREAM_INCOMPLETE}


def test_nothing_at_all() -> None:
    result = feed_all([])
    assert (result.usage, result.provenance, result.flags, result.complete, result.model) == (
        Usage(),
        MISSING,
        {Flag.STREAM_INCOMPLETE},
        False,
        None,
    )


def test_event_is_reusable_without_sse() -> None:
    parser = GenerateStream()
    for chunk in chunks():
        parser.event(dumps(chunk))
    assert parser.finish(StreamOutcome.COMPLETE) == feed_all([sse(*chunks())])


# -- any split, same record ---------------------------------------------------------------------------------

_STREAMS = {
    "crlf": sse(*chunks()),
    "lf": sse(*chunks(), ending=b"\n"),
    "cr": sse(*chunks(), ending=b"\r"),
    "cut": sse(*chunks()[:2]),
    "vertex": (PAYLOADS / "stream_vertex.sse").read_bytes(),
    "error": (PAYLOADS / "stream_sse_error.sse").read_bytes(),
}


@pytest.mark.parametrize("name", ["crlf", "cr", "cut"])
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    raw = _STREAMS[name]
    whole = feed_all([raw])
    for i in range(1, len(raw)):
        assert feed_all([raw[:i], raw[i:]]) == whole, i


@settings(max_examples=60)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    raw = _STREAMS[name]
    assert feed_all(data.draw(splits(raw, allow_empty=True)), outcome) == feed_all([raw], outcome)


# -- embeddings ------------------------------------------------------------------------------------------------


def test_embed_without_usage_is_missing_not_zero() -> None:
    result = EMBED.parse(dumps({"embedding": {"values": [0.013, -0.008, 0.021]}}))
    assert (result.usage, result.provenance, result.flags) == (Usage(), MISSING, frozenset())


def test_embed_with_usage_metadata_has_zero_output() -> None:
    raw = {"promptTokenCount": 17, "promptTokenDetails": [{"modality": "TEXT", "tokenCount": 17}]}
    result = EMBED.parse(dumps({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}], "usageMetadata": raw}))
    assert (result.usage, result.provenance, result.flags) == (
        Usage(input_tokens=17, output_tokens=0),
        REPORTED,
        frozenset(),
    )
    assert result.raw_usage == raw


def test_vertex_embed_content_total_is_checked() -> None:
    ok = EMBED.parse(
        dumps(
            {
                "embedding": {"values": [0.1]},
                "usageMetadata": {"promptTokenCount": 6, "totalTokenCount": 6},
                "truncated": False,
            }
        )
    )
    assert (ok.usage, ok.flags) == (Usage(input_tokens=6, output_tokens=0), frozenset())
    bad = EMBED.parse(
        dumps({"embedding": {"values": [0.1]}, "usageMetadata": {"promptTokenCount": 6, "totalTokenCount": 9}})
    )
    assert bad.flags == {Flag.TOTAL_MISMATCH}
    assert EMBED.parse(dumps({"embedding": {}, "usageMetadata": {"promptTokenCount": -6}})).flags == {
        Flag.INVALID_VALUE
    }
    assert EMBED.parse(dumps({"embedding": {}, "usageMetadata": [6]})).flags == {Flag.INVALID_VALUE}


def predict(*counts: Any, key: str = "token_count") -> bytes:
    predictions = [
        {"embeddings": {"statistics": {"truncated": False, key: c}, "values": [0.01 * i for i in range(8)]}}
        for c in counts
    ]
    return dumps({"predictions": predictions, "metadata": {"billableCharacterCount": 62}})


def test_vertex_predict_sums_the_token_counts() -> None:
    result = EMBED.parse(predict(6, 11, 0))
    assert (result.usage, result.provenance, result.flags) == (
        Usage(input_tokens=17, output_tokens=0),
        REPORTED,
        frozenset(),
    )
    assert EMBED.parse(predict(6, 11, key="tokenCount")).usage.input_tokens == 17
    assert EMBED.parse(json.dumps(json.loads(predict(3, 4)), indent=2).encode()).usage.input_tokens == 7


def test_vertex_predict_with_a_count_missing_or_bad() -> None:
    missing = json.loads(predict(6, 11))
    del missing["predictions"][1]["embeddings"]["statistics"]
    assert EMBED.parse(dumps(missing)).usage == Usage()
    for bad in (-1, "6", 1.5, True, None):
        result = EMBED.parse(predict(6, bad))
        assert (result.usage, result.flags) == (Usage(), {Flag.INVALID_VALUE}), bad
    # multimodalembedding@001 predictions carry no token statistics.
    assert (
        EMBED.parse(dumps({"predictions": [{"textEmbedding": [0.1], "imageEmbedding": [0.2]}]})).provenance == MISSING
    )


def test_a_large_predict_body_is_scanned_quickly() -> None:
    import time

    row = [round(0.001 * (i % 997) - 0.5, 9) for i in range(768)]
    body = dumps(
        {
            "predictions": [
                {"embeddings": {"statistics": {"truncated": False, "token_count": 5}, "values": row}}
                for _ in range(2000)
            ]
        }
    )
    assert len(body) > 10_000_000
    start = time.perf_counter()
    result = EMBED.parse(body)
    took = time.perf_counter() - start
    assert result.usage.input_tokens == 10_000
    start = time.perf_counter()
    json.loads(body)
    assert took < (time.perf_counter() - start) / 2, took


def test_embed_read_as_a_stream_is_read_whole() -> None:
    body = predict(6, 11)
    stream = EMBED.stream()
    stream.feed(body[:10])
    stream.feed(body[10:])
    assert stream.finish(StreamOutcome.COMPLETE) == EMBED.parse(body)


# -- paths -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "model", "stream"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-flash", False),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini-2.5-flash", True),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini-2.5-flash", True),
        (
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent",
            "gemini-2.0-flash-001",
            True,
        ),
        (
            "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-3-pro-preview:generateContent",
            "gemini-3-pro-preview",
            False,
        ),
        ("/v1beta/tunedModels/my-tuned-model-1:generateContent", "tunedModels/my-tuned-model-1", False),
        ("/v1/projects/p/locations/us-central1/endpoints/1234567890:generateContent", None, False),
        ("/v1beta/models/text-embedding-004:embedContent", "text-embedding-004", False),
        ("/v1beta/models/gemini-embedding-001:batchEmbedContents", "gemini-embedding-001", False),
        (
            "/v1/projects/p/locations/us-central1/publishers/google/models/text-embedding-005:predict",
            "text-embedding-005",
            False,
        ),
        ("/v1beta/models/:generateContent", None, False),
        ("/v1beta/models/gemini-2.5-flash", None, False),
        ("", None, False),
    ],
)
def test_model_and_stream_from_the_path(path: str, model: str | None, stream: bool) -> None:
    assert model_from_path(path) == model
    assert (request_from_path(path).model, request_from_path(path).stream) == (model, stream)


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", GENERATE),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", GENERATE),
        ("/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent", GENERATE),
        ("/v1beta/models/text-embedding-004:embedContent", EMBED),
        ("/v1beta/models/gemini-embedding-001:batchEmbedContents", EMBED),
        ("/v1/projects/p/locations/l/publishers/google/models/text-embedding-005:embedContent", EMBED),
        ("/v1/projects/p/locations/l/publishers/google/models/text-multilingual-embedding-002:predict", EMBED),
        ("/v1/projects/p/locations/l/publishers/google/models/imagen-3.0-generate-002:predict", None),
        ("/v1/projects/p/locations/l/endpoints/123:predict", None),
        ("/v1beta/models/gemini-2.5-flash:countTokens", None),
        ("/v1/projects/p/locations/l/publishers/google/models/gemini-2.0-flash-001:computeTokens", None),
        ("/v1beta/models/gemini-2.5-flash", None),
        ("/v1beta/cachedContents", None),
        ("/v1/messages", None),
    ],
)
def test_matches(path: str, parser: object) -> None:
    owners = [p for p in (GENERATE, EMBED) if p.matches("POST", path)]
    assert owners == ([parser] if parser is not None else [])
    if parser is not None:
        assert path.endswith(SUFFIXES)


def test_api_names_and_requests() -> None:
    assert (GENERATE.api, EMBED.api) == ("gemini.generate", "gemini.embed")
    # The request body names neither model nor stream; the path does (request_from_path).
    assert GENERATE.parse_request(dumps({"contents": [{"parts": [{"text": "hi"}]}], "model": "x"})).model is None
    assert EMBED.parse_request(b"{}").model is None


# -- golden corpus ------------------------------------------------------------------------------------------


def normalized(result: ParsedCall) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": result.usage.as_dict(),
        "provenance": {"input": result.provenance.input.value, "output": result.provenance.output.value},
        "flags": sorted(result.flags),
    }


CASES = sorted(p for p in PAYLOADS.iterdir() if p.suffix in (".json", ".sse") and not p.name.endswith(".expected.json"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_golden(path: Path) -> None:
    expected = json.loads(path.with_name(path.stem + ".expected.json").read_text())
    parser = EMBED if path.stem.startswith("embed_") else GENERATE
    raw = path.read_bytes()
    if path.suffix == ".json":
        assert normalized(parser.parse(raw)) == expected
        return
    # A "_cut" recording is a stream whose connection broke where the file ends.
    outcome = StreamOutcome.BROKEN if path.stem.endswith("_cut") else StreamOutcome.COMPLETE
    for size in (len(raw) or 1, 7, 1):
        stream = parser.stream()
        for i in range(0, len(raw), size):
            stream.feed(raw[i : i + size])
        assert normalized(stream.finish(outcome)) == expected, size


def test_every_case_has_a_source_line() -> None:
    sources = set(re.findall(r"^- SOURCE ([\w.-]+):", (PAYLOADS / "SOURCE.md").read_text(), re.MULTILINE))
    assert {p.stem for p in CASES} <= sources
    assert {p.stem for p in CASES} == {p.name.removesuffix(".expected.json") for p in PAYLOADS.glob("*.expected.json")}
    assert {p.suffix for p in CASES} == {".json", ".sse"}


def test_an_sse_body_read_whole_parses_like_the_stream() -> None:
    # A client that asked for alt=sse but read the body in one go hands the events to parse().
    assert GENERATE.parse(sse(*chunks())) == feed_all([sse(*chunks())])
    assert GENERATE.parse(sse(*chunks()).rstrip()) == feed_all([sse(*chunks())])
    assert GENERATE.parse(sse(*chunks()[:2])).complete is False
