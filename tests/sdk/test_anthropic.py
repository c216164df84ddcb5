"""The real `anthropic` SDK (on httpx2) against the simulator: one record per attempt, tokens as served.

Anthropic's ``input_tokens`` leaves the cache out; tokentrail's input is the sum of the three input
fields, which is what the simulator's `ServedCall.input_tokens` holds. The simulator does not send
``output_tokens_details.thinking_tokens``: thinking is inside ``output_tokens`` and the reasoning
count stays null (not reported apart), never 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage
from tests.sim.helpers import long_text
from tokentrail.sim import FAULT_HEADER, ServedCall, Simulator

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

SDK = "anthropic"
MODEL = "claude-sonnet-4-6"
API = "anthropic.messages"


@pytest.fixture
def client(sim: Simulator) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-test", max_retries=2) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def served(call: ServedCall) -> dict[str, Any]:
    """What a record of this served answer must hold (Anthropic always sends both cache counts)."""
    return usage(
        call.input_tokens, call.output_tokens, cache_read=call.cached_tokens, cache_write=call.cache_write_tokens
    )


@pytest.mark.support("Anthropic", "non-stream")
def test_create_sync(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.messages.create(model=MODEL, max_tokens=200, system="Be brief.", messages=user("sdk: sync create"))
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1])
    assert call["input_tokens"] == reply.usage.input_tokens and call["output_tokens"] == reply.usage.output_tokens
    assert shape(call) == (API, "ok", 1, False, "reported")
    assert (call["model"], call["provider"], call["flags"]) == (MODEL, "local", [])


@pytest.mark.support("Anthropic", "non-stream")
def test_create_async(db: Path, sim: Simulator) -> None:
    async def main() -> Any:
        async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-ant-test") as c:
            return await c.messages.create(model=MODEL, max_tokens=200, messages=user("sdk: async create"))

    reply = asyncio.run(main())
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and call["output_tokens"] == reply.usage.output_tokens
    assert shape(call) == (API, "ok", 1, False, "reported")


@pytest.mark.support("Anthropic", "stream")
def test_create_stream_true(db: Path, client: Any, sim: Simulator) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=200, messages=user("sdk: stream"), stream=True))
    assert events[-1].type == "message_stop"
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and sim.served[-1].stream
    assert call["output_tokens"] == events[-2].usage.output_tokens  # message_delta's cumulative count
    assert shape(call) == (API, "ok", 1, True, "reported") and call["flags"] == []
    assert call["first_token_ms"] is not None


@pytest.mark.support("Anthropic", "stream")
def test_messages_stream_helper(db: Path, client: Any, sim: Simulator) -> None:
    with client.messages.stream(model=MODEL, max_tokens=200, messages=user("sdk: stream helper")) as stream:
        final = stream.get_final_message()
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1])
    assert call["output_tokens"] == final.usage.output_tokens
    assert shape(call) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Anthropic", "stream")
def test_async_stream_helper(db: Path, sim: Simulator) -> None:
    async def main() -> Any:
        async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="sk-ant-test") as c:
            async with c.messages.stream(model=MODEL, max_tokens=200, messages=user("sdk: async stream")) as stream:
                return await stream.get_final_message()

    final = asyncio.run(main())
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and call["output_tokens"] == final.usage.output_tokens
    assert shape(call) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Anthropic", "non-stream", "cache")
def test_prompt_cache_write_then_read(db: Path, client: Any, sim: Simulator) -> None:
    system: Any = [
        {"type": "text", "text": "Answer from the document."},
        {"type": "text", "text": long_text("sdk-anthropic-cache"), "cache_control": {"type": "ephemeral"}},
    ]
    first = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=user("First question?"))
    served_first = sim.served[-1]
    second = client.messages.create(model=MODEL, max_tokens=100, system=system, messages=user("Second one?"))
    served_second = sim.served[-1]

    write, read = recorded(db)
    prefix = first.usage.cache_creation_input_tokens
    assert prefix >= 1024 and second.usage.cache_read_input_tokens == prefix
    assert (
        tokens(write)
        == served(served_first)
        == usage(first.usage.input_tokens + prefix, first.usage.output_tokens, cache_read=0, cache_write=prefix)
    )
    assert (
        tokens(read)
        == served(served_second)
        == usage(second.usage.input_tokens + prefix, second.usage.output_tokens, cache_read=prefix, cache_write=0)
    )
    assert shape(write) == shape(read) == (API, "ok", 1, False, "reported")


@pytest.mark.support("Anthropic", "non-stream", "stream", "reasoning")
def test_extended_thinking(db: Path, client: Any, sim: Simulator) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    messages = user("sdk: think first, then answer.")
    reply = client.messages.create(model=MODEL, max_tokens=2048, thinking=thinking, messages=messages)
    served_whole = sim.served[-1]
    with client.messages.stream(model=MODEL, max_tokens=2048, thinking=thinking, messages=messages) as stream:
        stream.get_final_message()
    served_stream = sim.served[-1]

    whole, streamed = recorded(db)
    assert reply.content[0].type == "thinking" and served_whole.reasoning_tokens > 0
    # Thinking is billed inside output_tokens; not reported apart on this wire, so reasoning is null.
    assert tokens(whole) == served(served_whole) and whole["reasoning_tokens"] is None
    assert whole["output_tokens"] == reply.usage.output_tokens > served_whole.reasoning_tokens
    assert tokens(streamed) == served(served_stream) == served(served_whole)
    assert shape(whole) == (API, "ok", 1, False, "reported")
    assert shape(streamed) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Anthropic", "non-stream", "tool use")
def test_tool_use_round_trip(db: Path, client: Any, sim: Simulator) -> None:
    tools: Any = [
        {
            "name": "lookup_weather",
            "description": "Weather by city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    messages: list[Any] = user("sdk: please lookup the weather in Oslo.")
    first = client.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages)
    served_first = sim.served[-1]
    [use] = first.content
    assert first.stop_reason == "tool_use" and use.type == "tool_use"
    messages += [
        {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    second = client.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=messages)
    assert second.stop_reason == "end_turn"

    call_tool, answer = recorded(db)
    assert tokens(call_tool) == served(served_first) and tokens(answer) == served(sim.served[-1])
    assert answer["input_tokens"] > call_tool["input_tokens"]  # the tool call and its result are input now
    assert shape(call_tool) == shape(answer) == (API, "ok", 1, False, "reported")


@pytest.mark.support("Anthropic", "non-stream")
def test_retry_after_429_is_two_attempts(db: Path, client: Any, sim: Simulator) -> None:
    client.messages.create(
        model=MODEL, max_tokens=50, messages=user("sdk: retry me"), extra_headers={FAULT_HEADER: "429*1"}
    )
    failed, ok = recorded(db)
    assert [s.status for s in sim.served[-2:]] == [429, 200]
    assert shape(failed) == (API, "http_error", 1, False, "missing") and failed["http_status"] == 429
    assert tokens(failed) == usage(None, None) and failed["flags"] == ["http_error"]
    assert shape(ok) == (API, "ok", 2, False, "reported") and tokens(ok) == served(sim.served[-1])


@pytest.mark.support("Anthropic", "stream")
def test_cut_stream_is_partial(db: Path, client: Any, sim: Simulator) -> None:
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        for _ in client.messages.create(
            model=MODEL, max_tokens=50, messages=user("sdk: cut me"), stream=True, extra_headers={FAULT_HEADER: "cut:4"}
        ):
            pass
    [call] = recorded(db)
    cut = sim.served[-1]
    assert cut.fault == "cut" and not cut.usage_sent
    # message_start arrived: its input side is final, its output_tokens (1) only a floor.
    assert tokens(call) == usage(cut.input_tokens, 1, cache_read=0, cache_write=0)
    assert (call["input_source"], call["output_source"]) == ("reported", "partial")
    assert shape(call) == (API, "network_error", 1, True, "partial") and "stream_incomplete" in call["flags"]
