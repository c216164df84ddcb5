"""Real `boto3` (bedrock-runtime, on botocore's urllib3) against a loopback server answering with the
documented Bedrock payloads of ``tests/payloads/bedrock/`` (binary AWS event streams included; their
SOURCE.md cites each), with dummy credentials.

Bedrock's ``inputTokens`` (and Claude's ``input_tokens``) leave the cache out; tokentrail's input adds
the cache reads and writes back, so it equals the payload's ``.expected.json``, which encodes that rule.
"""

from __future__ import annotations

import http.server
import json
import struct
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage

boto3 = pytest.importorskip("boto3")
pytest.importorskip(
    "tokentrail.capture.botocore", reason="the botocore capture hook (tokentrail.capture.botocore) is not there yet"
)
import botocore.retries.standard  # noqa: E402
from botocore.config import Config  # noqa: E402

SDK = "boto3"
MODEL = "anthropic.claude-3-7-sonnet-20250219-v1:0"
PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "bedrock"


def expected(name: str) -> dict[str, Any]:
    """The usage the payload's .expected.json says a record of it must hold."""
    return json.loads((PAYLOADS / f"{name}.expected.json").read_text())["usage"]


def messages(data: bytes) -> list[bytes]:
    """An event-stream body split into its messages (each starts with its total length)."""
    out = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        out.append(data[:length])
        data = data[length:]
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        name = self.server.plan.popleft()
        self.server.paths.append(self.path)
        if name == "throttle":
            return self._send(429, b'{"message":"Too many requests"}', "application/json", ThrottlingException="")
        if name.endswith(".eventstream"):
            return self._events(messages((PAYLOADS / name).read_bytes()))
        self._send(200, (PAYLOADS / name).read_bytes(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str, **error: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", "req-1")
        for kind in error:
            self.send_header("x-amzn-ErrorType", kind)
        self.end_headers()
        self.wfile.write(data)

    def _events(self, events: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-amzn-RequestId", "req-1")
        self.end_headers()
        for message in events:  # one chunk per message, as Bedrock sends them
            self.wfile.write(b"%x\r\n%s\r\n" % (len(message), message))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    plan: deque[str]
    paths: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    with _Server(("127.0.0.1", 0), _Handler) as server:
        server.plan, server.paths = deque(), []
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server
        server.shutdown()
        thread.join()


@pytest.fixture
def client(server: _Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    server.plan.clear()
    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    config = Config(retries={"mode": "standard", "max_attempts": 3})
    client = session.client("bedrock-runtime", endpoint_url=f"http://127.0.0.1:{server.server_port}", config=config)
    yield client
    client.close()


MESSAGES = [{"role": "user", "content": [{"text": "sdk: write a sonnet"}]}]


@pytest.mark.support("Amazon Bedrock", "non-stream")
def test_converse(db: Path, server: _Server, client: Any) -> None:
    server.plan.append("converse_basic.json")
    reply = client.converse(modelId=MODEL, messages=MESSAGES)
    [call] = recorded(db)
    assert tokens(call) == expected("converse_basic") == usage(30, 628)
    assert (reply["usage"]["inputTokens"], reply["usage"]["outputTokens"]) == (30, 628)
    assert shape(call) == ("bedrock.converse", "ok", 1, False, "reported")
    assert (call["model"], call["provider"], call["flags"]) == (MODEL, "local", [])


@pytest.mark.support("Amazon Bedrock", "non-stream", "cache")
def test_converse_cache_write_then_read(db: Path, server: _Server, client: Any) -> None:
    server.plan.extend(["converse_cache_write.json", "converse_cache_read.json"])
    first = client.converse(modelId=MODEL, messages=MESSAGES)
    second = client.converse(modelId=MODEL, messages=MESSAGES)
    write, read = recorded(db)
    assert tokens(write) == expected("converse_cache_write") == usage(14 + 3800, 352, cache_read=0, cache_write=3800)
    assert tokens(read) == expected("converse_cache_read") == usage(9 + 3800, 41, cache_read=3800, cache_write=0)
    assert (
        write["total_tokens"] == first["usage"]["totalTokens"]
        and read["total_tokens"] == second["usage"]["totalTokens"]
    )
    assert shape(write) == shape(read) == ("bedrock.converse", "ok", 1, False, "reported")


@pytest.mark.support("Amazon Bedrock", "stream")
def test_converse_stream(db: Path, server: _Server, client: Any) -> None:
    server.plan.append("converse_stream.eventstream")
    reply = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    events = list(reply["stream"])
    assert "metadata" in events[-1]
    [call] = recorded(db)
    assert tokens(call) == expected("converse_stream") == usage(25, 11)
    assert (call["input_tokens"], call["output_tokens"]) == (
        events[-1]["metadata"]["usage"]["inputTokens"],
        events[-1]["metadata"]["usage"]["outputTokens"],
    )
    assert shape(call) == ("bedrock.converse", "ok", 1, True, "reported") and call["flags"] == []


@pytest.mark.support("Amazon Bedrock", "stream", "cache")
def test_converse_stream_cache_read(db: Path, server: _Server, client: Any) -> None:
    server.plan.append("converse_stream_cache_read.eventstream")
    list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    [call] = recorded(db)
    assert (
        tokens(call) == expected("converse_stream_cache_read") == usage(12 + 2048, 11, cache_read=2048, cache_write=0)
    )
    assert shape(call) == ("bedrock.converse", "ok", 1, True, "reported")


@pytest.mark.support("Amazon Bedrock", "non-stream", "cache")
def test_invoke_model_anthropic_body(db: Path, server: _Server, client: Any) -> None:
    server.plan.append("invoke_claude_cache.json")
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "sdk"}],
    }
    reply = client.invoke_model(modelId=MODEL, body=json.dumps(body))
    answer = json.loads(reply["body"].read())
    [call] = recorded(db)
    assert tokens(call) == expected("invoke_claude_cache") == usage(21 + 1820, 95, cache_read=1820, cache_write=0)
    assert answer["usage"]["cache_read_input_tokens"] == 1820
    assert shape(call) == ("bedrock.invoke", "ok", 1, False, "reported")


@pytest.mark.support("Amazon Bedrock", "stream", "cache")
def test_invoke_model_with_response_stream(db: Path, server: _Server, client: Any) -> None:
    server.plan.append("invoke_claude_stream.eventstream")
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "sdk"}],
    }
    reply = client.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(body))
    chunks = [json.loads(event["chunk"]["bytes"]) for event in reply["body"]]
    assert chunks[-1]["type"] == "message_stop"
    [call] = recorded(db)
    assert tokens(call) == expected("invoke_claude_stream") == usage(25040, 13, cache_read=0, cache_write=25037)
    assert shape(call) == ("bedrock.invoke", "ok", 1, True, "reported")


@pytest.mark.support("Amazon Bedrock", "stream")
def test_converse_stream_cut(db: Path, server: _Server, client: Any) -> None:
    server.plan.append("converse_stream_cut.eventstream")  # ends before messageStop and metadata
    list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    [call] = recorded(db)
    assert tokens(call) == usage(None, None) and "stream_incomplete" in call["flags"]
    # The body ended cleanly but short of its final event: a broken stream, whose usage never came.
    assert shape(call)[1:] == ("network_error", 1, True, "missing")


@pytest.mark.support("Amazon Bedrock", "non-stream")
def test_throttled_then_retried_is_two_attempts(db: Path, server: _Server, client: Any) -> None:
    server.plan.extend(["throttle", "converse_basic.json"])
    client.converse(modelId=MODEL, messages=MESSAGES)
    assert len(server.paths) >= 2 and server.paths[-1] == server.paths[-2]
    failed, ok = recorded(db)
    assert shape(failed) == ("bedrock.converse", "http_error", 1, False, "missing") and failed["http_status"] == 429
    assert shape(ok) == ("bedrock.converse", "ok", 2, False, "reported") and tokens(ok) == usage(30, 628)
