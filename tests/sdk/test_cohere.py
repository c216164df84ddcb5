"""The real `cohere` SDK (v2 client, on httpx). The simulator does not speak Cohere, so the SDK's own
``httpx_client`` gets an ``httpx.MockTransport`` answering with the documented v2 payloads of
``tests/payloads/cohere/`` (their SOURCE.md cites each), event by event for streams.

Cohere reports two counts: ``billed_units`` (what is billed) and ``tokens`` (which also counts tokens
Cohere adds and does not charge for). tokentrail's input and output are the billed units; ``tokens``
stays in the raw usage (`tokentrail.wire.cohere`).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage

cohere = pytest.importorskip("cohere")

SDK = "cohere"
MODEL = "command-a-03-2025"
PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "cohere"


def payload(name: str) -> dict[str, Any]:
    return json.loads((PAYLOADS / name).read_text())


def sse_events(name: str) -> list[bytes]:
    text = (PAYLOADS / name).read_bytes()
    return [event + b"\n\n" for event in text.strip().split(b"\n\n")]


class CohereAPI:
    """Answers /v2/chat and /v2/embed from the payload files; `plan` names the next answers."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.in_memory = False
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        name = self.plan.pop(0)
        if name == "429":
            return httpx.Response(429, headers={"retry-after-ms": "1"}, json={"message": "Too many requests"})
        if name.endswith(".sse"):
            assert request.url.path == "/v2/chat" and body["stream"] is True
            events = sse_events(name)
            content: Any = b"".join(events) if self.in_memory else iter(events)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=content)
        assert request.url.path == ("/v2/embed" if name.startswith("embed") else "/v2/chat")
        return httpx.Response(200, json=payload(name))


@pytest.fixture
def api() -> CohereAPI:
    return CohereAPI()


@pytest.fixture
def client(api: CohereAPI) -> Iterator[Any]:
    with httpx.Client(transport=httpx.MockTransport(api)) as http:
        yield cohere.ClientV2(api_key="test-key", httpx_client=http, max_retries=2)


def billed(name: str) -> dict[str, Any]:
    """The record a payload must give: its billed units (cached_tokens, when sent, is the cache read)."""
    data = payload(name)["usage"]
    units = data["billed_units"]
    return usage(units["input_tokens"], units["output_tokens"], cache_read=data.get("cached_tokens"))


@pytest.mark.support("Cohere", "non-stream")
def test_chat(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["chat_v2_basic.json"]
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "sdk: what are LLMs?"}])
    [call] = recorded(db)
    assert tokens(call) == billed("chat_v2_basic.json") == usage(17, 239)
    assert reply.usage.billed_units.input_tokens == 17 and reply.usage.tokens.input_tokens == 83
    assert shape(call) == ("cohere.chat", "ok", 1, False, "reported")
    assert (call["provider"], call["model"], call["flags"]) == ("cohere", MODEL, [])
    assert call["raw_usage"]["tokens"] == {"input_tokens": 83, "output_tokens": 239}


@pytest.mark.support("Cohere", "non-stream")
def test_billed_units_not_generic_tokens(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["chat_v2_billed_vs_tokens.json"]
    client.chat(model=MODEL, messages=[{"role": "user", "content": "sdk: the report"}])
    [call] = recorded(db)
    assert tokens(call) == usage(6772, 248)  # not tokens' 7596 / 645
    assert shape(call) == ("cohere.chat", "ok", 1, False, "reported")


@pytest.mark.support("Cohere", "non-stream", "cache")
def test_cached_tokens_are_part_of_the_billed_input(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["chat_v2_cached.json"]
    client.chat(model=MODEL, messages=[{"role": "user", "content": "sdk: cached"}])
    [call] = recorded(db)
    assert tokens(call) == billed("chat_v2_cached.json") == usage(1480, 12, cache_read=600)
    assert shape(call) == ("cohere.chat", "ok", 1, False, "reported")


@pytest.mark.support("Cohere", "stream")
def test_chat_stream(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["chat_v2_stream.sse"]
    events = list(client.chat_stream(model=MODEL, messages=[{"role": "user", "content": "sdk: hello"}]))
    assert [e.type for e in events][-1] == "message-end"
    [call] = recorded(db)
    assert tokens(call) == usage(3, 9) == usage(events[-1].delta.usage.billed_units.input_tokens, 9)
    assert shape(call) == ("cohere.chat", "ok", 1, True, "reported") and call["flags"] == []


@pytest.mark.support("Cohere", "stream")
def test_stream_without_message_end_is_incomplete(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["chat_v2_stream_cut.sse"]
    events = list(client.chat_stream(model=MODEL, messages=[{"role": "user", "content": "sdk: cut"}]))
    assert events[-1].type != "message-end"
    [call] = recorded(db)
    # The body ended cleanly but short of its final event: a broken stream, whose usage never came.
    # tokentrail counts what it can (Command models' tokenizer is not available: estimated).
    assert call["input_tokens"] > 0 and call["input_source"] == "estimated" and call["tokenizer"] == "o200k_base"
    assert "stream_incomplete" in call["flags"]
    assert shape(call)[1:4] == ("network_error", 1, True)


@pytest.mark.support("Cohere", "non-stream")
def test_embed(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["embed_v2.json"]
    client.embed(
        model="embed-v4.0", texts=["hello", "goodbye"], input_type="search_document", embedding_types=["float"]
    )
    [call] = recorded(db)
    assert tokens(call) == usage(2, 0)  # meta.billed_units.input_tokens; an embedding outputs nothing
    assert shape(call) == ("cohere.embed", "ok", 1, False, "reported")


@pytest.mark.support("Cohere", "non-stream")
def test_retry_after_429_is_two_attempts(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan = ["429", "chat_v2_basic.json"]
    client.chat(model=MODEL, messages=[{"role": "user", "content": "sdk: cohere, retry me"}])
    assert len(api.requests) == 2 and api.requests[0] == api.requests[1]
    failed, ok = recorded(db)
    assert shape(failed) == ("cohere.chat", "http_error", 1, False, "missing") and failed["http_status"] == 429
    assert shape(ok) == ("cohere.chat", "ok", 2, False, "reported") and tokens(ok) == usage(17, 239)


def test_stream_from_an_in_memory_body(db: Path, api: CohereAPI, client: Any) -> None:
    api.plan, api.in_memory = ["chat_v2_stream.sse"], True
    list(client.chat_stream(model=MODEL, messages=[{"role": "user", "content": "sdk: hello from memory"}]))
    gc.collect()  # today the record only appears here: collected now, not in a later test's ledger
    [call] = recorded(db)
    assert tokens(call) == usage(3, 9) and shape(call) == ("cohere.chat", "ok", 1, True, "reported")
