"""The real `ollama` SDK (on httpx) against the simulator's native Ollama API.

The counts are the final object's ``prompt_eval_count`` (input) and ``eval_count`` (output, thinking
included; Ollama does not report thinking apart, so reasoning stays null). When the whole prompt came
from the runner's cache, Ollama leaves ``prompt_eval_count`` out: the input is then unknown (null,
``input_source`` missing), never 0. Prompts are unique per test for that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage
from tokentrail.sim import FAULT_HEADER, ServedCall, Simulator

ollama = pytest.importorskip("ollama")

SDK = "ollama"
MODEL = "llama3.2"


@pytest.fixture
def client(sim: Simulator) -> Iterator[Any]:
    with ollama.Client(host=sim.url) as c:
        yield c


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def served(call: ServedCall) -> dict[str, Any]:
    return usage(call.input_tokens, call.output_tokens)


@pytest.mark.support("Ollama", "non-stream")
def test_chat(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.chat(model=MODEL, messages=user("sdk: ollama chat"), stream=False)
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) == usage(reply.prompt_eval_count, reply.eval_count)
    assert shape(call) == ("ollama.chat", "ok", 1, False, "reported") and (call["model"], call["flags"]) == (MODEL, [])


@pytest.mark.support("Ollama", "stream")
def test_chat_stream(db: Path, client: Any, sim: Simulator) -> None:
    parts = list(client.chat(model=MODEL, messages=user("sdk: ollama chat stream"), stream=True))
    [call] = recorded(db)
    assert len(parts) >= 3 and parts[-1].done
    assert tokens(call) == served(sim.served[-1]) == usage(parts[-1].prompt_eval_count, parts[-1].eval_count)
    assert shape(call) == ("ollama.chat", "ok", 1, True, "reported") and call["first_token_ms"] is not None


@pytest.mark.support("Ollama", "non-stream", "stream")
def test_generate_both_ways(db: Path, client: Any, sim: Simulator) -> None:
    whole = client.generate(model=MODEL, prompt="sdk: why is the sky blue?", system="Be brief.", stream=False)
    served_whole = sim.served[-1]
    parts = list(client.generate(model=MODEL, prompt="sdk: why is the grass green?", stream=True))
    first, second = recorded(db)
    assert tokens(first) == served(served_whole) == usage(whole.prompt_eval_count, whole.eval_count)
    assert tokens(second) == served(sim.served[-1]) == usage(parts[-1].prompt_eval_count, parts[-1].eval_count)
    assert shape(first) == ("ollama.generate", "ok", 1, False, "reported")
    assert shape(second) == ("ollama.generate", "ok", 1, True, "reported")


@pytest.mark.support("Ollama", "non-stream", "stream")
def test_async_chat(db: Path, sim: Simulator) -> None:
    async def main() -> tuple[Any, list[Any]]:
        async with ollama.AsyncClient(host=sim.url) as c:
            whole = await c.chat(model=MODEL, messages=user("sdk: async ollama"), stream=False)
            parts = [
                p async for p in await c.chat(model=MODEL, messages=user("sdk: async ollama, streamed"), stream=True)
            ]
            return whole, parts

    whole, parts = asyncio.run(main())
    first, second = recorded(db)
    assert tokens(first) == usage(whole.prompt_eval_count, whole.eval_count) == served(sim.served[-2])
    assert tokens(second) == usage(parts[-1].prompt_eval_count, parts[-1].eval_count) == served(sim.served[-1])
    assert shape(first)[1:] == ("ok", 1, False, "reported") and shape(second)[1:] == ("ok", 1, True, "reported")


@pytest.mark.support("Ollama", "cache")
def test_cached_prompt_input_is_counted_not_zero(db: Path, client: Any, sim: Simulator) -> None:
    messages = user("sdk: ollama, the same prompt twice")
    first = client.chat(model=MODEL, messages=messages, stream=False)
    parts = list(client.chat(model=MODEL, messages=messages, stream=True))  # the runner's cache: no prompt_eval_count
    assert parts[-1].prompt_eval_count is None and sim.served[-1].cached_tokens == first.prompt_eval_count

    evaluated, cached = recorded(db)
    assert tokens(evaluated) == usage(first.prompt_eval_count, first.eval_count)
    # Ollama left prompt_eval_count out: tokentrail counts the prompt (never 0, never "reported").
    assert cached["output_tokens"] == parts[-1].eval_count and cached["input_tokens"] > 0
    assert (cached["input_source"], cached["output_source"]) in {("counted", "reported"), ("estimated", "reported")}
    assert cached["usage_source"] != "reported" and cached["status"] == "ok" and cached["stream"] is True


@pytest.mark.support("Ollama", "non-stream", "reasoning")
def test_thinking_is_inside_eval_count(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.chat(model="qwen3", messages=user("sdk: think about tokens"), think=True, stream=False)
    [call] = recorded(db)
    assert reply.message.thinking and sim.served[-1].reasoning_tokens > 0
    assert tokens(call) == served(sim.served[-1]) == usage(reply.prompt_eval_count, reply.eval_count)
    assert call["reasoning_tokens"] is None  # not reported apart
    assert shape(call) == ("ollama.chat", "ok", 1, False, "reported")


@pytest.mark.support("Ollama", "non-stream", "tool use")
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
    reply = client.chat(model=MODEL, messages=user("sdk: please lookup the weather"), tools=tools, stream=False)
    assert reply.message.tool_calls
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) == usage(reply.prompt_eval_count, reply.eval_count)
    assert shape(call) == ("ollama.chat", "ok", 1, False, "reported")


@pytest.mark.support("Ollama", "non-stream")
def test_embed(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.embed(model="nomic-embed-text", input=["sdk: hello", "sdk: world"])
    [call] = recorded(db)
    assert tokens(call) == usage(reply.prompt_eval_count, 0) == usage(sim.served[-1].input_tokens, 0)
    assert shape(call) == ("ollama.embed", "ok", 1, False, "reported")


@pytest.mark.support("Ollama", "non-stream")
def test_429_then_the_callers_retry(db: Path, sim: Simulator) -> None:
    # The ollama SDK does not retry; a caller's identical retry moments later is attempt 2.
    messages = user("sdk: ollama, retry me")
    with ollama.Client(host=sim.url, headers={FAULT_HEADER: "429*1"}) as c:
        with pytest.raises(ollama.ResponseError):
            c.chat(model=MODEL, messages=messages, stream=False)
        c.chat(model=MODEL, messages=messages, stream=False)
    failed, ok = recorded(db)
    assert shape(failed) == ("ollama.chat", "http_error", 1, False, "missing") and failed["http_status"] == 429
    assert shape(ok) == ("ollama.chat", "ok", 2, False, "reported") and tokens(ok) == served(sim.served[-1])


@pytest.mark.support("Ollama", "stream")
def test_cut_stream(db: Path, sim: Simulator) -> None:
    with ollama.Client(host=sim.url, headers={FAULT_HEADER: "cut:2"}) as c:
        with pytest.raises(httpx.TransportError):
            for _ in c.chat(model=MODEL, messages=user("sdk: ollama, cut me off"), stream=True):
                pass
    [call] = recorded(db)
    # The counts come only with the final line, which never arrived: the prompt is counted, and the
    # output from the text that did arrive, a floor.
    assert call["input_tokens"] > 0 and 0 < call["output_tokens"] < sim.served[-1].output_tokens
    assert {"stream_incomplete", "count_floor"} <= set(call["flags"])
    assert shape(call)[:4] == ("ollama.chat", "network_error", 1, True)
