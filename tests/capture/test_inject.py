"""``instrument(stream_usage="inject")``: usage asked for on streams that did not ask, hidden from the caller.

The first such stream to an endpoint and model is a probe, sent as is (`inject.UsageProbe`): the tests
that look at an injected stream send one first (`_probe`)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokentrail
from tokentrail.capture import inject
from tokentrail.errors import ConfigError
from tokentrail.sim import Simulator

from ..conftest import recorded
from ._clients import OPENAI_MAJOR, http

MESSAGES = [{"role": "user", "content": "Tell me how tokens are counted, in two sentences."}]
_ID = re.compile(rb'"id":"[^"]*"|"created":\d+')


def _chunks(client: openai.OpenAI, **kwargs: Any) -> list[dict[str, Any]]:
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs)  # type: ignore[call-overload]
    return [_without_id(chunk.model_dump(exclude_unset=True)) for chunk in stream]


def _without_id(chunk: dict[str, Any]) -> dict[str, Any]:
    # The simulator numbers its answers and stamps them with the time.
    return {k: v for k, v in chunk.items() if k not in ("id", "created")}


def _probe(client: openai.OpenAI, sim: Simulator) -> list[dict[str, Any]]:
    """The first stream to the simulator's endpoint: sent without the option, watched, not filtered."""
    with tokentrail.run("inject-probe"):
        chunks = _chunks(client)
    assert not sim.served[-1].usage_sent
    return chunks


def _raw(sim: Simulator, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    """The bytes a raw httpx stream gives the caller (ids and timestamps blanked)."""
    with http.Client() as client, client.stream("POST", sim.url + "/v1/chat/completions", json=body, headers=headers) as r:
        return _ID.sub(b"", b"".join(r.iter_raw()))


def test_sdk_stream_is_what_it_would_have_been_and_usage_is_reported(sim: Simulator, injecting: Path) -> None:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test")
    probed = _probe(client, sim)
    with tokentrail.run("inject-sdk"):
        seen = _chunks(client)
        served = sim.served[-1]
    inject.configure(None)
    without = _chunks(client)
    assert seen == without == probed  # no usage-only chunk, no "usage": null members
    assert all("usage" not in chunk for chunk in seen)
    [probe] = recorded(injecting, run="inject-probe")
    assert probe["usage_source"] == "counted"  # as without the option
    [rec] = recorded(injecting, run="inject-sdk")
    assert served.usage_sent
    assert (rec["usage_source"], rec["input_tokens"], rec["output_tokens"]) == (
        "reported", served.input_tokens, served.output_tokens
    )  # fmt: skip
    assert rec["flags"] == []


def test_async_sdk_stream(sim: Simulator, injecting: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client, tokentrail.run(
            "inject-async"
        ):
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
            return [_without_id(c.model_dump(exclude_unset=True)) async for c in stream]

    _probe(openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test"), sim)
    seen = asyncio.run(main())
    served = sim.served[-1]
    inject.configure(None)
    assert seen == _chunks(openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test"))
    [rec] = recorded(injecting, run="inject-async")
    assert (rec["usage_source"], rec["output_tokens"]) == ("reported", served.output_tokens)


def test_raw_bytes_match_the_uninjected_stream(sim: Simulator, injecting: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    probed = _raw(sim, body)
    assert not sim.served[-1].usage_sent
    with tokentrail.run("inject-raw"):
        seen = _raw(sim, body)
    assert sim.served[-1].usage_sent
    inject.configure(None)
    assert seen == _raw(sim, body) == probed
    assert b'"usage"' not in seen and seen.endswith(b"data: [DONE]\n\n")
    [rec] = recorded(injecting, run="inject-raw")
    assert rec["usage_source"] == "reported"


def test_a_request_that_asked_for_usage_is_sent_as_is(injecting: Path) -> None:
    sent: list[bytes] = []

    def handler(request: Any) -> Any:
        sent.append(request.read())
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=b"data: [DONE]\n\n")

    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}'
    with http.Client(transport=http.MockTransport(handler)) as client:
        client.send(client.build_request("POST", "http://mock.test/v1/chat/completions", content=body), stream=True).close()
        plain = b'{"model":"m","messages":[]}'  # not a stream
        client.post("http://mock.test/v1/chat/completions", content=plain)
        client.send(client.build_request("POST", "http://mock.test/v1/embeddings", content=body), stream=True).close()
    assert sent == [body, plain, body]


def test_other_stream_options_are_kept(injecting: Path) -> None:
    sent: list[dict[str, Any]] = []
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    sse = (
        b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"id":"a","choices":[],"usage":' + json.dumps(usage).encode() + b"}\n\ndata: [DONE]\n\n"
    )
    plain = b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'

    def handler(request: Any) -> Any:
        sent.append(json.loads(request.read()))
        asked = sent[-1]["stream_options"].get("include_usage")
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=sse if asked else plain)

    body = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_obfuscation": False}, "messages": []}
    with http.Client(transport=http.MockTransport(handler)) as client:  # the probe, in memory too
        url = "http://mock.test/v1/chat/completions"
        assert client.send(client.build_request("POST", url, json=body), stream=True).read() == plain
    with tokentrail.run("inject-merge"), http.Client(transport=http.MockTransport(handler)) as client:
        r = client.send(client.build_request("POST", "http://mock.test/v1/chat/completions", json=body), stream=True)
        # In memory (MockTransport): the caller's copy is filtered at once.
        assert r.read() == b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
        assert json.loads(r.request.content) == body  # the caller's own request
    assert sent == [body, {**body, "stream_options": {"include_obfuscation": False, "include_usage": True}}]
    [rec] = recorded(injecting, run="inject-merge")
    assert (rec["usage_source"], rec["input_tokens"], rec["output_tokens"]) == ("reported", 3, 1)


def test_an_endpoint_that_rejects_the_option_gets_the_original_request(sim: Simulator, injecting: Path) -> None:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", default_headers={"X-Sim-Fault": "nostreamoptions"})
    before = len(sim.served)
    _probe(client, sim)
    with tokentrail.run("inject-rejected"):
        first = _chunks(client)
        second = _chunks(client)
    statuses = [s.status for s in sim.served[before:]]
    assert statuses == [200, 400, 200, 200]  # the probe; the option once, then never again on that endpoint
    assert first == second and all("usage" not in c for c in first)
    records = recorded(injecting, run="inject-rejected")
    assert len(records) == 2  # tokentrail's rejected attempt is not the application's call
    assert {(r["status"], r["usage_source"]) for r in records} == {("ok", "counted")}


def test_off_by_default_and_bad_values_are_refused(sim: Simulator, db: Path) -> None:
    assert inject.mode is None
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with tokentrail.run("inject-off"):
        _raw(sim, body)
    assert not sim.served[-1].usage_sent
    with pytest.raises(ConfigError, match="stream_usage"):
        tokentrail.instrument(db, stream_usage="always")  # type: ignore[arg-type]


def test_environment_variable_turns_it_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_STREAM_USAGE", "inject")
    try:
        tokentrail.instrument(tmp_path / "env.db")
        assert inject.mode == "inject"
    finally:
        tokentrail.uninstrument()
        inject.configure(None)


def test_legacy_completions_stream(sim: Simulator, injecting: Path) -> None:
    where, body = ("h", 1, "/v1/completions"), b'{"stream": true, "prompt": "x"}'
    assert inject.plan("openai.completions", where, body) == inject.Plan(("h", 1, "/v1/completions", None), None)
    inject.learned(("h", 1, "/v1/completions", None), 0)  # what a probe of a server that sends nothing unasked learns
    plan = inject.plan("openai.completions", where, body)
    assert plan is not None and plan.body == b'{"stream": true, "prompt": "x","stream_options":{"include_usage":true}}'
    assert inject.plan("anthropic.messages", ("h", 1, "/v1/messages"), b'{"stream": true}') is None
    assert inject.plan("openai.chat", ("h", 1, "/p"), b'{"stream": false}') is None
    assert inject.plan("openai.chat", ("h", 1, "/p"), b'{"content": "\\"stream\\": true"}') is None
    assert inject.plan("openai.chat", ("h", 1, "/p"), b"not json") is None


# -- the filter, at every chunking -----------------------------------------------------------------

_EVENTS = [
    b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}',
    b'data: {"usage":null,"id":"x","choices":[{"index":0,"delta":{"content":"usage: null"}}]}',
    b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}], "usage" : null }',
    b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}',
    b"data: [DONE]",
]
_EXPECTED = [
    b'data: {"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"usage: null"}}]}',
    b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}] }',
    b"data: [DONE]",
]


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"])
@given(cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=12))
@settings(max_examples=150, deadline=None)
def test_filter_at_any_byte_boundary(sep: bytes, cuts: list[int]) -> None:
    stream = sep.join(_EVENTS) + sep
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    f = inject.UsageChunkFilter()
    out = b"".join(f.feed(p) for p in pieces) + f.finish()
    assert out == sep.join(_EXPECTED) + sep


