"""`litellm` against the simulator: a library that wraps other SDKs (openai) or speaks a provider's wire
itself (Anthropic, Ollama), on httpx; its async path sends through httpx over an aiohttp transport.
Whatever the layers, each HTTP attempt is exactly one record, never two.

litellm needs openai 2.x, so these tests run in the second CI leg (.venv-openai2) and are skipped where
litellm is not installed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage
from tests.sim.helpers import Mark
from tokentrail.sim import FAULT_HEADER, ServedCall, Simulator

# Offline: the bundled model-cost map, no Hugging Face lookups.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
litellm = pytest.importorskip("litellm")

SDK = "litellm"
MESSAGES = [{"role": "user", "content": "sdk: litellm says hello"}]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def openai_usage(call: ServedCall) -> dict[str, Any]:
    return usage(call.input_tokens, call.output_tokens, cache_read=call.cached_tokens, reasoning=call.reasoning_tokens)


def anthropic_usage(call: ServedCall) -> dict[str, Any]:
    return usage(
        call.input_tokens, call.output_tokens, cache_read=call.cached_tokens, cache_write=call.cache_write_tokens
    )


def one_record_per_attempt(db: Path, mark: Mark) -> list[dict[str, Any]]:
    calls = recorded(db)
    assert len(calls) == len(mark.new), "one record per HTTP attempt the server saw, never two"
    return calls


@pytest.mark.support("OpenAI via litellm", "non-stream")
def test_openai_shaped(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    reply = litellm.completion(
        model="openai/gpt-4o-mini", api_base=sim.url + "/v1", api_key="sk-test", messages=user("sdk: litellm openai")
    )
    [call] = one_record_per_attempt(db, mark)
    assert tokens(call) == openai_usage(sim.served[-1]) and call["output_tokens"] == reply.usage.completion_tokens
    assert shape(call) == ("openai.chat", "ok", 1, False, "reported") and call["model"] == "gpt-4o-mini"


@pytest.mark.support("OpenAI via litellm", "stream")
def test_openai_shaped_stream(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    stream = litellm.completion(
        model="openai/gpt-4o-mini",
        api_base=sim.url + "/v1",
        api_key="sk-test",
        messages=user("sdk: litellm openai stream"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks
    [call] = one_record_per_attempt(db, mark)
    assert tokens(call) == openai_usage(sim.served[-1])
    assert shape(call) == ("openai.chat", "ok", 1, True, "reported")


@pytest.mark.support("OpenAI via litellm", "non-stream")
def test_async_is_one_record_not_two(db: Path, sim: Simulator) -> None:
    # litellm's async client is httpx over its aiohttp transport: two hooked libraries, one attempt.
    async def main() -> Any:
        return await litellm.acompletion(
            model="openai/gpt-4o-mini", api_base=sim.url + "/v1", api_key="sk-test", messages=user("sdk: litellm async")
        )

    mark = Mark(sim)
    asyncio.run(main())
    [call] = one_record_per_attempt(db, mark)
    assert tokens(call) == openai_usage(sim.served[-1]) and shape(call) == ("openai.chat", "ok", 1, False, "reported")


@pytest.mark.support("OpenAI via litellm", "non-stream")
def test_retry_after_429_is_two_attempts(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    litellm.completion(
        model="openai/gpt-4o-mini",
        api_base=sim.url + "/v1",
        api_key="sk-test",
        messages=user("sdk: litellm, retry me"),
        extra_headers={FAULT_HEADER: "429*1"},
    )
    failed, ok = one_record_per_attempt(db, mark)
    assert shape(failed) == ("openai.chat", "http_error", 1, False, "missing")
    assert shape(ok) == ("openai.chat", "ok", 2, False, "reported") and tokens(ok) == openai_usage(sim.served[-1])


@pytest.mark.support("Anthropic via litellm", "non-stream")
def test_anthropic_shaped(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    reply = litellm.completion(
        model="anthropic/claude-sonnet-4-6",
        api_base=sim.url,
        api_key="sk-ant-test",
        messages=user("sdk: litellm anthropic"),
    )
    [call] = one_record_per_attempt(db, mark)
    assert tokens(call) == anthropic_usage(sim.served[-1]) and call["output_tokens"] == reply.usage.completion_tokens
    assert shape(call) == ("anthropic.messages", "ok", 1, False, "reported")


def test_anthropic_shaped_stream(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)

    def consume() -> None:
        chunks = list(
            litellm.completion(
                model="anthropic/claude-sonnet-4-6",
                api_base=sim.url,
                api_key="sk-ant-test",
                messages=user("sdk: litellm anthropic stream"),
                stream=True,
            )
        )
        assert chunks[-1].choices[0].finish_reason == "stop"

    consume()
    # litellm stops reading at the message_delta with the stop reason and leaves the response open
    # (its logging holds it for seconds): the record is made at that final event, not at collection.
    [call] = one_record_per_attempt(db, mark)
    assert tokens(call) == anthropic_usage(sim.served[-1])
    assert shape(call) == ("anthropic.messages", "ok", 1, True, "reported") and call["flags"] == []


@pytest.mark.support("Ollama via litellm", "non-stream")
@pytest.mark.parametrize(
    ("model", "api"), [("ollama/llama3", "ollama.generate"), ("ollama_chat/llama3", "ollama.chat")]
)
def test_ollama_shaped(db: Path, sim: Simulator, model: str, api: str) -> None:
    mark = Mark(sim)
    reply = litellm.completion(model=model, api_base=sim.url, messages=user(f"sdk: litellm {model}"))
    [call] = one_record_per_attempt(db, mark)
    assert tokens(call) == usage(sim.served[-1].input_tokens, sim.served[-1].output_tokens)
    assert call["output_tokens"] == reply.usage.completion_tokens
    assert shape(call) == (api, "ok", 1, False, "reported") and call["model"] == "llama3"
