"""The simulator's Gemini API against the real `google-genai` SDK (sync, async on aiohttp and on httpx2).

google-genai sends sync requests through httpx2 (its default backend), and async ones through aiohttp
when aiohttp is installed (else httpx2). Expected counts follow `tokentrail.sim.gemini`'s rule: the
text of every part on o200k_base, no hidden tokens.
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

genai = pytest.importorskip("google.genai")
httpx2 = pytest.importorskip("httpx2")
from google.genai import errors, types  # noqa: E402

FLASH = "gemini-2.5-flash"
NO_RETRY = types.HttpRetryOptions(attempts=1)
FAST_RETRY = types.HttpRetryOptions(attempts=3, initial_delay=0.0, max_delay=0.0, jitter=0.0)
# aiohttp 3.14 warns about google-genai's ClientSession subclass; that is theirs, not ours.
AIOHTTP_SUBCLASS_WARNING = "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"


def options(sim: Simulator, **kwargs: Any) -> Any:
    return types.HttpOptions(base_url=sim.url, api_version="v1beta", **kwargs)


@pytest.fixture()
def client(sim: Simulator) -> Iterator[Any]:
    with genai.Client(api_key="test-key", http_options=options(sim)) as c:
        yield c


def test_generate_content_usage(sim: Simulator, client: Any) -> None:
    mark = Mark(sim)
    config = types.GenerateContentConfig(system_instruction="You are terse.")
    first = client.models.generate_content(model=FLASH, contents="Count my tokens.", config=config)
    second = client.models.generate_content(model=FLASH, contents="Count my tokens.", config=config)

    assert first.text and first.text == second.text
    [candidate] = first.candidates
    assert candidate.finish_reason == types.FinishReason.STOP and candidate.content.role == "model"
    assert first.model_version == FLASH and first.response_id
    usage = first.usage_metadata
    prompt = tokens("You are terse.") + tokens("Count my tokens.")
    assert usage.prompt_token_count == prompt
    assert usage.candidates_token_count == tokens(first.text) and 12 <= usage.candidates_token_count <= 60
    assert usage.total_token_count == prompt + usage.candidates_token_count
    assert usage.thoughts_token_count is None and usage.cached_content_token_count is None
    assert [(d.modality, d.token_count) for d in usage.prompt_tokens_details] == [(types.MediaModality.TEXT, prompt)]
    served = mark.new[0]
    assert (served.path, served.model, served.stream) == (f"/v1beta/models/{FLASH}:generateContent", FLASH, False)
    assert (served.input_tokens, served.output_tokens, served.reasoning_tokens, served.usage_sent) == (
        prompt,
        usage.candidates_token_count,
        0,
        True,
    )

    counted = client.models.count_tokens(model=FLASH, contents="Count my tokens.")
    assert counted.total_tokens == tokens("Count my tokens.")


def test_stream_usage_is_cumulative(sim: Simulator, client: Any) -> None:
    whole = client.models.generate_content(model=FLASH, contents="Stream to me.")
    mark = Mark(sim)
    chunks = list(client.models.generate_content_stream(model=FLASH, contents="Stream to me."))

    assert len(chunks) >= 4
    assert "".join(c.text for c in chunks) == whole.text
    assert all(c.usage_metadata.prompt_token_count == whole.usage_metadata.prompt_token_count for c in chunks)
    counts = [c.usage_metadata.candidates_token_count for c in chunks]
    assert counts == sorted(counts) and counts[0] < counts[-1] == whole.usage_metadata.candidates_token_count
    assert all(
        c.usage_metadata.total_token_count == c.usage_metadata.prompt_token_count + n
        for c, n in zip(chunks, counts, strict=True)
    )
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    [served] = mark.new
    assert served.stream and served.usage_sent and served.path.endswith(":streamGenerateContent")


def test_json_array_stream_and_vertex_paths(sim: Simulator) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Array stream."}]}]}
    with httpx.Client(base_url=sim.url) as http:
        sse = http.post(f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", json=body)
        array = http.post(f"/v1beta/models/{FLASH}:streamGenerateContent", json=body)
        vertex = http.post(
            f"/v1/projects/p/locations/us-central1/publishers/google/models/{FLASH}:streamGenerateContent", json=body
        )
        express = http.post(f"/v1/publishers/google/models/{FLASH}:generateContent", json=body)
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert array.headers["content-type"].startswith("application/json")
    from_sse = [json.loads(line[6:]) for line in sse.text.splitlines() if line.startswith("data: ")]
    assert [c["candidates"] for c in json.loads(array.text)] == [c["candidates"] for c in from_sse]
    assert json.loads(vertex.text)[-1]["usageMetadata"] == from_sse[-1]["usageMetadata"]
    assert (
        express.json()["usageMetadata"]["candidatesTokenCount"] == from_sse[-1]["usageMetadata"]["candidatesTokenCount"]
    )
    assert [c.model for c in sim.served[-4:]] == [FLASH] * 4


def test_vertex_with_credentials(sim: Simulator) -> None:
    from google.oauth2.credentials import Credentials

    with genai.Client(
        vertexai=True,
        project="proj",
        location="us-central1",
        credentials=Credentials(token="fake-token"),
        http_options=types.HttpOptions(base_url=sim.url, api_version="v1"),
    ) as c:
        resp = c.models.generate_content(model=FLASH, contents="Vertex hello.")
    assert resp.usage_metadata.prompt_token_count == tokens("Vertex hello.")
    assert (
        sim.served[-1].path
        == f"/v1/projects/proj/locations/us-central1/publishers/google/models/{FLASH}:generateContent"
    )


def test_thinking_tokens(sim: Simulator, client: Any) -> None:
    budget = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=16))
    resp = client.models.generate_content(model=FLASH, contents="Think a little.", config=budget)
    usage = resp.usage_metadata
    assert usage.thoughts_token_count == 16
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + 16
    assert (sim.served[-1].reasoning_tokens, sim.served[-1].output_tokens) == (16, usage.candidates_token_count + 16)

    pro = list(client.models.generate_content_stream(model="gemini-2.5-pro", contents="Think by default."))
    assert {c.usage_metadata.thoughts_token_count for c in pro} == {64}
    off = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=0))
    assert (
        client.models.generate_content(model=FLASH, contents="No.", config=off).usage_metadata.thoughts_token_count
        is None
    )


def test_max_output_tokens(client: Any) -> None:
    config = types.GenerateContentConfig(max_output_tokens=4)
    resp = client.models.generate_content(model=FLASH, contents="Go on and on.", config=config)
    assert resp.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert resp.usage_metadata.candidates_token_count <= 4


def test_function_call(client: Any) -> None:
    weather = types.FunctionDeclaration(
        name="lookup_weather",
        parameters=types.Schema(
            type="OBJECT", properties={"city": types.Schema(type="STRING"), "days": types.Schema(type="INTEGER")}
        ),
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    resp = client.models.generate_content(model=FLASH, contents="Please lookup the weather.", config=config)
    [call] = resp.function_calls
    assert call.name == "lookup_weather" and set(call.args) == {"city", "days"}
    args = json.dumps(call.args, separators=(",", ":"))
    assert resp.usage_metadata.candidates_token_count == tokens("lookup_weather") + tokens(args)
    [chunk] = list(
        client.models.generate_content_stream(model=FLASH, contents="Please lookup the weather.", config=config)
    )
    assert chunk.function_calls[0].args == call.args and chunk.candidates[0].finish_reason == types.FinishReason.STOP


def test_cached_content(sim: Simulator, client: Any) -> None:
    doc = long_text("gemini-cache")
    cache = client.caches.create(
        model=FLASH,
        config=types.CreateCachedContentConfig(
            contents=[types.Content(role="user", parts=[types.Part(text=doc)])], ttl="600s", display_name="doc"
        ),
    )
    assert cache.name.startswith("cachedContents/") and cache.usage_metadata.total_token_count == tokens(doc)
    assert (sim.served[-1].input_tokens, sim.served[-1].cache_write_tokens) == (tokens(doc), tokens(doc))

    config = types.GenerateContentConfig(cached_content=cache.name)
    resp = client.models.generate_content(model=FLASH, contents="Summarise it.", config=config)
    usage = resp.usage_metadata
    assert usage.cached_content_token_count == tokens(doc)
    assert usage.prompt_token_count == tokens(doc) + tokens("Summarise it.")
    served = sim.served[-1]
    assert (served.cached_tokens, served.input_tokens) == (tokens(doc), usage.prompt_token_count)

    chunks = list(client.models.generate_content_stream(model=FLASH, contents="Summarise it.", config=config))
    assert {c.usage_metadata.cached_content_token_count for c in chunks} == {tokens(doc)}


def test_embeddings(sim: Simulator, client: Any) -> None:
    resp = client.models.embed_content(model="gemini-embedding-001", contents=["hello world", "tokens are not words"])
    assert [len(e.values) for e in resp.embeddings] == [8, 8]
    assert resp.usage_metadata.prompt_token_count == tokens("hello world") + tokens("tokens are not words")
    served = sim.served[-1]
    assert served.path.endswith(":batchEmbedContents") and served.input_tokens == resp.usage_metadata.prompt_token_count
    with httpx.Client(base_url=sim.url) as http:
        single = http.post(
            "/v1beta/models/gemini-embedding-001:embedContent",
            json={"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 16},
        ).json()
    assert len(single["embedding"]["values"]) == 16 and single["usageMetadata"]["promptTokenCount"] == tokens(
        "hello world"
    )


def test_429_retry_and_errors(sim: Simulator) -> None:
    mark = Mark(sim)
    with genai.Client(
        api_key="k", http_options=options(sim, retry_options=FAST_RETRY, headers={FAULT_HEADER: "429*1"})
    ) as c:
        assert c.models.generate_content(model=FLASH, contents="Retry me once.").text
    assert [(s.status, s.fault) for s in mark.new] == [(429, "429"), (200, None)]

    with genai.Client(
        api_key="k", http_options=options(sim, retry_options=NO_RETRY, headers={FAULT_HEADER: "503"})
    ) as c:
        with pytest.raises(errors.ServerError) as info:
            c.models.generate_content(model=FLASH, contents="Fail.")
    assert (info.value.code, info.value.status) == (503, "UNAVAILABLE")
    with httpx.Client(base_url=sim.url) as http:
        limited = http.post(f"/v1beta/models/{FLASH}:generateContent", json={}, headers={FAULT_HEADER: "429"}).json()
        assert limited["error"]["status"] == "RESOURCE_EXHAUSTED" and limited["error"]["code"] == 429
        missing = http.post(f"/v1beta/models/{FLASH}:predict", json={})
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
        bad = http.post(f"/v1beta/models/{FLASH}:generateContent", json={"contents": []})
        assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_cut_and_nousage(sim: Simulator) -> None:
    mark = Mark(sim)
    received: list[Any] = []
    with genai.Client(api_key="k", http_options=options(sim, headers={FAULT_HEADER: "cut:2"})) as c:
        with pytest.raises(httpx2.TransportError):
            for chunk in c.models.generate_content_stream(model=FLASH, contents="Cut me off."):
                received.append(chunk)
    assert len(received) == 2
    with genai.Client(api_key="k", http_options=options(sim, headers={FAULT_HEADER: "nousage"})) as c:
        assert c.models.generate_content(model=FLASH, contents="No usage.").usage_metadata is None
        chunks = list(c.models.generate_content_stream(model=FLASH, contents="No usage."))
        assert chunks and all(ch.usage_metadata is None for ch in chunks)
    assert [(s.fault, s.usage_sent) for s in mark.new] == [("cut", False), ("nousage", False), ("nousage", False)]


async def _async_calls(sim: Simulator, tag: str, **http: Any) -> None:
    async with genai.Client(api_key="k", http_options=options(sim, retry_options=FAST_RETRY, **http)).aio as c:
        assert c._api_client._use_aiohttp() is (tag == "aiohttp")  # which transport the SDK picked
        whole = await c.models.generate_content(model=FLASH, contents="Async hello.")
        stream = await c.models.generate_content_stream(model=FLASH, contents="Async hello.")
        chunks = [chunk async for chunk in stream]
        assert "".join(ch.text for ch in chunks) == whole.text
        assert chunks[-1].usage_metadata.candidates_token_count == whole.usage_metadata.candidates_token_count
        fault = types.GenerateContentConfig(http_options=types.HttpOptions(headers={FAULT_HEADER: "429*1"}))
        retried = await c.models.generate_content(model=FLASH, contents=f"Async retry on {tag}.", config=fault)
        assert retried.text


@pytest.mark.filterwarnings(AIOHTTP_SUBCLASS_WARNING)
def test_async_on_aiohttp(sim: Simulator) -> None:
    pytest.importorskip("aiohttp")
    mark = Mark(sim)
    asyncio.run(_async_calls(sim, "aiohttp"))
    assert [s.status for s in mark.new] == [200, 200, 429, 200]


def test_async_on_httpx2(sim: Simulator) -> None:
    mark = Mark(sim)
    asyncio.run(_async_calls(sim, "httpx2", async_client_args={"transport": httpx2.AsyncHTTPTransport()}))
    assert [s.status for s in mark.new] == [200, 200, 429, 200]
