"""The simulator's Ollama native API against the real `ollama` SDK (sync and async, both on httpx).

The SDK's methods default to `stream=False` (the server's default is a stream), so the tests say which.
Expected counts follow `tokentrail.sim.ollama`'s rule, the OpenAI chat rule on o200k_base: 3 per
message plus every string field, plus 3 priming the reply. Prompts are unique per test, because a
repeated prompt is a runner cache hit and drops `prompt_eval_count`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tokentrail.sim import FAULT_HEADER, Simulator

from .helpers import Mark, tokens

ollama = pytest.importorskip("ollama")

MODEL = "llama3.2"
METRICS = {
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}


@pytest.fixture()
def client(sim: Simulator) -> Iterator[Any]:
    with ollama.Client(host=sim.url) as c:
        yield c


def chat_tokens(messages: list[dict[str, str]]) -> int:
    return 3 + sum(3 + sum(tokens(v) for v in m.values()) for m in messages)


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def test_chat_then_cached_prompt_omits_prompt_eval_count(sim: Simulator, client: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *user("Count my tokens, Ollama.")]
    mark = Mark(sim)
    first = client.chat(model=MODEL, messages=messages, stream=False)
    assert first.done and first.done_reason == "stop" and first.message.role == "assistant"
    assert first.prompt_eval_count == chat_tokens(messages)
    assert first.eval_count == tokens(first.message.content) and 12 <= first.eval_count <= 60
    assert first.total_duration > first.load_duration > 0 and first.eval_duration > 0
    assert set(first.model_dump(exclude_none=True)) >= METRICS

    parts = list(client.chat(model=MODEL, messages=messages, stream=True))  # same prompt: a cache hit
    *body, final = parts
    assert all(not p.done for p in body) and final.done and final.done_reason == "stop"
    assert "".join(p.message.content for p in parts) == first.message.content
    assert final.prompt_eval_count is None and final.prompt_eval_duration is None
    assert final.eval_count == first.eval_count
    assert [(s.stream, s.input_tokens, s.cached_tokens, s.usage_sent) for s in mark.new] == [
        (False, first.prompt_eval_count, 0, True),
        (True, first.prompt_eval_count, first.prompt_eval_count, True),
    ]


def test_default_stream_is_ndjson(sim: Simulator) -> None:
    body = {"model": MODEL, "messages": user("Stream by default.")}
    with httpx.Client(base_url=sim.url) as http:
        resp = http.post("/api/chat", json=body)
    assert resp.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert len(lines) >= 3 and [x["done"] for x in lines] == [False] * (len(lines) - 1) + [True]
    assert set(lines[-1]) >= METRICS | {"model", "created_at", "message", "done_reason"}
    assert lines[-1]["prompt_eval_count"] == chat_tokens(body["messages"])  # type: ignore[arg-type]
    assert sim.served[-1].stream


def test_generate(sim: Simulator, client: Any) -> None:
    resp = client.generate(model=MODEL, prompt="Why is the sky blue?", system="Answer briefly.", stream=False)
    expected = chat_tokens([{"role": "system", "content": "Answer briefly."}, *user("Why is the sky blue?")])
    assert resp.response and resp.prompt_eval_count == expected and resp.eval_count == tokens(resp.response)
    parts = list(
        client.generate(
            model=MODEL, prompt="Why is the grass green?", raw=True, options={"num_predict": 5}, stream=True
        )
    )
    final = parts[-1]
    assert final.done_reason == "length" and final.eval_count <= 5
    assert final.prompt_eval_count == tokens("Why is the grass green?")
    assert "".join(p.response for p in parts) and sim.served[-1].path == "/api/generate"
    loaded = client.generate(model=MODEL, stream=False)
    assert loaded.done_reason == "load" and loaded.prompt_eval_count is None


def test_thinking_and_tool_calls(sim: Simulator, client: Any) -> None:
    resp = client.chat(model="qwen3", messages=user("Think about tokens."), think=True, stream=False)
    assert resp.message.thinking and resp.message.content
    assert resp.eval_count == tokens(resp.message.thinking) + tokens(resp.message.content)
    assert sim.served[-1].reasoning_tokens == tokens(resp.message.thinking)
    parts = list(client.chat(model="qwen3", messages=user("Think about tokens."), think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == resp.message.thinking

    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "lookup_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    call = client.chat(model=MODEL, messages=user("Please lookup the weather."), tools=tools, stream=False)
    [tool_call] = call.message.tool_calls
    assert tool_call.function.name == "lookup_weather" and set(tool_call.function.arguments) == {"city"}
    parts = client.chat(model=MODEL, messages=user("Please lookup the weather."), tools=tools, stream=True)
    streamed = [p for p in parts if p.message.tool_calls]
    assert [p.message.tool_calls[0].function.arguments for p in streamed] == [tool_call.function.arguments]


def test_embeddings(sim: Simulator, client: Any) -> None:
    resp = client.embed(model="nomic-embed-text", input=["hello world", "tokens are not words"])
    assert [len(v) for v in resp.embeddings] == [8, 8]
    assert resp.prompt_eval_count == tokens("hello world") + tokens("tokens are not words")
    assert sim.served[-1].input_tokens == resp.prompt_eval_count and sim.served[-1].usage_sent
    legacy = client.embeddings(model="nomic-embed-text", prompt="hello world")
    assert legacy.embedding == resp.embeddings[0]
    with httpx.Client(base_url=sim.url) as http:
        raw = http.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": "hello world"}).json()
    assert set(raw) == {"embedding"} and not sim.served[-1].usage_sent


def test_429_retry_errors_cut_and_nousage(sim: Simulator) -> None:
    mark = Mark(sim)
    messages = user("Retry me once, Ollama.")
    with ollama.Client(host=sim.url, headers={FAULT_HEADER: "429*1"}) as c:
        with pytest.raises(ollama.ResponseError) as info:  # the ollama SDK does not retry
            c.chat(model=MODEL, messages=messages, stream=False)
        assert info.value.status_code == 429 and info.value.error == "The simulator injected this error."
        assert c.chat(model=MODEL, messages=messages, stream=False).message.content
    assert [(s.status, s.fault) for s in mark.new] == [(429, "429"), (200, None)]

    received: list[Any] = []
    with ollama.Client(host=sim.url, headers={FAULT_HEADER: "cut:2"}) as c:
        with pytest.raises(httpx.TransportError):
            for part in c.chat(model=MODEL, messages=user("Cut me off, Ollama."), stream=True):
                received.append(part)
    assert len(received) == 2 and (sim.served[-1].fault, sim.served[-1].usage_sent) == ("cut", False)

    with ollama.Client(host=sim.url, headers={FAULT_HEADER: "nousage"}) as c:
        final = list(c.chat(model=MODEL, messages=user("No usage, Ollama."), stream=True))[-1]
    assert final.done and final.prompt_eval_count is None and final.eval_count is None
    assert (sim.served[-1].fault, sim.served[-1].usage_sent) == ("nousage", False)

    with httpx.Client(base_url=sim.url) as http:
        assert http.post("/api/tags").json() == {"error": "Invalid URL (POST /api/tags)"}
        assert http.post("/api/chat", json={"messages": []}).status_code == 400


def test_async_sdk(sim: Simulator) -> None:
    async def main() -> None:
        async with ollama.AsyncClient(host=sim.url) as c:
            whole = await c.chat(model=MODEL, messages=user("Async Ollama."), stream=False)
            parts = [p async for p in await c.chat(model=MODEL, messages=user("Async Ollama, streamed."), stream=True)]
            assert whole.prompt_eval_count == chat_tokens(user("Async Ollama."))
            assert parts[-1].prompt_eval_count == chat_tokens(user("Async Ollama, streamed."))
            embedded = await c.embed(model="nomic-embed-text", input="async")
            assert embedded.prompt_eval_count == tokens("async")

    asyncio.run(main())
