"""``stream_usage="inject"`` against what servers answer: errors that refuse the option and errors that are
the application's own; servers that send usage, or ``"usage": null`` members, without being asked.

Real SDKs over loopback, against the simulator or `_Server`, a small OpenAI-compatible server whose
behaviour each test picks."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

import tokentrail
from tokentrail.capture import inject
from tokentrail.sim import Simulator

from ..conftest import recorded
from ._clients import http
from .test_inject import _chunks, _probe

USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
# Mistral's answer to the option (github.com/dnakov/anon-kode/issues/53), here gzip-encoded.
MISTRAL_REFUSAL = {
    "object": "error",
    "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options"],
                            "msg": "Extra inputs are not permitted", "input": {"include_usage": True}}]},
    "type": "invalid_request_error", "param": None, "code": None,
}  # fmt: skip


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviour: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour
        """``always`` (usage members and the usage-only event, asked or not), ``nulls`` (``"usage": null``
        members asked or not, the usage-only event when asked), ``plain`` (both only when asked),
        ``refuse-gzip`` (Mistral's 422 to the option, gzip-encoded), ``refuse-text`` (a text/plain 400
        naming the option), ``teapot-text`` (a text/plain 400 that does not)."""
        self.received: list[dict[str, Any]] = []
        self.gate: threading.Event | None = None
        """When set up, a stream's first event goes alone, the rest once the gate opens."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.received.append(request)
        behaviour = self.server.behaviour
        if "stream_options" in request and behaviour == "refuse-gzip":
            return self._send(422, "application/json", gzip.compress(json.dumps(MISTRAL_REFUSAL).encode()), gz=True)
        if "stream_options" in request and behaviour == "refuse-text":
            return self._send(400, "text/plain", b"Bad request: unknown field stream_options")
        if behaviour == "teapot-text":
            return self._send(400, "text/plain", b"Bad request: this server takes no requests today")
        asked = (request.get("stream_options") or {}).get("include_usage") is True
        members, last = asked or behaviour in ("always", "nulls"), asked or behaviour == "always"
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": request["model"]}
        deltas = [{"content": "Hi"}, {"content": "!"}, {}]
        events = [
            {**base, "choices": [{"index": 0, "delta": d, "finish_reason": None if d else "stop"}]} for d in deltas
        ]
        if members:
            events = [{**e, "usage": None} for e in events]
        if last:
            events.append({**base, "choices": [], "usage": USAGE})
        sse = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
        gate = self.server.gate
        if gate is None:
            return self._send(200, "text/event-stream", b"".join(sse) + b"data: [DONE]\n\n")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for piece in (sse[0], None, b"".join(sse[1:]) + b"data: [DONE]\n\n", b""):
            if piece is None:
                gate.wait(5)
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()

    def _send(self, status: int, media: str, body: bytes, gz: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", media)
        if gz:
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    srv = _Server(request.param)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="sk-test", max_retries=0)


# -- errors: a refusal of the option, or the application's own answer ------------------------------


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_the_applications_own_400_is_sent_once_and_passed_on(sim: Simulator, injecting: Path, sync: bool) -> None:
    client = _client(sim.url + "/v1")
    _probe(client, sim)

    def bad_request() -> Any:
        create: dict[str, Any] = dict(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=0
        )
        if sync:
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(**create)
            return caught.value

        async def main() -> Any:
            async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as aclient:
                with pytest.raises(openai.BadRequestError) as caught:
                    await aclient.chat.completions.create(**create)
                return caught.value

        return asyncio.run(main())

    before = len(sim.served)
    with tokentrail.run("inject-app-error"):
        error = bad_request()
    assert [(s.status, s.usage_sent) for s in sim.served[before:]] == [(400, False)]  # once: not sent again
    assert error.body["param"] == "max_tokens"  # the SDK read the body tokentrail read first
    assert not inject._rejected  # the endpoint still gets the option
    inject.configure(None)
    assert bad_request().body == error.body  # as without the option
    inject.configure("inject")
    with tokentrail.run("inject-after-error"):
        _chunks(client)
    assert sim.served[-1].usage_sent
    [rec] = recorded(injecting, run="inject-after-error")
    assert rec["usage_source"] == "reported"
    [failed] = recorded(injecting, run="inject-app-error")
    assert (failed["status"], failed["http_status"]) == ("http_error", 400)


def test_a_raw_client_reads_the_error_as_it_was(sim: Simulator, injecting: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 0}
    _probe(_client(sim.url + "/v1"), sim)

    def answer() -> tuple[int, bytes, bytes, Any]:
        with http.Client() as c, c.stream("POST", sim.url + "/v1/chat/completions", json=body) as r:
            return r.status_code, r.read(), b"".join(r.iter_bytes()), r.json()

    before = len(sim.served)
    seen = answer()  # the option went (the endpoint was probed): this 400 is about max_tokens
    assert len(sim.served) == before + 1 and not inject._rejected
    inject.configure(None)
    assert seen == answer()
    assert seen[0] == 400 and seen[3]["error"]["param"] == "max_tokens"


@pytest.mark.parametrize("server", ["refuse-gzip"], indirect=True)
def test_a_refusal_by_pydantics_loc_gzip_encoded_async(server: _Server, injecting: Path) -> None:
    async def main() -> list[list[dict[str, Any]]]:
        async with openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0) as client:
            out = []
            for _ in range(3):
                stream = await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                out.append([c.model_dump(exclude_unset=True) async for c in stream])
            return out

    with tokentrail.run("inject-refused"):
        probe, refused, after = asyncio.run(main())
    assert probe == refused == after and all("usage" not in c for c in probe)
    # the probe; the option, refused; the original request, unchanged; then never the option again
    assert ["stream_options" in r for r in server.received] == [False, True, False, False]
    assert server.received[0] == server.received[2] == server.received[3]
    assert len(recorded(injecting, run="inject-refused")) == 3


