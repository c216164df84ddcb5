"""Real requests against the simulator on loopback: every attempt recorded, every byte passed unchanged."""

from __future__ import annotations

import gc
import http.server
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

import tokentrail
from tests.conftest import recorded
from tokentrail import _guard
from tokentrail.capture import _exchange
from tokentrail.capture import requests as capture
from tokentrail.sim import Simulator
from tokentrail.wire import openai_chat

requests = pytest.importorskip("requests")
urllib3 = pytest.importorskip("urllib3")

PATH = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Name three rivers."}]}
STREAM = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


@pytest.fixture
def hooked(db: Path) -> Iterator[Path]:
    assert capture.install() == ["requests"]
    assert capture.install() == ["requests"]  # idempotent
    try:
        yield db
    finally:
        capture.uninstall()


class Tee:
    """Wraps the stream parser of every exchange and keeps what it was fed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fed: list[list[bytes]] = []
        original = _exchange.Exchange.stream_started

        def stream_started(exchange: _exchange.Exchange, status: int, headers: Any) -> Any:
            chunks: list[bytes] = []
            self.fed.append(chunks)
            return _Tap(original(exchange, status, headers), chunks)

        monkeypatch.setattr(_exchange.Exchange, "stream_started", stream_started)

    def joined(self, index: int = -1) -> bytes:
        return b"".join(self.fed[index])


class _Tap:
    def __init__(self, parser: Any, chunks: list[bytes]) -> None:
        self.parser, self.chunks = parser, chunks

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))
        self.parser.feed(chunk)

    def finish(self, outcome: Any) -> Any:
        return self.parser.finish(outcome)


@pytest.fixture
def tee(monkeypatch: pytest.MonkeyPatch) -> Tee:
    return Tee(monkeypatch)


def normal(data: bytes) -> bytes:
    """A reply without the fields that differ between two identical requests (ids, clocks)."""
    return re.sub(rb'"(id|created)":("[^"]*"|\d+)', rb'"\1":_', data)


def served_usage(sim: Simulator) -> tuple[int | None, int | None]:
    return sim.served[-1].input_tokens, sim.served[-1].output_tokens


# -- records -------------------------------------------------------------------------------------


def test_body_record_matches_what_was_served(hooked: Path, sim: Simulator) -> None:
    with tokentrail.run("requests-run"):
        reply = requests.post(sim.url + PATH, json=BODY, timeout=10)
    [call] = recorded(hooked)
    usage = reply.json()["usage"]
    assert (call["input_tokens"], call["output_tokens"]) == served_usage(sim)
    assert (call["input_tokens"], call["output_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert (call["api"], call["provider"], call["model"], call["status"], call["http_status"]) == (
        "openai.chat", "local", "gpt-4o-mini", "ok", 200,
    )  # fmt: skip
    assert call["stream"] is False and call["flags"] == [] and call["run"] == "requests-run"
    assert call["call_site"].startswith("tests/capture/test_requests.py:")


def test_str_body_and_session_send(hooked: Path, sim: Simulator) -> None:
    with requests.Session() as session:
        request = requests.Request("POST", sim.url + PATH, data=json.dumps(BODY), headers={"X-A": "1"})
        reply = session.send(session.prepare_request(request), timeout=10)
    assert reply.status_code == 200
    [call] = recorded(hooked)
    assert call["requested_model"] == "gpt-4o-mini" and call["input_tokens"] == served_usage(sim)[0]


def _iter_lines(r: requests.Response) -> bytes:
    return b"\n".join(line for line in r.iter_lines() if line)


def _copyfileobj(r: requests.Response) -> bytes:
    out = BytesIO()
    shutil.copyfileobj(r.raw, out, 100)
    return out.getvalue()


def _readinto(r: requests.Response) -> bytes:
    out, buffer = bytearray(), bytearray(37)
    while n := r.raw.readinto(buffer):
        out += buffer[:n]
    return bytes(out)


READERS: dict[str, Callable[[requests.Response], bytes]] = {
    "iter_content": lambda r: b"".join(r.iter_content(chunk_size=None)),
    "iter_lines": _iter_lines,
    "content": lambda r: r.content,
    "raw.read()": lambda r: r.raw.read(),
    "raw.read(n)": lambda r: b"".join(iter(lambda: r.raw.read(64), b"")),
    "raw.read1": lambda r: b"".join(iter(lambda: r.raw.read1(64), b"")),
    "raw.readinto": _readinto,
    "raw.stream": lambda r: b"".join(r.raw.stream(50)),
    "raw.iter": lambda r: b"".join(r.raw),
    "raw.readline": lambda r: b"".join(iter(r.raw.readline, b"")),
    "raw.readlines": lambda r: b"".join(r.raw.readlines()),
    "raw.data": lambda r: r.raw.data,
    "raw.json": lambda r: json.dumps(r.raw.json()).encode(),
    "copyfileobj": _copyfileobj,
}


@pytest.mark.parametrize("reader", READERS)
def test_every_way_of_reading_a_stream_feeds_each_byte_once(
    hooked: Path, sim: Simulator, tee: Tee, reader: str
) -> None:
    body = BODY if reader == "raw.json" else STREAM
    with requests.post(sim.url + PATH, json=body, stream=True, timeout=10) as reply:
        got = READERS[reader](reply)
    if reader == "raw.json":
        assert json.loads(got) == json.loads(tee.joined())
    elif reader == "iter_lines":
        assert got == b"\n".join(line for line in tee.joined().splitlines() if line)
    else:
        assert got == tee.joined() and got.endswith(b"data: [DONE]\n\n")
    [call] = recorded(hooked)
    assert (call["input_tokens"], call["output_tokens"]) == served_usage(sim)
    assert call["status"] == "ok" and call["flags"] == [] and call["stream"] is (body is STREAM)
    assert call["first_token_ms"] is not None


def test_raw_stays_a_urllib3_response(hooked: Path, sim: Simulator) -> None:
    with requests.post(sim.url + PATH, json=STREAM, stream=True, timeout=10) as reply:
        assert isinstance(reply.raw, urllib3.HTTPResponse) and type(reply.raw) is capture.ObservedRaw
        inner = reply.raw._inner
        reply.raw.decode_content = False  # attribute writes reach the real response
        assert inner.decode_content is False and reply.raw.status == 200
        assert reply.raw.headers is inner.headers and repr(reply.raw) == repr(inner)
        reply.raw.decode_content = True
        reply.content  # noqa: B018
    assert recorded(hooked)[0]["status"] == "ok"


def test_closed_early(hooked: Path, sim: Simulator, tee: Tee) -> None:
    with requests.post(sim.url + PATH, json=STREAM, stream=True, timeout=10) as reply:
        lines = reply.iter_lines()
        first = next(lines)
    assert first.startswith(b"data: ") and tee.joined().startswith(first)
    [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]
    # Cut before its usage: the prompt is counted with the model's tokenizer, the text so far is a floor.
    assert call["input_source"] == "counted" and call["input_tokens"] > 0 and "count_floor" in call["flags"]


def test_abandoned_stream_is_recorded_at_garbage_collection(hooked: Path, sim: Simulator) -> None:
    with requests.Session() as session:
        reply = session.post(sim.url + PATH, json=STREAM, stream=True, timeout=10)
        assert reply.status_code == 200
        del reply
        gc.collect()
        [call] = recorded(hooked)
    assert call["status"] == "cancelled" and "stream_incomplete" in call["flags"]


def test_cut_stream_raises_the_same_error(hooked: Path, sim: Simulator) -> None:
    def call() -> BaseException:
        with (
            pytest.raises(requests.exceptions.ChunkedEncodingError) as caught,
            requests.post(sim.url + PATH, json=STREAM, stream=True, headers={"X-Sim-Fault": "cut:2"}, timeout=10) as r,
        ):
            list(r.iter_lines())
        return caught.value

    error = call()
    [record] = recorded(hooked)
    assert record["status"] == "network_error" and "stream_incomplete" in record["flags"]
    capture.uninstall()
    assert str(call()) == str(error)


def test_cut_body_raises_from_send(hooked: Path, sim: Simulator) -> None:
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.post(sim.url + PATH, json=BODY, headers={"X-Sim-Fault": "cut"}, timeout=10)
    [record] = recorded(hooked)
    assert record["status"] == "network_error" and record["http_status"] is None


def test_http_error(hooked: Path, sim: Simulator) -> None:
    reply = requests.post(sim.url + PATH, json=BODY, headers={"X-Sim-Fault": "429"}, timeout=10)
    assert reply.status_code == 429
    [record] = recorded(hooked)
    assert (record["status"], record["http_status"], record["input_tokens"]) == ("http_error", 429, None)


def test_connection_refused_passes_untouched(hooked: Path) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post("http://127.0.0.1:9" + PATH, json=BODY, timeout=10)
    [record] = recorded(hooked)
    assert record["status"] == "network_error"


class _Redirect(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    target = ""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(307)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("stream", [False, True])
def test_each_redirect_hop_is_its_own_attempt(hooked: Path, sim: Simulator, stream: bool) -> None:
    handler = type("Redirect", (_Redirect,), {"target": sim.url})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with requests.post(
                f"http://127.0.0.1:{server.server_port}{PATH}", json=STREAM, stream=stream, timeout=10
            ) as r:
                r.content  # noqa: B018
            assert [h.status_code for h in r.history] == [307]
        finally:
            server.shutdown()
    calls = recorded(hooked)
    assert [c["http_status"] for c in calls] == [307, 200]
    assert calls[1]["status"] == "ok" and calls[1]["input_tokens"] == served_usage(sim)[0]


def test_other_traffic_leaves_no_record(hooked: Path, sim: Simulator) -> None:
    with requests.Session() as session:
        assert session.get(sim.url + "/v1/models", timeout=10).status_code == 404
        assert session.post(sim.url + "/v1/other", json=BODY, timeout=10).status_code == 404
        with session.get(sim.url + "/", stream=True, timeout=10) as reply:
            assert type(reply.raw) is not capture.ObservedRaw
    assert recorded(hooked) == []


def test_suppressed_traffic_leaves_no_record(hooked: Path, sim: Simulator) -> None:
    with _guard.suppress():
        requests.post(sim.url + PATH, json=BODY, timeout=10)
    assert recorded(hooked) == []


def test_uninstall_restores_send(hooked: Path, sim: Simulator) -> None:
    assert hasattr(requests.Session.send, capture._SENTINEL)
    capture.uninstall()
    capture.uninstall()
    assert not hasattr(requests.Session.send, capture._SENTINEL)
    requests.post(sim.url + PATH, json=BODY, timeout=10)
    assert recorded(hooked) == []


def test_uninstall_leaves_a_later_wrapper_in_place(hooked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = requests.Session.send

    def theirs(self: Any, request: Any, **kwargs: Any) -> Any:
        return ours(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", theirs)
    capture.uninstall()
    assert requests.Session.send is theirs


# -- instrumentation never breaks the call --------------------------------------------------------


def boom(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("injected tokentrail bug")


def _call(sim: Simulator, stream: bool, fault: str | None = None) -> tuple[int, bytes | str]:
    """One call; the status and the bytes the caller read, or the error it got."""
    headers = {"X-Sim-Fault": fault} if fault else {}
    try:
        with requests.post(
            sim.url + PATH, json=STREAM if stream else BODY, stream=stream, headers=headers, timeout=10
        ) as r:
            return r.status_code, normal(b"".join(r.iter_content(chunk_size=None)))
    except requests.RequestException as exc:
        return -1, f"{type(exc).__name__}: {exc}"


FAILING_PARTS = [
    # (where, stream, fault): every part of tokentrail that a call through requests meets.
    ((_exchange, "start"), False, None),
    ((_exchange, "start"), True, None),
    ((_exchange, "start"), True, "cut:2"),
    ((_exchange.Exchange, "body_read"), False, None),
    ((_exchange.Exchange, "failed"), False, "cut"),
    ((capture, "attach"), False, None),
    ((capture, "attach"), True, None),
    ((_exchange.Exchange, "stream_started"), True, None),
    ((_exchange.Exchange, "stream_finished"), True, None),
    ((_exchange.Exchange, "stream_finished"), True, "cut:2"),
    ((openai_chat.ChatCompletions, "parse_stream"), True, None),
    ((openai_chat.ChatCompletions, "parse_stream"), True, "cut:2"),
    ((capture.ObservedRaw, "_got"), True, None),
]


@pytest.mark.parametrize(
    "target, stream, fault",
    FAILING_PARTS,
    ids=[f"{t[1]}-{'stream' if s else 'body'}-{f or 'ok'}" for t, s, f in FAILING_PARTS],
)
def test_a_failing_part_leaves_the_call_identical(
    hooked: Path,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    target: tuple[Any, str],
    stream: bool,
    fault: str | None,
) -> None:
    expected = _uninstrumented(sim, stream, fault)
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    _guard.reset_error_counts()
    monkeypatch.setattr(*target, boom)
    with pytest.warns(tokentrail.errors.InstrumentationWarning):
        got = _call(sim, stream, fault)
        tokentrail.flush()
    assert got == expected
    assert sum(_guard.error_counts().values()) >= 1, "the error was not counted"


def _uninstrumented(sim: Simulator, stream: bool, fault: str | None) -> tuple[int, bytes | str]:
    capture.uninstall()
    try:
        return _call(sim, stream, fault)
    finally:
        capture.install()
