"""The real `openai` SDK against the simulator, for the support table's OpenAI row: openai 3.x sends
through httpx2 (first CI leg), 2.x through httpx (second leg). tests/capture/test_openai_sdk.py covers
capture itself (scopes, threads, faults) in depth; this file covers each feature once per leg.
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

openai = pytest.importorskip("openai")

SDK = "openai"
CHAT = "openai.chat"


@pytest.fixture
def client(sim: Simulator) -> Iterator[Any]:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=2) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def served(call: ServedCall) -> dict[str, Any]:
    """The simulator's OpenAI usage always carries the cached and reasoning details."""
    return usage(call.input_tokens, call.output_tokens, cache_read=call.cached_tokens, reasoning=call.reasoning_tokens)


@pytest.mark.support("OpenAI", "non-stream")
def test_chat(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=user("sdk: openai chat"))
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1])
    assert (call["input_tokens"], call["output_tokens"]) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert shape(call) == (CHAT, "ok", 1, False, "reported") and call["flags"] == []


@pytest.mark.support("OpenAI", "stream")
def test_chat_stream_async(db: Path, sim: Simulator) -> None:
    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as c:
            stream = await c.chat.completions.create(
                model="gpt-4o", messages=user("sdk: openai stream"), stream=True, stream_options={"include_usage": True}
            )
            return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and call["output_tokens"] == chunks[-1].usage.completion_tokens
    assert shape(call) == (CHAT, "ok", 1, True, "reported")


@pytest.mark.support("OpenAI", "non-stream", "cache")
def test_prompt_cache_hit(db: Path, client: Any, sim: Simulator) -> None:
    system = {"role": "system", "content": long_text("sdk-openai-cache")}
    client.chat.completions.create(model="gpt-4o-mini", messages=[system, *user("First?")])
    cold = sim.served[-1]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[system, *user("Second?")])
    warm = sim.served[-1]
    first, second = recorded(db)
    assert cold.cached_tokens == 0 and warm.cached_tokens >= 1024
    assert tokens(first) == served(cold) and tokens(second) == served(warm)
    assert second["cache_read_tokens"] == reply.usage.prompt_tokens_details.cached_tokens
    assert second["input_tokens"] == reply.usage.prompt_tokens  # prompt_tokens already includes the cached part


@pytest.mark.support("OpenAI", "non-stream", "stream", "reasoning")
def test_reasoning_responses_api(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.responses.create(model="o4-mini", input="sdk: plan a trip", reasoning={"effort": "low"})
    served_whole = sim.served[-1]
    with client.responses.stream(model="o4-mini", input="sdk: plan a trip", reasoning={"effort": "low"}) as stream:
        final = stream.get_final_response()
    whole, streamed = recorded(db)
    assert served_whole.reasoning_tokens > 0
    assert tokens(whole) == served(served_whole)
    assert whole["reasoning_tokens"] == reply.usage.output_tokens_details.reasoning_tokens
    assert tokens(streamed) == served(sim.served[-1]) and streamed["output_tokens"] == final.usage.output_tokens
    assert shape(whole) == ("openai.responses", "ok", 1, False, "reported")
    assert shape(streamed) == ("openai.responses", "ok", 1, True, "reported")


@pytest.mark.support("OpenAI", "non-stream", "tool use")
def test_tool_call(db: Path, client: Any, sim: Simulator) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "lookup_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=user("sdk: please lookup the weather"), tools=tools
    )
    assert reply.choices[0].message.tool_calls
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and shape(call) == (CHAT, "ok", 1, False, "reported")


@pytest.mark.support("OpenAI", "non-stream")
def test_embeddings(db: Path, client: Any, sim: Simulator) -> None:
    client.embeddings.create(model="text-embedding-3-small", input=["sdk: alpha", "sdk: beta"])
    [call] = recorded(db)
    assert tokens(call) == usage(sim.served[-1].input_tokens, 0)
    assert shape(call) == ("openai.embeddings", "ok", 1, False, "reported")


@pytest.mark.support("OpenAI", "non-stream")
def test_retry_after_429_is_two_attempts(db: Path, client: Any, sim: Simulator) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=user("sdk: openai, retry me"), extra_headers={FAULT_HEADER: "429*1"}
    )
    failed, ok = recorded(db)
    assert shape(failed) == (CHAT, "http_error", 1, False, "missing")
    assert shape(ok) == (CHAT, "ok", 2, False, "reported") and tokens(ok) == served(sim.served[-1])
