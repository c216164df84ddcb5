"""The real `mistralai` SDK (on httpx2). Mistral's chat endpoint is OpenAI-shaped (``POST /v1/chat/completions``),
so the simulator serves it; the OpenAI chat parser reads it.

Mistral's API sends the usage on the last stream chunk unasked; the simulator, like OpenAI, sends it
only with ``stream_options.include_usage``, which mistralai has no way to ask for. So a stream against
the simulator is recorded ``missing`` (null, never 0), and the Mistral stream itself is replayed from
its documented shape through ``httpx2.MockTransport`` (https://docs.mistral.ai/api/#tag/chat: the
final chunk carries ``finish_reason`` and ``usage``, then ``data: [DONE]``).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage
from tokentrail.sim import FAULT_HEADER, ServedCall, Simulator

pytest.importorskip("mistralai.client")
httpx2 = pytest.importorskip("httpx2")
from mistralai.client import Mistral  # noqa: E402
from mistralai.client.utils import BackoffStrategy, RetryConfig  # noqa: E402

SDK = "mistralai"
MODEL = "mistral-small-latest"
API = "openai.chat"


@pytest.fixture
def client(sim: Simulator) -> Iterator[Any]:
    with Mistral(api_key="test-key", server_url=sim.url) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def served(call: ServedCall) -> dict[str, Any]:
    # The simulator's OpenAI usage always has prompt_tokens_details.cached_tokens and reasoning_tokens.
    return usage(call.input_tokens, call.output_tokens, cache_read=call.cached_tokens, reasoning=call.reasoning_tokens)


@pytest.mark.support("Mistral", "non-stream")
def test_chat_complete(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.chat.complete(model=MODEL, messages=user("sdk: mistral complete"))
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1])
    assert (call["input_tokens"], call["output_tokens"]) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert shape(call) == (API, "ok", 1, False, "reported") and (call["model"], call["flags"]) == (MODEL, [])


@pytest.mark.support("Mistral", "non-stream")
def test_chat_complete_async(db: Path, sim: Simulator) -> None:
    async def main() -> Any:
        async with Mistral(api_key="test-key", server_url=sim.url) as c:
            return await c.chat.complete_async(model=MODEL, messages=user("sdk: mistral async"))

    reply = asyncio.run(main())
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and call["output_tokens"] == reply.usage.completion_tokens
    assert shape(call) == (API, "ok", 1, False, "reported")


def test_stream_without_usage_on_the_wire_is_counted(db: Path, client: Any, sim: Simulator) -> None:
    with client.chat.stream(model=MODEL, messages=user("sdk: mistral stream")) as events:
        chunks = list(events)
    assert chunks[-1].data.usage is None and not sim.served[-1].usage_sent
    [call] = recorded(db)
    # Mistral's tokenizer is not available offline: estimated with a named one, never reported.
    assert (call["input_source"], call["output_source"], call["tokenizer"]) == ("estimated", "estimated", "o200k_base")
    assert call["output_tokens"] == sim.served[-1].output_tokens  # the simulator counts with o200k too
    assert shape(call)[:4] == (API, "ok", 1, True) and call["flags"] == []


# -- Mistral's own stream, replayed -------------------------------------------------------------------

MISTRAL_STREAM = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Paris is"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": " the capital."}, "finish_reason": None}]},
    {
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "total_tokens": 16, "completion_tokens": 6},
    },
]


def _events() -> list[bytes]:
    common = {"id": "cmpl-e5cc70bb28c444948073e77776eb30ef", "object": "chat.completion.chunk", "created": 1702256327}
    events = [
        b"data: " + json.dumps({**common, "model": MODEL, **chunk}).encode() + b"\n\n" for chunk in MISTRAL_STREAM
    ]
    return [*events, b"data: [DONE]\n\n"]


def mistral_api(in_memory: bool) -> Any:
    """A transport answering as api.mistral.ai does: event by event like a network transport, or with
    the whole body in memory (how `httpx2.Response(content=bytes)` answers, e.g. in respx mocks)."""

    def handler(request: Any) -> Any:
        assert request.url.path == "/v1/chat/completions" and json.loads(request.content)["stream"] is True
        body = b"".join(_events()) if in_memory else iter(_events())
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.MockTransport(handler)


def stream_from(transport: Any, question: str) -> str:
    http = httpx2.Client(transport=transport)
    with Mistral(api_key="test-key", client=http) as c, http:  # the default server: api.mistral.ai
        with c.chat.stream(model=MODEL, messages=user(question)) as events:
            return "".join(e.data.choices[0].delta.content or "" for e in events)


@pytest.mark.support("Mistral", "stream")
def test_mistral_stream_usage_on_the_last_chunk(db: Path) -> None:
    assert stream_from(mistral_api(in_memory=False), "sdk: capital of France?") == "Paris is the capital."
    [call] = recorded(db)
    assert tokens(call) == usage(10, 6)
    assert shape(call) == (API, "ok", 1, True, "reported") and call["provider"] == "mistral"


def test_mistral_stream_from_an_in_memory_body(db: Path) -> None:
    assert stream_from(mistral_api(in_memory=True), "sdk: France's capital?") == "Paris is the capital."
    gc.collect()  # today the record only appears here: collected now, not in a later test's ledger
    [call] = recorded(db)
    assert tokens(call) == usage(10, 6) and shape(call) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Mistral", "non-stream", "tool use")
def test_tool_call(db: Path, client: Any, sim: Simulator) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "lookup_weather",
                "description": "Weather by city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    reply = client.chat.complete(model=MODEL, messages=user("sdk: please lookup the weather"), tools=tools)
    assert reply.choices[0].message.tool_calls
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1]) and call["output_tokens"] == reply.usage.completion_tokens
    assert shape(call) == (API, "ok", 1, False, "reported")


@pytest.mark.support("Mistral", "non-stream")
def test_retry_after_429_is_two_attempts(db: Path, client: Any, sim: Simulator) -> None:
    # Speakeasy SDKs send no retry header: the attempt number comes from the identical failed request.
    retries = RetryConfig("backoff", BackoffStrategy(1, 1, 1.0, 1000), retry_connection_errors=False)
    client.chat.complete(
        model=MODEL, messages=user("sdk: mistral, retry me"), retries=retries, http_headers={FAULT_HEADER: "429*1"}
    )
    failed, ok = recorded(db)
    assert [s.status for s in sim.served[-2:]] == [429, 200]
    assert shape(failed) == (API, "http_error", 1, False, "missing") and failed["http_status"] == 429
    assert shape(ok) == (API, "ok", 2, False, "reported") and tokens(ok) == served(sim.served[-1])
