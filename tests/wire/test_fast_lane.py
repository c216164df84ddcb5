"""The fast lanes give exactly what the general parsers give, or decline."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokentrail.wire import anthropic_messages, gemini, openai_chat
from tokentrail.wire._base import request_info, top_level

COUNTS = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.integers(max_value=-1),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=3),
)
PROMPT_KEYS = st.sampled_from(["cached_tokens", "cache_write_tokens", "audio_tokens", "image_tokens"])
COMPLETION_KEYS = st.sampled_from(["reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "text_tokens"])
TOP_KEYS = st.sampled_from(
    ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_cache_hit_tokens", "reasoning_tokens", "cost"]
)


@st.composite
def usages(draw: st.DrawFn) -> Any:
    usage: dict[str, Any] = {}
    if draw(st.booleans()):  # mostly consistent, as servers send it
        p, c = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
        usage.update(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)
    usage.update(draw(st.dictionaries(TOP_KEYS, COUNTS, max_size=3)))
    if draw(st.booleans()):
        usage["prompt_tokens_details"] = draw(st.one_of(st.none(), st.dictionaries(PROMPT_KEYS, COUNTS, max_size=3)))
    if draw(st.booleans()):
        usage["completion_tokens_details"] = draw(
            st.one_of(st.none(), st.dictionaries(COMPLETION_KEYS, COUNTS, max_size=3))
        )
    return draw(st.one_of(st.just(usage), st.none(), st.integers(), st.lists(st.integers(), max_size=2)))


@given(
    usage=usages(),
    model=st.one_of(st.none(), st.text(max_size=5), st.integers()),
    response_id=st.one_of(st.none(), st.text(max_size=5), st.integers()),
    omit=st.sets(st.sampled_from(["usage", "model", "id"])),
)
def test_chat_fast_parse_agrees_with_the_general_parser(
    usage: Any, model: Any, response_id: Any, omit: set[str]
) -> None:
    obj = {"id": response_id, "object": "chat.completion", "model": model, "choices": [], "usage": usage}
    body = json.dumps({k: v for k, v in obj.items() if k not in omit}).encode()
    fast = openai_chat.fast_parse(body)
    if fast is None:
        return  # declined: the general parser reads it
    general = openai_chat.CHAT.parse_general(body)
    assert fast == general
    assert fast.output_text is None and general.output_text is None


def test_the_fast_lane_takes_openais_documented_shape() -> None:
    usage = {
        "prompt_tokens": 57, "completion_tokens": 20, "total_tokens": 77,
        "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }  # fmt: skip
    body = json.dumps({"id": "chatcmpl-1", "model": "gpt-4o", "choices": [], "usage": usage}).encode()
    fast = openai_chat.fast_parse(body)
    assert fast is not None and fast == openai_chat.CHAT.parse_general(body)
    assert fast.raw_usage is None and fast.usage_object() == usage  # kept as its JSON text


@given(
    model=st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(st.text(max_size=2), max_size=2)),
    stream=st.one_of(st.none(), st.booleans(), st.integers(0, 1), st.text(max_size=2)),
    omit=st.sets(st.sampled_from(["model", "stream"])),
)
def test_request_info_agrees_with_the_general_reading(model: Any, stream: Any, omit: set[str]) -> None:
    obj = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    body = json.dumps({k: v for k, v in obj.items() if k not in omit}).encode()
    fields = top_level(body, "model", "stream")
    expected_model = fields.get("model") if isinstance(fields.get("model"), str) else None
    info = request_info(body)
    assert (info.model, info.stream) == (expected_model, fields.get("stream") is True)


def test_every_variant_takes_the_general_way() -> None:
    variants = [
        {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "prompt_cache_hit_tokens": 4},  # DeepSeek
        {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 13},  # a total that does not add up
        {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 11}},  # parts > whole
        {"prompt_tokens": -1, "completion_tokens": 2},
        {"prompt_tokens": True, "completion_tokens": 2},
        {"prompt_tokens": 10.0, "completion_tokens": 2},
        {"prompt_tokens": 10},  # a count missing
        {"prompt_tokens": 10, "completion_tokens": 2, "cost": 0.0001},  # OpenRouter
    ]
    for usage in variants:
        body = json.dumps({"id": "x", "model": "m", "usage": usage}).encode()
        assert openai_chat.fast_parse(body) is None, usage


def test_a_whole_stream_with_an_error_event_reads_as_event_by_event() -> None:
    from tokentrail.wire._base import StreamOutcome

    events = [
        {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
        {"error": {"message": "overloaded", "type": "server_error"}},
        {"id": "c1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
    ]
    for done in (True, False):
        for outcome in (StreamOutcome.COMPLETE, StreamOutcome.CLOSED_EARLY):
            raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
            raw += b"data: [DONE]\n\n" if done else b""
            whole = openai_chat.parse_stream(raw, outcome)
            incremental = openai_chat.ChatStream()
            incremental.feed(raw)
            expected = incremental.finish(outcome)
            if whole is None:
                assert not done  # only a stream without [DONE] needs the event-by-event reading
                continue
            assert whole == expected


ANTHROPIC_TOP = st.sampled_from(
    ["input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "service_tier",
     "server_tool_use", "inference_geo", "total_tokens"]
)  # fmt: skip
TTL_KEYS = st.sampled_from(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens", "ephemeral_24h_input_tokens"])


@st.composite
def anthropic_usages(draw: st.DrawFn) -> Any:
    usage: dict[str, Any] = {}
    if draw(st.booleans()):  # mostly consistent, as the API sends it
        usage.update(input_tokens=draw(st.integers(0, 10**6)), output_tokens=draw(st.integers(0, 10**6)))
        usage.update(cache_creation_input_tokens=draw(st.integers(0, 10**5)), cache_read_input_tokens=0)
    usage.update(draw(st.dictionaries(ANTHROPIC_TOP, COUNTS, max_size=3)))
    if draw(st.booleans()):
        usage["cache_creation"] = draw(st.one_of(st.none(), COUNTS, st.dictionaries(TTL_KEYS, COUNTS, max_size=2)))
    if draw(st.booleans()):
        usage["output_tokens_details"] = draw(
            st.one_of(st.none(), st.dictionaries(st.sampled_from(["thinking_tokens", "x"]), COUNTS, max_size=2))
        )
    return draw(st.one_of(st.just(usage), st.none(), st.integers(), st.lists(st.integers(), max_size=2)))


@given(
    usage=anthropic_usages(),
    model=st.one_of(st.none(), st.text(max_size=5), st.integers()),
    response_id=st.one_of(st.none(), st.text(max_size=5), st.integers()),
    omit=st.sets(st.sampled_from(["usage", "model", "id"])),
)
def test_anthropic_fast_parse_agrees_with_the_general_parser(
    usage: Any, model: Any, response_id: Any, omit: set[str]
) -> None:
    obj = {"id": response_id, "type": "message", "model": model, "content": [], "usage": usage}
    body = json.dumps({k: v for k, v in obj.items() if k not in omit}).encode()
    fast = anthropic_messages.fast_parse(body)
    if fast is None:
        return  # declined: the general parser reads it
    assert fast == anthropic_messages.message_call(json.loads(body))


BASE = {"input_tokens": 100, "output_tokens": 30, "cache_creation_input_tokens": 40, "cache_read_input_tokens": 20}


@pytest.mark.parametrize(
    "usage",
    [
        {**BASE, "output_tokens_details": {"thinking_tokens": 31}},  # more thinking than output
        {**BASE, "cache_creation": {"ephemeral_5m_input_tokens": 41}},  # parts over the whole
        {**BASE, "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 11}},
        {**BASE, "cache_creation": 40},
        {**BASE, "cache_creation": {"ephemeral_5m_input_tokens": -1}},
        {**BASE, "cache_creation_input_tokens": None, "cache_creation": {"ephemeral_5m_input_tokens": 7}},
        {**BASE, "input_tokens": None},
        {**BASE, "output_tokens": True},
        {k: v for k, v in BASE.items() if k != "input_tokens"},
        {**BASE, "total_tokens": 190},
    ],
)
def test_the_anthropic_fast_lane_declines_or_agrees_at_the_edges(usage: dict[str, Any]) -> None:
    body = json.dumps({"id": "msg_1", "model": "claude-x", "content": [], "usage": usage}).encode()
    fast = anthropic_messages.fast_parse(body)
    assert fast is None or fast == anthropic_messages.message_call(json.loads(body))


def test_the_anthropic_fast_lane_takes_the_documented_shape() -> None:
    usage = {
        "input_tokens": 100, "cache_creation_input_tokens": 40, "cache_read_input_tokens": 20,
        "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 30, "output_tokens_details": {"thinking_tokens": 12},
        "server_tool_use": {"web_search_requests": 1}, "service_tier": "standard", "inference_geo": "us",
    }  # fmt: skip
    # A tool_use block may hold keys named like the top-level ones: only the top level is read.
    content = [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {"model": "x", "usage": {"a": 1}}}]
    body = json.dumps({"id": "msg_1", "type": "message", "model": "claude-sonnet-4-6", "content": content,
                       "usage": usage}).encode()  # fmt: skip
    fast = anthropic_messages.fast_parse(body)
    assert fast is not None and fast == anthropic_messages.message_call(json.loads(body))
    assert (fast.usage.input_tokens, fast.usage.reasoning_tokens, fast.model) == (160, 12, "claude-sonnet-4-6")
    assert fast.raw_usage is None and fast.usage_object() == usage  # kept as its JSON text
    # 1-hour cache writes are priced from the raw usage object: the general way reads them.
    usage["cache_creation"] = {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 30}
    assert anthropic_messages.fast_parse(json.dumps({"usage": usage}).encode()) is None


GEMINI_COUNTS = st.sampled_from(
    ["promptTokenCount", "candidatesTokenCount", "totalTokenCount", "cachedContentTokenCount",
     "toolUsePromptTokenCount", "thoughtsTokenCount", "trafficType", "serviceTier"]
)  # fmt: skip
GEMINI_DETAILS = st.sampled_from(
    ["promptTokensDetails", "cacheTokensDetails", "candidatesTokensDetails", "toolUsePromptTokensDetails"]
)
DETAIL = st.fixed_dictionaries({}, optional={"modality": st.sampled_from(["TEXT", "IMAGE"]), "tokenCount": COUNTS})


@st.composite
def gemini_usages(draw: st.DrawFn) -> Any:
    usage: dict[str, Any] = {}
    if draw(st.booleans()):  # mostly consistent, as the API sends it (zeros omitted: proto3)
        p, c, t = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6)), draw(st.integers(0, 10**4))
        usage.update(promptTokenCount=p, candidatesTokenCount=c, thoughtsTokenCount=t, totalTokenCount=p + c + t)
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": draw(st.integers(0, p + 1))}]
        for key in draw(st.sets(st.sampled_from(["candidatesTokenCount", "thoughtsTokenCount"]))):
            usage.pop(key)
    usage.update(draw(st.dictionaries(GEMINI_COUNTS, COUNTS, max_size=3)))
    usage.update(draw(st.dictionaries(GEMINI_DETAILS, st.one_of(st.none(), COUNTS, st.lists(DETAIL, max_size=2)),
                                      max_size=2)))  # fmt: skip
    return draw(st.one_of(st.just(usage), st.none(), st.integers(), st.lists(st.integers(), max_size=2)))


@given(
    usage=gemini_usages(),
    model=st.one_of(st.none(), st.text(max_size=5), st.integers()),
    response_id=st.one_of(st.none(), st.text(max_size=5), st.integers()),
    omit=st.sets(st.sampled_from(["usageMetadata", "modelVersion", "responseId"])),
    error=st.booleans(),
)
def test_gemini_fast_parse_agrees_with_the_general_parser(
    usage: Any, model: Any, response_id: Any, omit: set[str], error: bool
) -> None:
    obj = {"candidates": [{"finishReason": "STOP"}], "usageMetadata": usage, "modelVersion": model,
           "responseId": response_id, **({"error": {"code": 500}} if error else {})}  # fmt: skip
    body = json.dumps({k: v for k, v in obj.items() if k not in omit}).encode()
    fast = gemini.fast_parse(body)
    if fast is None:
        return  # declined: the general parser reads it
    chunks = gemini._Chunks()
    chunks.add(json.loads(body))
    assert fast == chunks.call(stream=False)


@pytest.mark.parametrize(
    "usage",
    [
        {"promptTokenCount": 10, "cachedContentTokenCount": 11, "totalTokenCount": 10},  # cache over the prompt
        {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 16},  # a total that disagrees
        {"promptTokenCount": 10, "totalTokenCount": 10, "promptTokensDetails": [{"tokenCount": 11}]},
        {"promptTokenCount": 10, "totalTokenCount": 10, "promptTokensDetails": [{"tokenCount": -1}]},
        {"candidatesTokenCount": 5},  # no prompt count, no total: the input is unknown
        {"promptTokenCount": 10, "totalTokenCount": 10},  # the candidates count omitted: a proto3 zero
        {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "totalTokenCount": 22},
    ],
)
def test_the_gemini_fast_lane_declines_or_agrees_at_the_edges(usage: dict[str, Any]) -> None:
    body = json.dumps({"candidates": [], "usageMetadata": usage, "modelVersion": "gemini-x"}).encode()
    fast = gemini.fast_parse(body)
    chunks = gemini._Chunks()
    chunks.add(json.loads(body))
    assert fast is None or fast == chunks.call(stream=False)


def test_the_gemini_fast_lane_takes_the_documented_shape() -> None:
    usage = {"promptTokenCount": 10, "totalTokenCount": 17, "thoughtsTokenCount": 7, "trafficType": "ON_DEMAND",
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]}  # fmt: skip
    body = json.dumps(
        {"candidates": [], "usageMetadata": usage, "modelVersion": "gemini-x", "responseId": "r"}
    ).encode()
    fast = gemini.fast_parse(body)
    assert fast is not None and fast == gemini.GENERATE.parse(body)
    # candidatesTokenCount omitted with a total there: a proto3 zero, so the output is the thoughts.
    assert (fast.usage.output_tokens, fast.usage.reasoning_tokens, fast.raw_usage) == (7, 7, None)
    assert fast.usage_object() == usage
    # No candidates and no thoughts counted (the API stopped at once): output 0, read fast.
    zeros = gemini.fast_parse(json.dumps({"usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}).encode())
    assert zeros is not None and (zeros.usage.input_tokens, zeros.usage.output_tokens) == (8, 0)
