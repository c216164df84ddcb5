"""The real `google-genai` SDK against the simulator: sync on httpx2, async on aiohttp (its default when
aiohttp is installed) and on httpx2.

Gemini's ``usageMetadata`` is proto3 JSON: a count of 0 is left out, so an optional count the server
did not send (cache, thoughts) is null in the record, not 0. ``thoughtsTokenCount`` is apart from
``candidatesTokenCount``: output is their sum, reasoning the thoughts. Stream chunks carry cumulative
usage: the record equals the last chunk, never the sum.
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

genai = pytest.importorskip("google.genai")
httpx2 = pytest.importorskip("httpx2")
from google.genai import types  # noqa: E402

SDK = "google-genai"
FLASH = "gemini-2.5-flash"
API = "gemini.generate"
FAST_RETRY = types.HttpRetryOptions(attempts=3, initial_delay=0.0, max_delay=0.0, jitter=0.0)


def options(sim: Simulator, **kwargs: Any) -> Any:
    return types.HttpOptions(base_url=sim.url, api_version="v1beta", **kwargs)


@pytest.fixture
def client(sim: Simulator) -> Iterator[Any]:
    with genai.Client(api_key="test-key", http_options=options(sim)) as c:
        yield c


def served(call: ServedCall) -> dict[str, Any]:
    """What a record of this served answer must hold: zero optional counts are absent on the wire."""
    return usage(
        call.input_tokens,
        call.output_tokens,
        cache_read=call.cached_tokens or None,
        reasoning=call.reasoning_tokens or None,
    )


@pytest.mark.support("Gemini", "non-stream")
def test_generate_content_sync(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.models.generate_content(model=FLASH, contents="sdk: sync generate")
    [call] = recorded(db)
    meta = reply.usage_metadata
    assert tokens(call) == served(sim.served[-1]) == usage(meta.prompt_token_count, meta.candidates_token_count)
    assert call["total_tokens"] == meta.total_token_count
    assert shape(call) == (API, "ok", 1, False, "reported") and (call["model"], call["flags"]) == (FLASH, [])


async def _async_generate(sim: Simulator, **http: Any) -> tuple[Any, list[Any]]:
    async with genai.Client(api_key="test-key", http_options=options(sim, **http)).aio as c:
        assert c._api_client._use_aiohttp() is not bool(http)  # which transport the SDK picked
        whole = await c.models.generate_content(model=FLASH, contents="sdk: async generate")
        chunks = [chunk async for chunk in await c.models.generate_content_stream(model=FLASH, contents="sdk: async")]
        return whole, chunks


@pytest.mark.support("Gemini", "non-stream", "stream")
@pytest.mark.parametrize("transport", ["aiohttp", "httpx2"])
def test_async_generate_and_stream(db: Path, sim: Simulator, transport: str) -> None:
    http: dict[str, Any] = {}
    if transport == "httpx2":
        http["async_client_args"] = {"transport": httpx2.AsyncHTTPTransport()}
    else:
        pytest.importorskip("aiohttp")
    whole, chunks = asyncio.run(_async_generate(sim, **http))
    first, second = recorded(db)
    served_whole, served_stream = sim.served[-2:]
    assert tokens(first) == served(served_whole)
    assert first["output_tokens"] == whole.usage_metadata.candidates_token_count
    assert tokens(second) == served(served_stream)
    assert second["output_tokens"] == chunks[-1].usage_metadata.candidates_token_count
    assert shape(first) == (API, "ok", 1, False, "reported") and shape(second) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Gemini", "stream")
def test_stream_usage_is_the_last_chunk_not_the_sum(db: Path, client: Any, sim: Simulator) -> None:
    chunks = list(client.models.generate_content_stream(model=FLASH, contents="sdk: stream to me"))
    counts = [c.usage_metadata.candidates_token_count for c in chunks]
    assert len(chunks) >= 3 and counts == sorted(counts) and sum(counts) > counts[-1]
    [call] = recorded(db)
    last = chunks[-1].usage_metadata
    assert tokens(call) == served(sim.served[-1]) == usage(last.prompt_token_count, last.candidates_token_count)
    assert shape(call) == (API, "ok", 1, True, "reported") and call["flags"] == []


@pytest.mark.support("Gemini", "non-stream", "stream", "reasoning")
def test_thinking_tokens_are_reasoning_and_output(db: Path, client: Any, sim: Simulator) -> None:
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=48))
    reply = client.models.generate_content(model=FLASH, contents="sdk: think about it", config=config)
    served_whole = sim.served[-1]
    chunks = list(client.models.generate_content_stream(model=FLASH, contents="sdk: think about it", config=config))
    served_stream = sim.served[-1]

    whole, streamed = recorded(db)
    meta = reply.usage_metadata
    assert meta.thoughts_token_count == served_whole.reasoning_tokens == 48
    assert (
        tokens(whole)
        == served(served_whole)
        == usage(meta.prompt_token_count, meta.candidates_token_count + meta.thoughts_token_count, reasoning=48)
    )
    last = chunks[-1].usage_metadata
    assert (
        tokens(streamed)
        == served(served_stream)
        == usage(last.prompt_token_count, last.candidates_token_count + last.thoughts_token_count, reasoning=48)
    )
    assert shape(whole) == (API, "ok", 1, False, "reported") and shape(streamed) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Gemini", "non-stream", "stream", "cache")
def test_cached_content_is_read_from_the_cache(db: Path, client: Any, sim: Simulator) -> None:
    cache = client.caches.create(
        model=FLASH,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=long_text("sdk-gemini-cache"))])], ttl="600s"
        ),
    )
    config = types.GenerateContentConfig(cached_content=cache.name)
    reply = client.models.generate_content(model=FLASH, contents="sdk: summarise it", config=config)
    served_whole = sim.served[-1]
    chunks = list(client.models.generate_content_stream(model=FLASH, contents="sdk: summarise it", config=config))

    # Creating the cache is not a model call: only the two generations are recorded.
    whole, streamed = recorded(db)
    cached = reply.usage_metadata.cached_content_token_count
    assert cached >= 1024 and served_whole.cached_tokens == cached
    # promptTokenCount already includes the cached content.
    assert (
        tokens(whole)
        == served(served_whole)
        == usage(
            reply.usage_metadata.prompt_token_count, reply.usage_metadata.candidates_token_count, cache_read=cached
        )
    )
    assert tokens(streamed) == served(sim.served[-1]) and streamed["cache_read_tokens"] == cached
    assert chunks[-1].usage_metadata.cached_content_token_count == cached
    assert shape(whole) == (API, "ok", 1, False, "reported") and shape(streamed) == (API, "ok", 1, True, "reported")


@pytest.mark.support("Gemini", "non-stream", "tool use")
def test_function_call(db: Path, client: Any, sim: Simulator) -> None:
    tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="lookup_weather",
                description="Weather by city.",
                parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}),
            )
        ]
    )
    config = types.GenerateContentConfig(
        tools=[tool], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
    )
    reply = client.models.generate_content(model=FLASH, contents="sdk: please lookup the weather", config=config)
    assert reply.function_calls and reply.function_calls[0].name == "lookup_weather"
    [call] = recorded(db)
    assert tokens(call) == served(sim.served[-1])
    assert call["output_tokens"] == reply.usage_metadata.candidates_token_count
    assert shape(call) == (API, "ok", 1, False, "reported")


@pytest.mark.support("Gemini", "non-stream")
def test_embed_content(db: Path, client: Any, sim: Simulator) -> None:
    reply = client.models.embed_content(model="gemini-embedding-001", contents=["sdk: hello", "sdk: tokens"])
    [call] = recorded(db)
    assert sim.served[-1].path.endswith(":batchEmbedContents")
    assert tokens(call) == usage(sim.served[-1].input_tokens, 0) == usage(reply.usage_metadata.prompt_token_count, 0)
    assert shape(call) == ("gemini.embed", "ok", 1, False, "reported")


@pytest.mark.support("Gemini", "non-stream")
def test_retry_after_429_is_two_attempts(db: Path, sim: Simulator) -> None:
    # google-genai sends no retry header: the attempt number comes from the identical failed request.
    http = options(sim, retry_options=FAST_RETRY, headers={FAULT_HEADER: "429*1"})
    with genai.Client(api_key="test-key", http_options=http) as c:
        c.models.generate_content(model=FLASH, contents="sdk: retry me once")
    failed, ok = recorded(db)
    assert [s.status for s in sim.served[-2:]] == [429, 200]
    assert shape(failed) == (API, "http_error", 1, False, "missing") and failed["http_status"] == 429
    assert shape(ok) == (API, "ok", 2, False, "reported") and tokens(ok) == served(sim.served[-1])


@pytest.mark.support("Gemini", "stream")
def test_cut_stream(db: Path, sim: Simulator) -> None:
    with genai.Client(api_key="test-key", http_options=options(sim, headers={FAULT_HEADER: "cut:2"})) as c:
        with pytest.raises(httpx2.TransportError):
            for _ in c.models.generate_content_stream(model=FLASH, contents="sdk: cut me off"):
                pass
    [call] = recorded(db)
    assert sim.served[-1].fault == "cut"
    # Two cumulative chunks arrived: their usage is a floor on both sides.
    assert shape(call) == (API, "network_error", 1, True, "partial") and "stream_incomplete" in call["flags"]
    assert call["input_tokens"] == sim.served[-1].input_tokens
    assert 0 < call["output_tokens"] < sim.served[-1].output_tokens