def test_filter_keeps_azure_prompt_filter_chunk_and_a_last_event_without_blank_line() -> None:
    azure = b'data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}],"usage":null}\n\n'
    last = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    assert inject.filter_whole(azure + last) == b'data: {"choices":[],"prompt_filter_results":[{"prompt_index":0}]}\n\n'


@pytest.mark.skipif(OPENAI_MAJOR < 3, reason="openai 2.x sends through httpx: the tests above cover it")
def test_httpx_too(sim: Simulator, injecting: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    _raw(sim, body)  # the probe (through httpx2: the endpoint and model are the same)
    with tokentrail.run("inject-httpx"), httpx.Client() as client:
        with client.stream("POST", sim.url + "/v1/chat/completions", json=body) as r:
            seen = b"".join(r.iter_raw())
    assert b'"usage"' not in seen
    [rec] = recorded(injecting, run="inject-httpx")
    assert rec["usage_source"] == "reported"


def test_a_json_answer_to_an_injected_stream_passes_as_is(injecting: Path) -> None:
    answer = b'{"id":"x","choices":[],"usage":null}'

    def handler(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "application/json"}, content=answer)

    body = {"model": "gpt-4o-mini", "stream": True, "messages": []}
    with tokentrail.run("inject-json"), http.Client(transport=http.MockTransport(handler)) as client:
        r = client.send(client.build_request("POST", "http://mock.test/v1/chat/completions", json=body), stream=True)
        assert r.read() == answer
