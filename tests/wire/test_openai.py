"""The OpenAI-shaped families: Chat Completions, legacy Completions, Responses, Embeddings.

Conventions under test (ARCHITECTURE.md §2): input includes cached input, output includes
reasoning, unknown is None, malformed counts are flagged and kept raw, cumulative stream usage keeps
the last value, and a stream cut short says so.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Source, Usage
from tokentrail.wire import PARSERS, detect
from tokentrail.wire._base import ParsedCall, StreamOutcome, WholeBody, json_value
from tokentrail.wire.openai_chat import CHAT, COMPLETIONS, EMBEDDINGS, ChatStream, parse_stream
from tokentrail.wire.openai_responses import RESPONSES, ResponsesStream

from ..strategies import splits, usages

REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()
PARTIAL = Provenance(input=Source.PARTIAL, output=Source.PARTIAL)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def chat_body(usage: Any, *, model: str = "gpt-4o-2024-08-06", content: str = "Hello!") -> bytes:
    return dumps(
        {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_fc9f1d7035",
        }
    )


def responses_body(usage: Any, *, model: str = "gpt-4.1-2025-04-14") -> bytes:
    return dumps(
        {
            "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
            "object": "response",
            "created_at": 1741476542,
            "status": "completed",
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hi.", "annotations": []}],
                }
            ],
            "usage": usage,
            "user": None,
            "metadata": {},
        }
    )


def chat_usage(prompt: Any = 19, completion: Any = 10, total: Any = ..., cached: Any = 0, reasoning: Any = 0) -> dict[str, Any]:
    if total is ...:
        total = prompt + completion
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def feed_all(parser: ChatStream | ResponsesStream | WholeBody, pieces: list[bytes], outcome: StreamOutcome) -> ParsedCall:
    for piece in pieces:
        parser.feed(piece)
    return parser.finish(outcome)


def sse(*objects: Any, done: bool = True, ending: bytes = b"\n") -> bytes:
    """``data:`` events for each object (dicts as JSON), then ``[DONE]``."""
    out = b""
    for obj in objects:
        out += b"data: " + (obj if isinstance(obj, bytes) else dumps(obj)) + ending + ending
    if done:
        out += b"data: [DONE]" + ending + ending
    return out


def named(*events: tuple[str, Any], ending: bytes = b"\n") -> bytes:
    return b"".join(b"event: " + n.encode() + ending + b"data: " + dumps(o) + ending + ending for n, o in events)


# -- usage conventions, non-stream ---------------------------------------------------------------


def test_chat_cached_is_part_of_input_and_reasoning_part_of_output() -> None:
    result = CHAT.parse(chat_body(chat_usage(prompt=2006, completion=300, cached=1920, reasoning=192)))
    assert result.usage == Usage(input_tokens=2006, output_tokens=300, cache_read_tokens=1920, reasoning_tokens=192)
    assert result.usage.total_tokens == 2306
    assert result.provenance == REPORTED
    assert result.flags == frozenset()
    assert result.model == "gpt-4o-2024-08-06"


def test_chat_without_details() -> None:
    result = CHAT.parse(chat_body({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}))
    # Details that were not reported are unknown, not 0.
    assert result.usage == Usage(input_tokens=5, output_tokens=7)


def test_chat_keeps_the_raw_usage() -> None:
    raw = {**chat_usage(), "cost": 0.00042, "is_byok": False}
    assert CHAT.parse(chat_body(raw)).usage_object() == raw


def test_legacy_completions() -> None:
    body = dumps(
        {
            "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
            "object": "text_completion",
            "created": 1589478378,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "\n\nThis is a test", "index": 0, "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    )
    result = COMPLETIONS.parse(body)
    assert result.usage == Usage(input_tokens=5, output_tokens=7)
    assert (result.provenance, result.flags, result.model) == (REPORTED, frozenset(), "gpt-3.5-turbo-instruct")


def test_responses_conventions() -> None:
    usage = {
        "input_tokens": 1500,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 400,
        "output_tokens_details": {"reasoning_tokens": 256},
        "total_tokens": 1900,
    }
    result = RESPONSES.parse(responses_body(usage))
    assert result.usage == Usage(input_tokens=1500, output_tokens=400, cache_read_tokens=1024, reasoning_tokens=256)
    assert (result.provenance, result.flags, result.model) == (REPORTED, frozenset(), "gpt-4.1-2025-04-14")


def test_embeddings_output_is_a_reported_zero() -> None:
    body = dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292, -0.0028842222], "index": 0}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    result = EMBEDDINGS.parse(body)
    assert result.usage == Usage(input_tokens=8, output_tokens=0)
    assert result.usage.total_tokens == 8
    assert (result.provenance, result.flags, result.model) == (REPORTED, frozenset(), "text-embedding-3-small")
    # The raw usage is the provider's, not the one with the 0 filled in.
    assert result.raw_usage == {"prompt_tokens": 8, "total_tokens": 8}


def test_embeddings_read_as_a_stream_is_the_same_as_whole() -> None:
    body = dumps({"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    stream = EMBEDDINGS.stream()
    assert feed_all(stream, [body[:10], body[10:]], StreamOutcome.COMPLETE) == EMBEDDINGS.parse(body)
    cut = feed_all(EMBEDDINGS.stream(), [body[:10]], StreamOutcome.BROKEN)
    assert cut.usage == Usage()
    assert cut.flags == {Flag.STREAM_INCOMPLETE}
    assert not cut.complete


@settings(max_examples=150)
@given(usages())
def test_chat_and_responses_read_back_any_conventional_usage(u: Usage) -> None:
    """A usage rendered in each family's shape parses back to itself (the family's own fields)."""

    def put(target: dict[str, Any], path: str, value: int | None) -> None:
        if value is None:
            return
        *parents, leaf = path.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value

    expected = Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        reasoning_tokens=u.reasoning_tokens,  # neither family reports cache writes
    )
    provenance = Provenance(
        input=Source.REPORTED if u.input_tokens is not None else Source.MISSING,
        output=Source.REPORTED if u.output_tokens is not None else Source.MISSING,
    )
    for parser, names in (
        (CHAT, ("prompt_tokens", "completion_tokens", "prompt_tokens_details.cached_tokens", "completion_tokens_details.reasoning_tokens")),
        (RESPONSES, ("input_tokens", "output_tokens", "input_tokens_details.cached_tokens", "output_tokens_details.reasoning_tokens")),
    ):
        raw: dict[str, Any] = {}
        for path, value in zip(names, (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.reasoning_tokens), strict=True):
            put(raw, path, value)
        put(raw, "total_tokens", u.total_tokens)
        body = chat_body(raw) if parser is CHAT else responses_body(raw)
        result = parser.parse(body)
        assert result.usage == expected
        assert result.provenance == provenance
        assert result.flags == frozenset()
        assert result.usage_object() == raw


# -- malformed usage -------------------------------------------------------------------------------


@pytest.mark.parametrize("usage", [None, "null-ish", 12, [1, 2]])
def test_usage_that_is_not_an_object(usage: Any) -> None:
    result = CHAT.parse(chat_body(usage))
    assert result.usage == Usage()
    assert result.provenance == MISSING
    assert result.raw_usage == usage
    assert result.flags == (frozenset() if usage is None else {Flag.INVALID_VALUE})


def test_no_usage_key_at_all() -> None:
    body = dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": []})
    result = CHAT.parse(body)
    assert (result.usage, result.provenance, result.flags, result.model) == (Usage(), MISSING, frozenset(), "m")


def test_a_body_that_is_not_json_does_not_raise() -> None:
    for body in (b"", b"<html>502 Bad Gateway</html>", b'{"usage": {"prompt_tokens": 1', b"\xff\xfe"):
        for parser in (CHAT, RESPONSES, EMBEDDINGS):
            assert parser.parse(body).usage == Usage()


_BAD = [-1, "12", 12.0, 12.5, True, False, {"n": 1}, [12]]
_CHAT_FIELDS = {
    "prompt_tokens": "input_tokens",
    "completion_tokens": "output_tokens",
    "prompt_tokens_details.cached_tokens": "cache_read_tokens",
    "completion_tokens_details.reasoning_tokens": "reasoning_tokens",
}


@pytest.mark.parametrize("bad", _BAD, ids=repr)
@pytest.mark.parametrize("path", list(_CHAT_FIELDS))
def test_an_invalid_count_is_flagged_set_to_none_and_kept_raw(path: str, bad: Any) -> None:
    raw = chat_usage(prompt=100, completion=20, cached=10, reasoning=5)
    node = raw
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = bad
    result = CHAT.parse(chat_body(raw))
    assert Flag.INVALID_VALUE in result.flags
    assert getattr(result.usage, _CHAT_FIELDS[path]) is None
    assert result.raw_usage == raw
    # The other counts are still read.
    good = {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 10, "reasoning_tokens": 5}
    for field, value in good.items():
        if field != _CHAT_FIELDS[path]:
            assert getattr(result.usage, field) == value
    if path == "prompt_tokens":
        assert result.provenance == Provenance(input=Source.MISSING, output=Source.REPORTED)
    if path == "completion_tokens":
        assert result.provenance == Provenance(input=Source.REPORTED, output=Source.MISSING)


@pytest.mark.parametrize("bad", _BAD, ids=repr)
def test_an_invalid_total_is_flagged_and_the_counts_stand(bad: Any) -> None:
    result = CHAT.parse(chat_body(chat_usage(prompt=100, completion=20, total=bad)))
    assert Flag.INVALID_VALUE in result.flags
    assert Flag.TOTAL_MISMATCH not in result.flags
    assert result.usage.total_tokens == 120


@pytest.mark.parametrize("bad", [-3, "8", 8.0, True])
def test_invalid_embeddings_count(bad: Any) -> None:
    body = dumps({"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": bad, "total_tokens": 8}})
    result = EMBEDDINGS.parse(body)
    assert Flag.INVALID_VALUE in result.flags
    assert result.usage.input_tokens is None
    assert result.provenance.input is Source.MISSING


def test_cached_greater_than_prompt_is_flagged() -> None:
    result = CHAT.parse(chat_body(chat_usage(prompt=100, completion=20, cached=150)))
    assert result.flags == {Flag.PARTS_EXCEED_WHOLE}
    # Kept as reported: the flag says which record to distrust.
    assert (result.usage.input_tokens, result.usage.cache_read_tokens) == (100, 150)


def test_reasoning_greater_than_completion_is_flagged() -> None:
    result = RESPONSES.parse(
        responses_body({"input_tokens": 5, "output_tokens": 10, "output_tokens_details": {"reasoning_tokens": 11}, "total_tokens": 15})
    )
    assert result.flags == {Flag.PARTS_EXCEED_WHOLE}


def test_provider_total_that_disagrees_is_flagged_and_kept_raw() -> None:
    raw = chat_usage(prompt=100, completion=20, total=125)
    result = CHAT.parse(chat_body(raw))
    assert result.flags == {Flag.TOTAL_MISMATCH}
    assert result.usage.total_tokens == 120  # input + output, by definition
    assert result.raw_usage["total_tokens"] == 125


def test_total_alone_is_not_checked_when_a_side_is_unknown() -> None:
    result = CHAT.parse(chat_body({"prompt_tokens": 100, "total_tokens": 125}))
    assert result.flags == frozenset()
    assert result.usage == Usage(input_tokens=100)


# -- requests -------------------------------------------------------------------------------------


def test_parse_request_reads_model_and_stream() -> None:
    body = dumps({"messages": [{"role": "user", "content": 'say "model": "x"'}], "model": "gpt-4o", "stream": True})
    info = CHAT.parse_request(body)
    assert (info.model, info.stream) == ("gpt-4o", True)
    assert RESPONSES.parse_request(dumps({"model": "o3", "input": "hi"})).model == "o3"
    assert (EMBEDDINGS.parse_request(b"").model, EMBEDDINGS.parse_request(b"").stream) == (None, False)
    assert CHAT.parse_request(b"not json").model is None


def test_parse_request_ignores_schema_properties_named_model_and_stream() -> None:
    schema = {"type": "object", "properties": {"make": {"type": "string"}, "model": {"type": "string"}, "stream": {"type": "boolean"}}}
    body = dumps(
        {
            "messages": [{"role": "user", "content": "Which car?"}],
            "model": "gpt-4o-2024-08-06",
            "response_format": {"type": "json_schema", "json_schema": {"name": "car", "schema": schema}},
            "stream": True,
            "stream_options": {"include_usage": True},
            "tools": [{"type": "function", "function": {"name": "find_car", "parameters": schema}}],
        }
    )
    info = CHAT.parse_request(body)
    assert (info.model, info.stream) == ("gpt-4o-2024-08-06", True)


# -- json_value -----------------------------------------------------------------------------------


def test_json_value_ignores_the_key_inside_string_content() -> None:
    content = 'the "usage": {"prompt_tokens": 999999, "completion_tokens": 1} key, and "model": "fake"'
    body = chat_body(chat_usage(prompt=7, completion=3), content=content)
    assert b'\\"usage\\": {' in body
    assert json_value(body, "usage")["prompt_tokens"] == 7
    assert json_value(body, "model") == "gpt-4o-2024-08-06"
    result = CHAT.parse(body)
    assert result.usage.input_tokens == 7
    assert result.model == "gpt-4o-2024-08-06"


def test_json_value_with_pretty_printed_body() -> None:
    body = json.dumps(json.loads(chat_body(chat_usage(prompt=7, completion=3))), indent=2).encode()
    assert CHAT.parse(body).usage == Usage(input_tokens=7, output_tokens=3, cache_read_tokens=0, reasoning_tokens=0)
    assert json_value(b'{"usage" \n :\n {"a": 1}}', "usage") == {"a": 1}


def test_json_value_missing_key_and_broken_value() -> None:
    assert json_value(b'{"a": 1}', "usage") is None
    assert json_value(b'{"usage": {"a": ', "usage") is None
    assert json_value(b'{"usage"}', "usage") is None


def test_response_id_is_the_top_level_id() -> None:
    # Not the id of the last output item (msg_…) nor of a tool call.
    assert RESPONSES.parse(responses_body({"input_tokens": 1, "output_tokens": 1})).response_id == (
        "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
    )
    tool_call = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [{"id": "call_abc", "type": "function"}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    assert CHAT.parse(dumps(tool_call)).response_id == "chatcmpl-1"


def test_responses_model_with_an_echoed_schema_property_named_model() -> None:
    schema = {"type": "object", "properties": {"make": {"type": "string"}, "model": {"type": "string"}}}
    obj = json.loads(responses_body({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}))
    usage = obj.pop("usage")
    obj["tools"] = [{"type": "function", "name": "find_car", "parameters": schema, "strict": True}]
    obj["text"] = {"format": {"type": "json_schema", "name": "car", "schema": schema, "strict": True}}
    obj["usage"] = usage
    result = RESPONSES.parse(dumps(obj))
    assert result.usage.total_tokens == 7
    assert result.model == "gpt-4.1-2025-04-14"


def test_response_id_with_azure_key_order_and_tool_calls() -> None:
    body = dumps(
        {
            "choices": [
                {
                    "finish_reason": "tool_calls",
                    "index": 0,
                    "message": {
                        "content": None,
                        "role": "assistant",
                        "tool_calls": [{"function": {"arguments": "{}", "name": "now"}, "id": "call_7ZbHsm", "type": "function"}],
                    },
                }
            ],
            "created": 1724460700,
            "id": "chatcmpl-A00TAHidgn8Uk0U2lgI8y9vs6DrjH",
            "model": "gpt-4o-2024-05-13",
            "object": "chat.completion",
            "prompt_filter_results": [],
            "usage": {"completion_tokens": 12, "prompt_tokens": 38, "total_tokens": 50},
        }
    )
    result = CHAT.parse(body)
    assert (result.model, result.usage.total_tokens) == ("gpt-4o-2024-05-13", 50)
    assert result.response_id == "chatcmpl-A00TAHidgn8Uk0U2lgI8y9vs6DrjH"


def _embeddings_body(model_first: bool) -> bytes:
    rng = random.Random(7)
    row = b",".join(f"{rng.uniform(-0.1, 0.1):.10f}".encode() for _ in range(1536))
    data = b",".join(b'{"object":"embedding","index":%d,"embedding":[%s]}' % (i, row) for i in range(1000))
    usage = b'"usage":{"prompt_tokens":8000,"total_tokens":8000}'
    if model_first:  # vLLM's order: id, object, created, model, data, usage
        return b'{"id":"embd-1","object":"list","created":1,"model":"intfloat/e5-large","data":[' + data + b"]," + usage + b"}"
    return b'{"object":"list","data":[' + data + b'],"model":"text-embedding-3-small",' + usage + b"}"  # OpenAI's


def _best_of(n: int, fn: Any) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.fixture(scope="module")
def full_parse_seconds() -> float:
    """What a full ``json.loads`` of the 1,000 × 1,536 body costs on this machine, the yardstick."""
    body = _embeddings_body(model_first=False)
    return _best_of(1, lambda: json.loads(body))


@pytest.mark.parametrize("model_first", [False, True], ids=["openai-order", "vllm-order"])
def test_large_embeddings_body_is_read_without_parsing_it(model_first: bool, full_parse_seconds: float) -> None:
    body = _embeddings_body(model_first=model_first)
    assert len(body) > 15_000_000
    result = EMBEDDINGS.parse(body)
    assert result.usage == Usage(input_tokens=8000, output_tokens=0)
    assert result.model == ("intfloat/e5-large" if model_first else "text-embedding-3-small")
    took = _best_of(3, lambda: EMBEDDINGS.parse(body))
    if model_first:
        # "model" near the start: found by scanning the whole body backwards, still far below a parse.
        assert took < full_parse_seconds / 5, (took, full_parse_seconds)
    else:
        assert took < 0.05, took
        assert took < full_parse_seconds / 20, (took, full_parse_seconds)


# -- chat streams -------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, *, finish: str | None = None, usage: Any = ..., model: str = "gpt-4o-mini-2024-07-18") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": model,
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not ...:
        obj["usage"] = usage
    return obj


def chat_stream_with_usage(*, ending: bytes = b"\n", done: bool = True) -> bytes:
    return sse(
        chunk({"role": "assistant", "content": ""}, usage=None),
        chunk({"content": "Hel"}, usage=None),
        chunk({"content": "lo — ünïcödé 😀"}, usage=None),
        chunk({}, finish="stop", usage=None),
        chunk(None, usage=chat_usage(prompt=12, completion=5)),
        done=done,
        ending=ending,
    )


def chat_stream_without_usage() -> bytes:
    return sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({}, finish="stop"))


def vllm_stream(*, done: bool = True, upto: int | None = None) -> bytes:
    def u(n: int) -> dict[str, Any]:
        return {"prompt_tokens": 10, "total_tokens": 10 + n, "completion_tokens": n}

    chunks = [
        chunk({"role": "assistant", "content": ""}, usage=u(0), model="meta-llama/Llama-3.1-8B-Instruct"),
        chunk({"content": "One"}, usage=u(1), model="meta-llama/Llama-3.1-8B-Instruct"),
        chunk({"content": " two"}, usage=u(2), model="meta-llama/Llama-3.1-8B-Instruct"),
        chunk({"content": " three"}, finish="length", usage=u(3), model="meta-llama/Llama-3.1-8B-Instruct"),
        chunk(None, usage=u(3), model="meta-llama/Llama-3.1-8B-Instruct"),
    ]
    return sse(*chunks[:upto], done=done)


def test_chat_stream_with_include_usage() -> None:
    result = feed_all(CHAT.stream(), [chat_stream_with_usage()], StreamOutcome.COMPLETE)
    assert result.usage == Usage(input_tokens=12, output_tokens=5, cache_read_tokens=0, reasoning_tokens=0)
    assert result.provenance == REPORTED
    assert result.flags == frozenset()
    assert result.complete
    assert (result.model, result.response_id) == ("gpt-4o-mini-2024-07-18", "chatcmpl-123")


def test_chat_stream_without_usage_is_complete_and_missing() -> None:
    result = feed_all(CHAT.stream(), [chat_stream_without_usage()], StreamOutcome.COMPLETE)
    assert result.usage == Usage()
    assert result.provenance == MISSING
    assert result.flags == frozenset()
    assert result.complete
    assert result.model == "gpt-4o-mini-2024-07-18"


def test_vllm_cumulative_usage_keeps_the_last_never_the_sum() -> None:
    result = feed_all(CHAT.stream(), [vllm_stream()], StreamOutcome.COMPLETE)
    assert result.usage == Usage(input_tokens=10, output_tokens=3)
    assert result.usage.total_tokens == 13
    assert (result.provenance, result.flags) == (REPORTED, frozenset())


def test_vllm_stream_broken_without_done_is_partial() -> None:
    # Two content chunks seen, then the connection dropped: what was seen is a floor, not the bill.
    result = feed_all(CHAT.stream(), [vllm_stream(done=False, upto=3)], StreamOutcome.BROKEN)
    assert result.usage == Usage(input_tokens=10, output_tokens=2)
    assert result.provenance == PARTIAL
    assert result.flags == {Flag.STREAM_INCOMPLETE}
    assert not result.complete


def test_chat_stream_closed_early_before_usage() -> None:
    raw = chat_stream_with_usage()
    cut = raw.index(b'"finish_reason":"stop"')
    result = feed_all(CHAT.stream(), [raw[:cut]], StreamOutcome.CLOSED_EARLY)
    assert result.usage == Usage()
    assert result.provenance == MISSING
    assert result.flags == {Flag.STREAM_INCOMPLETE}
    assert not result.complete
    assert result.model == "gpt-4o-mini-2024-07-18"


def test_chat_stream_closed_early_after_done_is_complete() -> None:
    result = feed_all(CHAT.stream(), [chat_stream_with_usage()], StreamOutcome.CLOSED_EARLY)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)


def test_chat_stream_complete_without_done_but_finished() -> None:
    # Some servers end the body without [DONE]; a finish_reason and a clean end still make it whole.
    result = feed_all(CHAT.stream(), [chat_stream_without_usage().replace(b"data: [DONE]\n\n", b"")], StreamOutcome.COMPLETE)
    assert (result.complete, result.flags) == (True, frozenset())


def test_chat_stream_with_an_error_event_is_incomplete() -> None:
    raw = sse(chunk({"content": "Hi"}), {"error": {"message": "overloaded", "type": "server_error"}}, done=False)
    result = feed_all(CHAT.stream(), [raw], StreamOutcome.COMPLETE)
    assert Flag.STREAM_INCOMPLETE in result.flags
    assert not result.complete


def test_chat_stream_with_malformed_chunks_does_not_raise() -> None:
    raw = sse(b"{not json", b'"a string"', b"[1, 2]", chunk({"content": "x"}, finish="stop", usage={"prompt_tokens": -1, "completion_tokens": 2}))
    result = feed_all(CHAT.stream(), [raw], StreamOutcome.COMPLETE)
    assert result.usage == Usage(output_tokens=2)
    assert result.flags == {Flag.INVALID_VALUE}


def test_azure_stream_model_comes_from_the_first_chunk_that_names_it() -> None:
    # Azure's first chunk (prompt_filter_results, choices []) has "model": "" and "id": "".
    first = {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    raw = sse(first, chunk({"content": "Hi"}, model="gpt-4o-2024-11-20"), chunk({}, finish="stop", model="gpt-4o-2024-11-20"))
    result = feed_all(CHAT.stream(), [raw], StreamOutcome.COMPLETE)
    assert (result.model, result.response_id) == ("gpt-4o-2024-11-20", "chatcmpl-123")


# -- responses streams -------------------------------------------------------------------------------

RESP_USAGE = {
    "input_tokens": 37,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 11,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 48,
}


def response_obj(status: str, usage: Any = None, **extra: Any) -> dict[str, Any]:
    return {"id": "resp_123", "object": "response", "created_at": 1741290958, "status": status, "model": "gpt-4.1-2025-04-14", "output": [], "usage": usage, **extra}


def responses_stream(terminal: str | None = "response.completed", *, ending: bytes = b"\n") -> bytes:
    events: list[tuple[str, Any]] = [
        ("response.created", {"type": "response.created", "sequence_number": 0, "response": response_obj("in_progress")}),
        ("response.in_progress", {"type": "response.in_progress", "sequence_number": 1, "response": response_obj("in_progress")}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi 😀"}),
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": " there"}),
    ]
    if terminal == "response.completed":
        events.append((terminal, {"type": terminal, "sequence_number": 4, "response": response_obj("completed", RESP_USAGE)}))
    elif terminal == "response.incomplete":
        details = {"incomplete_details": {"reason": "max_output_tokens"}}
        events.append((terminal, {"type": terminal, "sequence_number": 4, "response": response_obj("incomplete", RESP_USAGE, **details)}))
    return named(*events, ending=ending)


def test_responses_stream_completed() -> None:
    result = feed_all(RESPONSES.stream(), [responses_stream()], StreamOutcome.COMPLETE)
    assert result.usage == Usage(input_tokens=37, output_tokens=11, cache_read_tokens=0, reasoning_tokens=0)
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)
    assert (result.model, result.response_id) == ("gpt-4.1-2025-04-14", "resp_123")


def test_responses_stream_incomplete_event_is_the_final_bill() -> None:
    # response.incomplete (max_output_tokens) is a terminal event: its usage is what was billed.
    result = feed_all(RESPONSES.stream(), [responses_stream("response.incomplete")], StreamOutcome.COMPLETE)
    assert result.usage.total_tokens == 48
    assert (result.provenance, result.flags, result.complete) == (REPORTED, frozenset(), True)


@pytest.mark.parametrize("outcome", list(StreamOutcome))
def test_responses_stream_cut_before_the_terminal_event(outcome: StreamOutcome) -> None:
    result = feed_all(RESPONSES.stream(), [responses_stream(None)], outcome)
    assert result.usage == Usage()
    assert result.provenance == MISSING
    assert result.flags == {Flag.STREAM_INCOMPLETE}
    assert not result.complete
    assert result.model == "gpt-4.1-2025-04-14"


def test_responses_stream_failed_without_usage() -> None:
    raw = named(("response.failed", {"type": "response.failed", "sequence_number": 1, "response": response_obj("failed", None)}))
    result = feed_all(RESPONSES.stream(), [raw], StreamOutcome.COMPLETE)
    assert (result.usage, result.provenance, result.complete) == (Usage(), MISSING, True)


# -- any split, same record ---------------------------------------------------------------------------

_STREAMS = {
    "chat-lf": (CHAT, chat_stream_with_usage()),
    "chat-crlf": (CHAT, chat_stream_with_usage(ending=b"\r\n")),
    "chat-cr": (CHAT, chat_stream_with_usage(ending=b"\r")),
    "vllm": (CHAT, vllm_stream()),
    "responses-crlf": (RESPONSES, responses_stream(ending=b"\r\n")),
    "responses-cut": (RESPONSES, responses_stream(None)),
}


@pytest.mark.parametrize("name", list(_STREAMS))
def test_every_two_way_split_gives_the_same_record(name: str) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw], StreamOutcome.COMPLETE)
    for i in range(1, len(raw)):
        assert feed_all(parser.stream(), [raw[:i], raw[i:]], StreamOutcome.COMPLETE) == whole, i


@settings(max_examples=60)
@given(st.data(), st.sampled_from(list(_STREAMS)), st.sampled_from(list(StreamOutcome)))
def test_any_split_gives_the_same_record(data: st.DataObject, name: str, outcome: StreamOutcome) -> None:
    parser, raw = _STREAMS[name]
    whole = feed_all(parser.stream(), [raw], outcome)
    assert feed_all(parser.stream(), data.draw(splits(raw)), outcome) == whole


# -- detect ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parser"),
    [
        ("/v1/chat/completions", CHAT),
        ("/chat/completions", CHAT),
        ("/openai/deployments/x/chat/completions", CHAT),
        ("/api/v1/chat/completions", CHAT),  # OpenRouter
        ("/v1/responses", RESPONSES),
        ("/openai/v1/responses", RESPONSES),
        ("/v1/embeddings", EMBEDDINGS),
        ("/openai/deployments/emb/embeddings", EMBEDDINGS),
        ("/v1/completions", COMPLETIONS),
    ],
)
@pytest.mark.parametrize("host", ["api.openai.com", "127.0.0.1", "vllm.internal", "gateway.example.org"])
def test_detect_llm_paths(path: str, parser: object, host: str) -> None:
    # Detection goes by method and path: the same answer on any host and port.
    assert detect("POST", host, path) is parser


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("GET", "/v1/responses"),
        ("PUT", "/v1/embeddings"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models"),
        ("POST", "/v1/files"),
        ("GET", "/health"),
        ("POST", "/"),
        ("POST", ""),
        ("POST", "/v1/chat/completions/abc/messages"),
    ],
)
def test_detect_ignores_other_traffic(method: str, path: str) -> None:
    assert detect(method, "internal.example.org", path) is None


def test_unknown_paths_on_llm_hosts_are_still_recorded() -> None:
    from tokentrail.wire.generic import GENERIC

    assert detect("POST", "api.openai.com", "/v1/audio/transcriptions") is GENERIC
    assert detect("POST", "bedrock-runtime.eu-west-1.amazonaws.com", "/model/x/unknown-op") is GENERIC
    assert detect("POST", "s3.amazonaws.com", "/bucket/key") is None
    assert detect("GET", "api.openai.com", "/v1/models") is None


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("api.anthropic.com", "/v1/messages/count_tokens"),
        ("generativelanguage.googleapis.com", "/v1beta/models/gemini-2.5-flash:countTokens"),
        ("api.openai.com", "/v1/responses/input_tokens"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "/model/anthropic.claude-3-5-sonnet/count-tokens"),
    ],
)
def test_token_counting_endpoints_are_not_calls_to_record(host: str, path: str) -> None:
    # Free and generating nothing: recorded, each added a call without usage or cost to the totals.
    assert detect("POST", host, path) is None


def test_every_parser_is_registered_once() -> None:
    assert len(PARSERS) == len({id(p) for p in PARSERS})
    assert {p.api.split(".")[0] for p in PARSERS} >= {"openai", "anthropic", "gemini", "bedrock", "cohere", "ollama"}
    assert CHAT.matches("POST", "/v1/chat/completions") and not COMPLETIONS.matches("POST", "/v1/chat/completions")


# -- the one-go parse of a stream held in memory agrees with the incremental one -------------------

_CHUNK = st.fixed_dictionaries(
    {"id": st.sampled_from(["", "c1"]), "model": st.sampled_from(["", "gpt-4o", "m"])},
    optional={
        "choices": st.lists(
            st.fixed_dictionaries(
                {"index": st.just(0), "delta": st.fixed_dictionaries({}, optional={"content": st.text(max_size=8)})},
                optional={"finish_reason": st.sampled_from([None, "stop", "length"])},
            ),
            max_size=1,
        ),
        "usage": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"prompt_tokens": st.integers(0, 99), "completion_tokens": st.integers(0, 99)},
                optional={"total_tokens": st.integers(0, 200)},
            ),
        ),
        "x_groq": st.fixed_dictionaries(
            {"usage": st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9), "completion_tokens": st.integers(0, 9)})}
        ),
    },
)
_EXTRA = st.sampled_from([b"", b"\n\n", b"\n", b": keep-alive\n\n", b"data: [DONE]\n\n", b"event: x\ndata: {}\n\n", b"data: 7\n\n", b"data: {\"a\"", b"\r\n",
                         b"event: x\ndata: [DONE]\n\n", b"data:[DONE]\n\n", b"data: {}\ndata: [DONE]\n\n"])


@given(
    chunks=st.lists(_CHUNK, max_size=6),
    extras=st.lists(st.tuples(st.integers(0, 6), _EXTRA), max_size=2),
    spaced=st.booleans(),
    outcome=st.sampled_from(list(StreamOutcome)),
)
@settings(max_examples=400, deadline=None)
def test_parse_stream_agrees_with_chat_stream(
    chunks: list[dict[str, Any]], extras: list[tuple[int, bytes]], spaced: bool, outcome: StreamOutcome
) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    events = [b"data: " + json.dumps(c, separators=separators).encode() + b"\n\n" for c in chunks]
    for at, extra in extras:
        events.insert(min(at, len(events)), extra)
    raw = b"".join(events)
    whole = parse_stream(raw, outcome)
    if whole is None:
        return  # declined: the incremental parser handles it
    assert_reads_as_chat_stream(whole, raw, outcome)


def assert_reads_as_chat_stream(whole: ParsedCall, raw: bytes, outcome: StreamOutcome) -> None:
    """``whole`` (a one-go parse of ``raw``) is what the event-by-event `ChatStream` reads."""
    stream = ChatStream()
    stream.feed(raw)
    expected = stream.finish(outcome)
    assert (whole.model, whole.response_id, whole.usage, whole.provenance, whole.flags, whole.complete, whole.usage_object()) == (
        expected.model, expected.response_id, expected.usage, expected.provenance, expected.flags, expected.complete,
        expected.raw_usage,
    )  # fmt: skip
    assert (whole.output_text and whole.output_text()) == (expected.output_text and expected.output_text())


_OPENAI_USAGE = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 999), "completion_tokens": st.integers(0, 999)},
    optional={
        "prompt_tokens_details": st.one_of(st.none(), st.fixed_dictionaries({}, optional={"cached_tokens": st.integers(0, 9)})),
        "completion_tokens_details": st.fixed_dictionaries({}, optional={"reasoning_tokens": st.integers(0, 9)}),
    },
)
# What breaks the common shape in a way that changes what an event says: a CR that ends an SSE line
# (between two JSON tokens, it is still valid JSON), a second line, a comment or field line, a model
# that is empty or no string, an event that is no JSON object, a usage key spelled with an escape.
_PERTURB = st.sampled_from(
    [None, "cr", "two_lines", "comment", "empty_model", "number_model", "not_json", "no_usage", "escaped_key"]
)


@given(
    contents=st.lists(st.text(max_size=6), max_size=4),
    usage=_OPENAI_USAGE,
    every_chunk=st.booleans(),
    spaced=st.booleans(),
    where=st.sampled_from(["first", "last"]),
    perturb=_PERTURB,
    outcome=st.sampled_from(list(StreamOutcome)),
)
@settings(max_examples=400, deadline=None)
def test_the_common_stream_reads_as_event_by_event(
    contents: list[str], usage: dict[str, Any], every_chunk: bool, spaced: bool, where: str, perturb: str | None,
    outcome: StreamOutcome,
) -> None:
    """OpenAI's stream with include_usage (and vLLM's usage on every chunk), read from its first and last
    events only, gives what ChatStream gives reading every event; a perturbed one too, or declines."""
    separators = (", ", ": ") if spaced else (",", ":")
    head = {"id": "chatcmpl-1", "model": "gpt-4o-mini"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}],
               **({"usage": usage} if every_chunk else {})} for c in contents]  # fmt: skip
    chunks.append({**head, "choices": [], "usage": usage})
    events = [json.dumps(c, separators=separators).encode() for c in chunks]
    at = 0 if where == "first" else len(events) - 1
    if perturb == "cr":
        events[at] = events[at].replace(b'"model":', b'"model":\r', 1).replace(b'"usage":', b'"usage":\r', 1)
    elif perturb == "two_lines":
        events[at] = events[at].replace(b'"choices"', b'\ndata: "choices"', 1)
    elif perturb == "comment":
        events[at] = b"{}\n: keep-alive\ndata: " + events[at]
    elif perturb in ("empty_model", "number_model"):
        model = "" if perturb == "empty_model" else 4
        events[at] = json.dumps({**chunks[at], "model": model}, separators=separators).encode()
    elif perturb == "not_json":
        events[at] = b"[1, 2]"
    elif perturb == "no_usage":
        events[-1] = json.dumps({**head, "choices": []}, separators=separators).encode()
    elif perturb == "escaped_key":  # the same key to a JSON parser, not to ChatStream's "usage" check
        events[-1] = events[-1].replace(b'"usage"', b'"us\\u0061ge"')
    raw = b"".join(b"data: " + e + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    whole = parse_stream(raw, outcome)
    details = [usage.get("prompt_tokens_details") or {}, usage.get("completion_tokens_details") or {}]
    consistent = details[0].get("cached_tokens", 0) <= usage["prompt_tokens"] and details[1].get(
        "reasoning_tokens", 0
    ) <= usage["completion_tokens"]
    if perturb is None and consistent:
        assert whole is not None and whole.usage_json is not None  # the common shape is read in one go
    if whole is not None:
        assert_reads_as_chat_stream(whole, raw, outcome)


@pytest.mark.parametrize("body", [b"not json", b'{"id": "x", "model": "gpt-4', b"", b"null", b"[1, 2]", b"\xff\xfe\x00"])
@pytest.mark.parametrize("parser", [CHAT, RESPONSES], ids=["chat", "responses"])
def test_a_body_that_is_not_a_json_object_is_unparsed_and_its_output_not_counted_as_zero(
    parser: Any, body: bytes
) -> None:
    # Its "text" was read as "" and counted as 0 output tokens, with no flag.
    result = parser.parse(body)
    assert result.flags == {"unparsed"} and result.output_text is None
    assert result.usage.output_tokens is None


def _chunk_event(text: str) -> bytes:
    delta = json.dumps({"model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": text}}]})
    return f"data: {delta}\n\n".encode()


@pytest.mark.parametrize("usage", [False, True])
def test_a_long_stream_keeps_a_bounded_part_of_its_events(monkeypatch: pytest.MonkeyPatch, usage: bool) -> None:
    # It kept every event of an endless stream for a count its usage may make unneeded: 320 MB of
    # memory for a 200 MB stream. Past KEEP bytes, the text kept counts as a floor.
    monkeypatch.setattr(ChatStream, "KEEP", 2_000)
    stream = ChatStream()
    for i in range(200):
        stream.feed(_chunk_event(f"word{i} "))
    if usage:
        stream.feed(b'data: {"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 400}}\n\n')
    stream.feed(b"data: [DONE]\n\n")
    result = stream.finish(StreamOutcome.COMPLETE)
    assert sum(map(len, stream._events)) == 0  # handed to the result, not kept twice
    if usage:
        assert result.usage.output_tokens == 400 and "count_floor" not in result.flags
    else:
        assert result.output_text is not None
        text = result.output_text()
        assert text.startswith("word0 ") and "word199" not in text  # the start of the output only
        assert "count_floor" in result.flags
