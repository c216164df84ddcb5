"""Real boto3 (Bedrock runtime) against a loopback server: one record per attempt, event streams unchanged.

The server speaks Bedrock's wire format: Converse JSON bodies and binary AWS event streams whose
prelude and message CRCs botocore validates. Until the Bedrock parser lands, ``detect`` is stubbed to
hand ``/model/`` paths to `StubBedrock`, which keeps every body it is given.
"""

from __future__ import annotations

import base64
import gc
import http.server
import json
import socket
import struct
import sys
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import tokentrail
from tests.conftest import recorded
from tokentrail import _guard
from tokentrail.capture import _exchange
from tokentrail.capture import botocore as capture
from tokentrail.capture.requests import ObservedRaw
from tokentrail.wire._base import ParsedCall, RequestInfo, UsageMap, WholeBody, loads, parsed

boto3 = pytest.importorskip("boto3")
import botocore.exceptions  # noqa: E402
import botocore.retries.standard  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.eventstream import EventStreamBuffer  # noqa: E402

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
USAGE = {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17}
CONVERSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Nile, Amazon, Yangtze."}]}},
    "stopReason": "end_turn",
    "usage": USAGE,
    "metrics": {"latencyMs": 7},
}
INVOKE = {"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "Nile."}], "usage": USAGE}


# -- AWS event streams -----------------------------------------------------------------------------


def _header(name: str, value: str) -> bytes:
    key, data = name.encode(), value.encode()
    return bytes([len(key)]) + key + b"\x07" + struct.pack(">H", len(data)) + data  # 7: string


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One event-stream message: prelude (lengths + CRC), headers, payload, message CRC."""
    headers = _header(":event-type", event_type) + _header(":content-type", "application/json")
    headers += _header(":message-type", "event")
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


CONVERSE_EVENTS = [
    event("messageStart", {"role": "assistant"}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Nile, "}}),
    event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Amazon."}}),
    event("contentBlockStop", {"contentBlockIndex": 0}),
    event("messageStop", {"stopReason": "end_turn"}),
    event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 7}}),
]
INVOKE_EVENTS = [
    event("chunk", {"bytes": base64.b64encode(json.dumps(part).encode()).decode()})
    for part in (
        {"type": "message_start"},
        {"type": "content_block_delta", "delta": {"text": "Nile."}},
        {"usage": USAGE},
    )
]


# -- the loopback server ---------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._json(200, {"modelSummaries": []})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        action = self.server.plan.popleft() if self.server.plan else "ok"
        if action == "throttle":
            return self._json(429, {"message": "Too many requests"}, error="ThrottlingException")
        path = self.path.split("?")[0]
        if path.endswith("/converse-stream"):
            return self._events(CONVERSE_EVENTS, action)
        if path.endswith("/invoke-with-response-stream"):
            return self._events(INVOKE_EVENTS, action)
        self._json(200, INVOKE if path.endswith("/invoke") else CONVERSE, cut=action == "cut")

    def _json(self, status: int, body: Any, error: str | None = None, cut: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "req-1")
        if error:
            self.send_header("x-amzn-ErrorType", error)
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if cut else data)
        self._record(data)
        if cut:
            self._drop()

    def _events(self, events: list[bytes], action: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "req-1")
        self.end_headers()
        sent = events[:2] if action == "cut" else events
        for message in sent:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(message), message))
            self.wfile.flush()
        self._record(b"".join(sent))
        if action == "cut":
            return self._drop()
        self.wfile.write(b"0\r\n\r\n")

    def _record(self, data: bytes) -> None:
        self.server.sent.append(data)

    def _drop(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    plan: deque[str]
    sent: list[bytes]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients drop streams they abandon
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    with _Server(("127.0.0.1", 0), _Handler) as server:
        server.plan, server.sent = deque(), []
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()


_session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")


@pytest.fixture
def client(server: _Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    server.plan.clear()
    server.sent.clear()
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    client = _session.client("bedrock-runtime", endpoint_url=f"http://127.0.0.1:{server.server_port}", config=config)
    yield client
    client.close()


# -- the stub parser -------------------------------------------------------------------------------


class StubBedrock:
    """Stands in for the Bedrock wire parser: keeps every body and reads usage from JSON or events."""

    api = "bedrock.converse"
    spec = UsageMap(input=("inputTokens",), output=("outputTokens",), total="totalTokens")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.startswith("/model/")

    def parse_request(self, body: bytes) -> RequestInfo:
        return RequestInfo()

    def parse(self, body: bytes) -> ParsedCall:
        self.bodies.append(body)
        if body.startswith(b"{"):
            data = loads(body)
            return parsed(data.get("usage") if isinstance(data, dict) else None, self.spec)
        buffer = EventStreamBuffer()
        buffer.add_data(body)
        usage = None
        for message in buffer:
            payload = json.loads(message.payload)
            if "bytes" in payload:
                payload = json.loads(base64.b64decode(payload["bytes"]))
            usage = payload.get("usage", usage)
        return parsed(usage, self.spec)

    def stream(self) -> WholeBody:
        return WholeBody(self)


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> StubBedrock:
    parser, real = StubBedrock(), _exchange.detect

    def detect(method: str, *where: str) -> Any:  # (method, path) or (method, host, path)
        return parser if parser.matches(method, where[-1]) else real(method, *where)

    monkeypatch.setattr(_exchange, "detect", detect)
    return parser


@pytest.fixture
def hooked(db: Path, stub: StubBedrock) -> Iterator[Path]:
    assert capture.install() == ["botocore"]
    assert capture.install() == ["botocore"]  # idempotent
    try:
        yield db
    finally:
        # A response a test left unread is recorded when it is collected: here, in this test's
        # ledger, not in whichever ledger the next test opens.
        gc.collect()
        tokentrail.flush()
        capture.uninstall()


def _plain(reply: dict[str, Any]) -> dict[str, Any]:
    """A reply without its HTTP metadata (dates differ between two calls)."""
    return {k: v for k, v in reply.items() if k != "ResponseMetadata"}


def converse_stream(client: Any) -> list[dict[str, Any]]:
    reply = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    return list(reply["stream"])


# -- records -------------------------------------------------------------------------------------


def test_converse_record(hooked: Path, client: Any, server: _Server, stub: StubBedrock) -> None:
    with tokentrail.run("bedrock-run"):
        reply = client.converse(modelId=MODEL, messages=MESSAGES)
    assert _plain(reply) == CONVERSE
    [call] = recorded(hooked)
    assert stub.bodies == server.sent  # the parser saw exactly the bytes botocore parsed
    assert (call["input_tokens"], call["output_tokens"], call["total_tokens"]) == (12, 5, 17)
    assert (call["api"], call["status"], call["http_status"], call["run"]) == (
        "bedrock.converse",
        "ok",
        200,
        "bedrock-run",
    )
    assert call["call_site"].startswith("tests/capture/test_botocore.py:")


def test_converse_stream_passes_every_byte_to_the_event_parser(
    hooked: Path, client: Any, server: _Server, stub: StubBedrock
) -> None:
    events = converse_stream(client)
    assert [next(iter(e)) for e in events] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata",
    ]  # fmt: skip
    assert events[-1]["metadata"]["usage"] == USAGE
    [call] = recorded(hooked)  # streams are parsed by the pipeline, after they end
    assert stub.bodies == server.sent == [b"".join(CONVERSE_EVENTS)]
    assert (call["input_tokens"], call["output_tokens"], call["status"]) == (12, 5, "ok")
    assert call["first_token_ms"] is not None
    capture.uninstall()
    assert converse_stream(client) == events


def test_invoke_model_body_read_through_streaming_body(hooked: Path, client: Any, stub: StubBedrock) -> None:
    reply = client.invoke_model(modelId=MODEL, body=json.dumps({"prompt": "hi"}))
    assert isinstance(reply["body"]._raw_stream, ObservedRaw)
    assert json.loads(reply["body"].read()) == INVOKE
    [call] = recorded(hooked)
    assert (call["input_tokens"], call["output_tokens"], call["status"]) == (12, 5, "ok")
    assert stub.bodies == [json.dumps(INVOKE).encode()]


def test_invoke_model_with_response_stream(hooked: Path, client: Any, server: _Server, stub: StubBedrock) -> None:
    reply = client.invoke_model_with_response_stream(modelId=MODEL, body=b'{"prompt": "hi"}')
    chunks = [json.loads(e["chunk"]["bytes"]) for e in reply["body"]]
    assert chunks[-1] == {"usage": USAGE}
    [call] = recorded(hooked)
    assert stub.bodies == server.sent
    assert (call["input_tokens"], call["output_tokens"], call["status"]) == (12, 5, "ok")


def test_one_record_per_attempt(hooked: Path, client: Any, server: _Server) -> None:
    server.plan.extend(["throttle", "throttle"])
    reply = client.converse(modelId=MODEL, messages=MESSAGES)
    assert reply["ResponseMetadata"]["RetryAttempts"] == 2
    calls = recorded(hooked)
    assert [(c["status"], c["http_status"]) for c in calls] == [("http_error", 429)] * 2 + [("ok", 200)]
    assert calls[-1]["input_tokens"] == 12


def test_stream_closed_early(hooked: Path, client: Any) -> None:
    reply = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    stream = reply["stream"]
    assert "messageStart" in next(iter(stream))
    stream.close()
    [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_abandoned_stream_is_recorded_at_garbage_collection(hooked: Path, client: Any) -> None:
    reply = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
    del reply
    gc.collect()
    [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]


def test_cut_stream_raises_the_same_error(hooked: Path, client: Any, server: _Server) -> None:
    def call() -> str:
        server.plan.append("cut")
        with pytest.raises(Exception) as caught:
            converse_stream(client)
        return repr(caught.value)

    error = call()
    [record] = recorded(hooked)
    assert record["status"] == "network_error" and "stream_incomplete" in record["flags"]
    capture.uninstall()
    assert call() == error


def test_cut_body_is_recorded_without_usage(hooked: Path, client: Any, server: _Server) -> None:
    # botocore reads with enforce_content_length=False and keeps an unparseable body as a message.
    got = _call(client, server, "converse", "cut")
    [record] = recorded(hooked)
    assert record["http_status"] == 200 and record["input_tokens"] is None
    capture.uninstall()
    assert _call(client, server, "converse", "cut") == got


def test_connection_failure_is_a_failed_attempt(hooked: Path) -> None:
    config = Config(retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=5)
    with closing(_session.client("bedrock-runtime", endpoint_url="http://127.0.0.1:9", config=config)) as client:
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            client.converse(modelId=MODEL, messages=MESSAGES)
    assert [(c["status"], c["http_status"]) for c in recorded(hooked)] == [("network_error", None)] * 2


def test_other_aws_traffic_leaves_no_record(hooked: Path, server: _Server, stub: StubBedrock) -> None:
    url = f"http://127.0.0.1:{server.server_port}"
    with closing(_session.client("bedrock", endpoint_url=url)) as control:
        assert control.list_foundation_models()["modelSummaries"] == []
    assert recorded(hooked) == [] and stub.bodies == []


def test_suppressed_traffic_leaves_no_record(hooked: Path, client: Any) -> None:
    with _guard.suppress():
        client.converse(modelId=MODEL, messages=MESSAGES)
    assert recorded(hooked) == []


def test_uninstall_restores_send(hooked: Path, client: Any) -> None:
    from botocore.endpoint import Endpoint

    capture.uninstall()
    capture.uninstall()
    assert not hasattr(Endpoint._send, capture._SENTINEL)
    client.converse(modelId=MODEL, messages=MESSAGES)
    assert recorded(hooked) == []


def test_uninstall_leaves_a_later_wrapper_in_place(hooked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.endpoint import Endpoint

    ours = Endpoint._send

    def theirs(self: Any, request: Any) -> Any:
        return ours(self, request)

    monkeypatch.setattr(Endpoint, "_send", theirs)
    capture.uninstall()
    assert Endpoint._send is theirs


# -- instrumentation never breaks the call --------------------------------------------------------


def boom(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("injected tokentrail bug")


def refuse(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionRefusedError("the transport failed")


def _call(client: Any, server: _Server, operation: str, fault: str | None) -> Any:
    """One call; what the caller got back, or the error it got."""
    if fault:
        server.plan.append(fault)
    try:
        if operation == "converse":
            return _plain(client.converse(modelId=MODEL, messages=MESSAGES))
        if operation == "invoke":
            return client.invoke_model(modelId=MODEL, body=b"{}")["body"].read()
        return converse_stream(client)
    except Exception as exc:
        return repr(exc)


FAILING_PARTS = [
    # (where, operation, fault): every part of tokentrail that a Bedrock call meets.
    ((_exchange, "start"), "converse", None),
    ((_exchange, "start"), "stream", None),
    ((_exchange.Exchange, "body_read"), "converse", None),
    ((_exchange.Exchange, "failed"), "converse", "refused"),
    ((capture, "attach"), "stream", None),
    ((_exchange.Exchange, "stream_started"), "stream", None),
    ((_exchange.Exchange, "stream_finished"), "stream", None),
    ((_exchange.Exchange, "stream_finished"), "stream", "cut"),
    ((_exchange.Exchange, "stream_finished"), "invoke", None),
    ((StubBedrock, "parse"), "stream", None),
    ((StubBedrock, "parse"), "converse", None),
    ((ObservedRaw, "_got"), "stream", None),
    ((ObservedRaw, "_got"), "invoke", None),
]


@pytest.mark.parametrize(
    "target, operation, fault", FAILING_PARTS, ids=[f"{t[1]}-{op}-{f or 'ok'}" for t, op, f in FAILING_PARTS]
)
def test_a_failing_part_leaves_the_call_identical(
    hooked: Path,
    client: Any,
    server: _Server,
    monkeypatch: pytest.MonkeyPatch,
    target: tuple[Any, str],
    operation: str,
    fault: str | None,
) -> None:
    if fault == "refused":
        fault = None
        monkeypatch.setattr(client._endpoint.http_session, "send", refuse)
    capture.uninstall()
    expected = _call(client, server, operation, fault)
    capture.install()
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    _guard.reset_error_counts()
    monkeypatch.setattr(*target, boom)
    with pytest.warns(tokentrail.errors.InstrumentationWarning):
        got = _call(client, server, operation, fault)
        tokentrail.flush()
    assert got == expected
    assert sum(_guard.error_counts().values()) >= 1, "the error was not counted"