@pytest.mark.parametrize(("server", "resent"), [("refuse-text", True), ("teapot-text", False)], indirect=["server"])
def test_a_plain_text_400_is_a_refusal_only_when_it_names_the_option(
    server: _Server, injecting: Path, resent: bool
) -> None:
    client = _client(server.url)
    behaviour, server.behaviour = server.behaviour, "plain"
    _chunks(client)  # the probe, answered
    server.behaviour = behaviour
    if resent:
        assert _chunks(client)  # the original request went instead, and was answered
    else:
        with pytest.raises(openai.BadRequestError) as caught:
            _chunks(client)
        assert caught.value.response.text == "Bad request: this server takes no requests today"
    assert ["stream_options" in r for r in server.received] == ([False, True, False] if resent else [False, True])
    assert bool(inject._rejected) == resent


@pytest.mark.parametrize(
    "body",
    [
        # OpenAI, Azure (github.com/agno-agi/agno/issues/1066) and the simulator's ``nostreamoptions``
        {"error": {"message": "Unknown parameter: 'stream_options'.", "type": "invalid_request_error",
                   "param": "stream_options", "code": "unknown_parameter"}},
        {"error": {"message": "Unrecognized request argument supplied: stream_options",
                   "type": "invalid_request_error", "param": None, "code": None}},
        # vLLM before it took the option (github.com/modelscope/ms-agent/issues/489): a Python repr
        {"object": "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
         "'msg': 'Extra inputs are not permitted', 'input': {}}]",
         "type": "BadRequestError", "param": None, "code": 400},
        MISTRAL_REFUSAL,
        {"detail": [{"type": "extra_forbidden", "loc": ["body", "stream_options", "include_usage"], "input": True}]},
        {"stream_options": ["Unknown field."]},
    ],
)  # fmt: skip
def test_refusals(body: dict[str, Any]) -> None:
    assert inject.refuses(json.dumps(body).encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "Invalid \'max_tokens\': expected an integer >= 1.", "param": "max_tokens"}}',
        b'{"error": {"message": "This model\'s maximum context length is 128000 tokens.",'
        b' "code": "context_length_exceeded"}}',
        # pydantic echoes the whole request as the "input" of a check of the whole body
        json.dumps({"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required",
                                "input": {"model": "m", "stream_options": {"include_usage": True}}}]}).encode(),
        json.dumps({"object": "error", "message": "[{'type': 'value_error', 'loc': ('body',), 'msg': 'tool_choice "
                    "needs tools', 'input': {'stream': True, 'stream_options': {'include_usage': True}}}]"}).encode(),
        b"<html><body>400 Bad Request</body></html>",
        b"",
    ],
)  # fmt: skip
def test_not_refusals(body: bytes) -> None:
    assert not inject.refuses(body)


# -- usage sent unasked ----------------------------------------------------------------------------


def _seen(client: openai.OpenAI, n: int) -> list[list[dict[str, Any]]]:
    return [_chunks(client) for _ in range(n)]


@pytest.mark.parametrize("server", ["always"], indirect=True)
def test_a_server_that_always_sends_usage_is_never_sent_the_option(server: _Server, injecting: Path) -> None:
    client = _client(server.url)
    inject.configure(None)
    without = _chunks(client)
    assert without[-1]["usage"] == USAGE and all(c["usage"] is None for c in without[:-1])
    inject.configure("inject")
    server.received.clear()
    with tokentrail.run("inject-always"):
        seen = _seen(client, 3)
    assert seen == [without] * 3  # the usage-only chunk and the null members the server sends are kept
    assert not any("stream_options" in r for r in server.received)
    records = recorded(injecting, run="inject-always")
    assert [r["usage_source"] for r in records] == ["reported"] * 3


@pytest.mark.parametrize("server", ["nulls"], indirect=True)
def test_a_server_that_sends_null_members_unasked_keeps_them(server: _Server, injecting: Path) -> None:
    client = _client(server.url)
    inject.configure(None)
    without = _chunks(client)
    assert all(c["usage"] is None for c in without)
    inject.configure("inject")
    server.received.clear()
    with tokentrail.run("inject-nulls"):
        seen = _seen(client, 2)
    assert seen == [without] * 2  # only the usage-only chunk, the option's, is removed
    assert ["stream_options" in r for r in server.received] == [False, True]
    records = recorded(injecting, run="inject-nulls")
    assert [r["usage_source"] for r in records] == ["counted", "reported"]


@pytest.mark.parametrize("server", ["plain"], indirect=True)
def test_a_probe_closed_early_teaches_nothing(server: _Server, injecting: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": [], "stream": True}
    server.gate = threading.Event()
    with http.Client() as c, c.stream("POST", server.url + "/chat/completions", json=body) as r:
        next(r.iter_raw())  # the first event; the rest waits at the gate
    server.gate.set()
    server.gate = None
    assert not inject._unasked
    _chunks(_client(server.url))
    _chunks(_client(server.url))
    assert ["stream_options" in r for r in server.received] == [False, False, True]


def test_the_probe_at_any_byte_boundary() -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"a \\"usage\\": {"}}],"usage":null}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage" :  null}\n\n',
        b"data: [DONE]\n\n",
        b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n',  # after [DONE]: not the server's answer
    ]
    stream = b"".join(events)
    key = ("h", 1, "/p", "m")
    for cut in range(len(stream) + 1):
        inject._unasked.clear()
        probe = inject.UsageProbe(key)
        assert probe.feed(stream[:cut]) + probe.feed(stream[cut:]) + probe.finish() == stream
        assert inject._unasked == {key: inject.NULLS}, cut
    inject._unasked.clear()
