"""The simulator's HTTP server: routing, fault injection, latency and the log of what was served.

Standard library only: a `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive. JSON answers carry
a Content-Length; streams use chunked transfer encoding with one chunk per event (SSE event, NDJSON
line or JSON-array element), written straight to the socket (TCP_NODELAY) so clients see each event
as it is sent. OpenAI routes are exact paths (`_ROUTES`); the other families' are regular
expressions (`_FAMILY_ROUTES`), and the family of a path decides its error shape and headers.
"""

# pyright: reportPrivateUsage=false
# (the handler and the routes use the Simulator's internals: caches, counters, the log)

from __future__ import annotations

import json
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from . import anthropic, gemini, ollama, openai, text
from .openai import Answer, BadRequest

__all__ = ["Fault", "ServedCall", "Simulator", "parse_faults", "serve"]

FAULT_HEADER = "X-Sim-Fault"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedCall:
    """One request as the simulator answered it, so tests can compare records with it.

    Token counts are what the simulator computed for the call; `usage_sent` says whether a usage
    object actually reached the client (it does not after `nousage`, or a `cut` before the usage event).
    """

    path: str
    model: str | None
    stream: bool
    status: int
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    usage_sent: bool
    fault: str | None
    """The fault applied: "429", "500", "cut", "nousage", "disconnect" (the client left), several
    joined by ","; or None."""
    cache_write_tokens: int | None = None
    """Input tokens written to a prompt cache (Anthropic's cache_creation_input_tokens, a Gemini
    cachedContents create); None where the family has no such count."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One item of an `X-Sim-Fault` header."""

    spec: str
    """The item as written, e.g. "429*2"; with path and body it keys the `*N` counter."""
    name: str
    """"429", "cut" or "nousage": the label recorded in `ServedCall.fault`."""
    status: int | None = None
    cut_after: int | None = None
    times: int | None = None
    """Apply only to the first N arrivals of the same request; None means always."""


def parse_faults(value: str) -> list[Fault]:
    """Parse `X-Sim-Fault`: comma-separated `CODE`, `cut`, `cut:K`, `nousage` or `nostreamoptions`,
    each optionally `*N`.

    Raises:
        ValueError: an item is not one of those.
    """
    faults: list[Fault] = []
    for spec in (s.strip() for s in value.split(",")):
        if not spec:
            continue
        base, star, count = spec.partition("*")
        times = None
        if star:
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"bad repeat count in {spec!r}")
            times = int(count)
        name, colon, arg = base.strip().lower().partition(":")
        if name.isdigit() and 400 <= int(name) <= 599 and not colon:
            faults.append(Fault(spec=spec, name=name, status=int(name), times=times))
        elif name == "cut" and (not colon or arg.isdigit()):
            faults.append(Fault(spec=spec, name=name, cut_after=int(arg) if colon else 2, times=times))
        elif name in ("nousage", "nostreamoptions") and not colon:
            faults.append(Fault(spec=spec, name=name, times=times))
        else:
            raise ValueError(
                f"unknown fault {spec!r}; expected CODE, cut, cut:K, nousage or nostreamoptions, optionally *N"
            )
    return faults


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    503: ("service_unavailable", None),
}

Route = Callable[[dict[str, Any], "Simulator", bool], Answer]

_ROUTES: dict[str, Route] = {
    "/v1/chat/completions": lambda req, sim, usage: openai.chat_completions(
        req, sim._cache, seq=sim._next_seq(), usage=usage
    ),
    "/v1/responses": lambda req, sim, usage: openai.responses(req, sim._cache, seq=sim._next_seq(), usage=usage),
    "/v1/embeddings": lambda req, _sim, usage: openai.embeddings(req, usage=usage),
}
"""The OpenAI routes, by exact path. The other families are in `_FAMILY_ROUTES`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Request:
    """What a family route gets: the decoded body, the path's named groups and the query."""

    body: dict[str, Any]
    params: dict[str, str]
    query: dict[str, list[str]]
    sim: Simulator
    usage: bool


_SSE = "text/event-stream; charset=utf-8"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Route:
    family: str
    """"openai", "anthropic", "gemini" or "ollama": picks the error shape and the response headers."""
    pattern: re.Pattern[str]
    handler: Callable[[_Request], Answer]
    stream: Callable[[dict[str, Any], dict[str, str]], bool] = field(default=lambda body, _: bool(body.get("stream")))
    """Whether the request asks for a stream (logged in `ServedCall.stream`)."""
    media: Callable[[dict[str, list[str]]], str] = field(default=lambda _: _SSE)
    """The Content-Type of a stream answer."""


def _gemini_route(r: _Request) -> Answer:
    method, model, sim = r.params["method"], r.params["model"], r.sim
    if method in ("generateContent", "streamGenerateContent"):
        stream, sse = method == "streamGenerateContent", r.query.get("alt") == ["sse"]
        return gemini.generate_content(
            r.body, sim._gemini_caches, model=model, stream=stream, sse=sse, seq=sim._next_seq(), usage=r.usage
        )
    if method == "embedContent":
        return gemini.embed_content(r.body, model=model, usage=r.usage)
    if method == "batchEmbedContents":
        return gemini.batch_embed_contents(r.body, model=model, usage=r.usage)
    return gemini.count_tokens(r.body, sim._gemini_caches, model=model)


# The Gemini API's `/v1beta/models/{model}:{method}`; Vertex AI's
# `/v1/projects/{p}/locations/{l}/publishers/google/models/...`, or without project and location in
# express mode (an API key instead of credentials), as google-genai sends it. Models hold dots and dashes.
_GOOGLE = r"/(?:v1beta|v1alpha|v1|v1beta1)(?:/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+))?"
_GEMINI = rf"{_GOOGLE}(?:/publishers/google)?/models/(?P<model>[^/:]+)"
_GEMINI_METHODS = "generateContent|streamGenerateContent|embedContent|batchEmbedContents|countTokens"
_OLLAMA_STREAM: dict[str, Any] = dict(
    stream=lambda body, _: body.get("stream") is not False,  # Ollama streams unless told not to
    media=lambda _: "application/x-ndjson",
)

_FAMILY_ROUTES: list[_Route] = [
    _Route(
        family="anthropic",
        pattern=re.compile(r"/v1/messages"),
        handler=lambda r: anthropic.messages(r.body, r.sim._prefixes, seq=r.sim._next_seq(), usage=r.usage),
    ),
    _Route(
        family="anthropic",
        pattern=re.compile(r"/v1/messages/count_tokens"),
        handler=lambda r: anthropic.count_tokens(r.body),
    ),
    _Route(
        family="gemini",
        pattern=re.compile(rf"{_GEMINI}:(?P<method>{_GEMINI_METHODS})"),
        handler=_gemini_route,
        stream=lambda _, params: params["method"] == "streamGenerateContent",
        media=lambda query: _SSE if query.get("alt") == ["sse"] else "application/json; charset=UTF-8",
    ),
    _Route(
        family="gemini",
        pattern=re.compile(rf"{_GOOGLE}/cachedContents"),
        handler=lambda r: gemini.create_cache(r.body, r.sim._gemini_caches, seq=r.sim._next_seq(), usage=r.usage),
    ),
    _Route(
        family="ollama",
        pattern=re.compile(r"/api/chat"),
        handler=lambda r: ollama.chat(r.body, r.sim._prefixes, usage=r.usage),
        **_OLLAMA_STREAM,
    ),
    _Route(
        family="ollama",
        pattern=re.compile(r"/api/generate"),
        handler=lambda r: ollama.generate(r.body, r.sim._prefixes, usage=r.usage),
        **_OLLAMA_STREAM,
    ),
    _Route(family="ollama", pattern=re.compile(r"/api/embed"), handler=lambda r: ollama.embed(r.body, usage=r.usage)),
    _Route(family="ollama", pattern=re.compile(r"/api/embeddings"), handler=lambda r: ollama.embeddings(r.body)),
]


def _resolve(path: str) -> tuple[_Route | None, dict[str, str]]:
    """The route for `path` and its named groups; OpenAI's exact paths first, then the patterns."""
    openai_route = _ROUTES.get(path)
    if openai_route is not None:
        return (
            _Route(
                family="openai",
                pattern=re.compile(re.escape(path)),
                handler=lambda r: openai_route(r.body, r.sim, r.usage),
            ),
            {},
        )
    for route in _FAMILY_ROUTES:
        match = route.pattern.fullmatch(path)
        if match is not None:
            return route, {k: v for k, v in match.groupdict().items() if v is not None}
    return None, {}


def _family_of(path: str) -> str:
    """The family whose error shape an unknown path gets."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith(("/v1beta", "/v1alpha")) or "/projects/" in path or re.search(r"/models/[^/]+:", path):
        return "gemini"
    return "openai"


_USAGE_KEYS = {"gemini": ("usageMetadata",), "ollama": ("eval_count", "prompt_eval_count")}
_ERROR_BODIES = {"anthropic": anthropic.error_body, "gemini": gemini.error_body, "ollama": ollama.error_body}


def _has_usage(family: str, body: dict[str, Any] | None) -> bool:
    return body is not None and any(key in body for key in _USAGE_KEYS.get(family, ("usage",)))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sim: Simulator

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall for
        # seconds on machines without DNS; the simulator has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients drop keep-alive connections and abandon streams all the time; only our bugs matter.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tokentrail-sim"
    timeout = 60  # idle keep-alive connections end after this; clients reconnect transparently
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.sim._track(self.connection, True)

    def finish(self) -> None:
        self.server.sim._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a test server should not write a line per request to stderr

    # --- routing ---

    def do_POST(self) -> None:
        self._handle(self._read_body())

    def do_GET(self) -> None:
        self._handle(b"")

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self, body: bytes) -> None:
        sim = self.server.sim
        path, _, query_string = self.path.partition("?")
        query = parse_qs(query_string)
        req: dict[str, Any] | None = None
        try:
            decoded = json.loads(body) if body else None
            req = decoded if isinstance(decoded, dict) else None  # pyright: ignore[reportUnknownVariableType]
        except ValueError:
            pass
        route, params = _resolve(path)
        family = route.family if route is not None else _family_of(path)
        fields: dict[str, Any] = req if req is not None else {}
        model = params.get("model") or fields.get("model")
        if family == "gemini" and isinstance(model, str):
            model = model.rsplit("/models/", 1)[-1].removeprefix("models/")
        stream = route.stream(fields, params) if route is not None else bool(fields.get("stream"))
        call = dict(path=path, model=model if isinstance(model, str) else None, stream=stream)

        try:
            faults = sim._active_faults(self.headers.get(FAULT_HEADER, ""), path, body)
        except ValueError as exc:
            return self._error(call, family, 400, str(exc), fault=None)
        if route is None or self.command != "POST":
            return self._error(call, family, 404, f"Invalid URL ({self.command} {path})", fault=None)

        status_fault = next((f for f in faults if f.status is not None), None)
        if status_fault is None and sim._draw_failure():
            status_fault = Fault(spec="fail_rate", name="500", status=500)
        if status_fault is not None and status_fault.status is not None:
            sim._sleep(1.0)
            message = "The simulator injected this error."
            return self._error(call, family, status_fault.status, message, fault=status_fault.name)
        if req is None:
            return self._error(call, family, 400, "We could not parse the JSON body of your request.", fault=None)
        if "stream_options" in req and any(f.name == "nostreamoptions" for f in faults):
            # An older OpenAI-compatible server (or an old Azure api-version) that rejects the option.
            message = "Unrecognized request argument supplied: stream_options"
            return self._error(call, family, 400, message, fault="nostreamoptions", param="stream_options")
        nousage = any(f.name == "nousage" for f in faults)
        try:
            answer = route.handler(_Request(body=req, params=params, query=query, sim=sim, usage=not nousage))
        except BadRequest as exc:
            return self._error(call, family, 400, str(exc), fault=None, param=exc.param)
        except Exception as exc:  # a simulator bug: say so in a 500 rather than dropping the connection
            traceback.print_exc()
            return self._error(call, family, 500, f"tokentrail sim failed: {exc!r}", fault=None)
        cut = next((f for f in faults if f.cut_after is not None), None)
        labels = [f.name for f in faults if f.name in ("nousage", "cut")]
        if answer.stream:
            self._send_stream(answer, call, family, route.media(query), cut.cut_after if cut else None, labels)
        else:
            self._send_body(answer, call, family, cut is not None, labels)

    # --- answers ---

    def _record(
        self,
        call: dict[str, Any],
        status: int,
        fault: str | None,
        answer: Answer | None = None,
        usage_sent: bool = False,
    ) -> None:
        self.server.sim._log(
            ServedCall(
                **call,
                status=status,
                input_tokens=answer.input_tokens if answer is not None else None,
                output_tokens=answer.output_tokens if answer is not None else None,
                cached_tokens=answer.cached_tokens if answer is not None else None,
                reasoning_tokens=answer.reasoning_tokens if answer is not None else None,
                cache_write_tokens=getattr(answer, "cache_write_tokens", None),
                usage_sent=usage_sent,
                fault=fault,
            )
        )

    def _error(
        self,
        call: dict[str, Any],
        family: str,
        status: int,
        message: str,
        *,
        fault: str | None,
        param: str | None = None,
    ) -> None:
        if family in _ERROR_BODIES:
            payload = _ERROR_BODIES[family](status, message)
        else:
            kind, code = _ERROR_TYPES.get(status, ("server_error", None))
            payload = openai.error_body(message, kind, code=code, param=param)
        data = json.dumps(payload).encode()
        self._record(call, status, fault)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fault is not None and (status == 429 or status >= 500):
            # Real 429s carry these; sending them on injected 5xx too keeps SDK retries instant
            # (the openai and anthropic SDKs honour retry-after-ms before their 0.5 s+ exponential backoff).
            self.send_header("retry-after-ms", "1")
            self.send_header("retry-after", "0")
        self._request_headers(family)
        self.end_headers()
        self.wfile.write(data)

    def _request_headers(self, family: str = "openai") -> None:
        ident = text.request_key(time.monotonic_ns(), id(self)).hex()
        if family == "openai":
            self.send_header("x-request-id", "req_" + ident[:32])
        elif family == "anthropic":
            self.send_header("request-id", "req_" + ident[:24])

    def _send_body(self, answer: Answer, call: dict[str, Any], family: str, cut: bool, labels: list[str]) -> None:
        data = json.dumps(answer.body, separators=(",", ":"), ensure_ascii=False).encode()
        sim = self.server.sim
        sim._sleep(1.0)
        usage_sent = _has_usage(family, answer.body) and not cut
        self._record(call, 200, ",".join(labels) or None, answer, usage_sent)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if family == "openai":
            self.send_header("openai-processing-ms", str(int(sim.latency_ms)))
        self._request_headers(family)
        self.end_headers()
        if cut:  # promise the whole body, send half, hang up
            self.wfile.write(data[: len(data) // 2])
            self._hang_up()
        else:
            self.wfile.write(data)

    def _send_stream(
        self,
        answer: Answer,
        call: dict[str, Any],
        family: str,
        media: str,
        cut_after: int | None,
        labels: list[str],
    ) -> None:
        sim = self.server.sim
        events = answer.events
        send = events if cut_after is None else events[:cut_after]
        usage_sent = answer.usage_event is not None and answer.usage_event < len(send)
        # Most of the latency is time to first byte; the rest is spread between events.
        sim._sleep(0.8)
        gap = sim.latency_ms * 0.2 / 1000 / max(1, len(events))
        fault = ",".join(labels) or None
        self.send_response(200)
        self.send_header("Content-Type", media)
        if media.startswith("text/event-stream"):
            self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        if family == "openai":
            self.send_header("openai-processing-ms", str(int(sim.latency_ms)))
        self._request_headers(family)
        self.end_headers()
        recorded = False
        try:
            for i, event in enumerate(send):
                if i == len(events) - 1:  # log before the last event: a client that sees the end sees the log
                    self._record(call, 200, fault, answer, usage_sent)
                    recorded = True
                if gap and i:
                    time.sleep(gap)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            if not recorded:  # cut before the end
                self._record(call, 200, fault, answer, usage_sent)
                recorded = True
                self._hang_up()
                return
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            if not recorded:
                self._record(call, 200, ",".join([*labels, "disconnect"]), answer, False)

    def _hang_up(self) -> None:
        # Close without the terminating chunk (or the rest of the body): the client sees a broken
        # response. A FIN, not a RST, so events already sent are still delivered before the error.
        self.close_connection = True
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Simulator:
    """A local LLM server (OpenAI, Anthropic, Gemini, Ollama) with real token counts, latency and faults.

    Point the openai SDK at `url + "/v1"`, the anthropic, google-genai and ollama SDKs at `url`.
    `start()` serves from a daemon thread; use it as a context manager in tests. Every request is
    appended to `served`, faults included.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, latency_ms: float = 0.0, fail_rate: float = 0.0, seed: int = 0
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        self.host = host
        self.port = port
        self.latency_ms = latency_ms
        self.fail_rate = fail_rate
        self.seed = seed
        self.served: list[ServedCall] = []
        """Every request answered, in the order their answers were decided (appended under a lock)."""
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._cache: text.PromptCache = text.PromptCache()
        self._arrivals: dict[tuple[str, bytes, str], int] = {}
        self._prefixes: text.PrefixCache = text.PrefixCache()
        """Exact-prefix caches: Anthropic cache breakpoints and Ollama's last-prompt cache."""
        self._gemini_caches: gemini.CacheStore = gemini.CacheStore()
        self._seq = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    @property
    def url(self) -> str:
        """`http://HOST:PORT` with the bound port once started; the OpenAI base_url is `url + "/v1"`."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Simulator:
        """Bind, load the tokenizer, and serve from a daemon thread. Returns self."""
        if self._server is not None:
            return self
        text.preload()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="tokentrail-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # keep-alive connections would otherwise keep answering
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Simulator(url={self.url!r}, latency_ms={self.latency_ms}, fail_rate={self.fail_rate})"

    # --- used by the handler ---

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _log(self, call: ServedCall) -> None:
        with self._lock:
            self.served.append(call)

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _draw_failure(self) -> bool:
        if self.fail_rate <= 0.0:
            return False
        with self._lock:  # one seeded stream for all threads: the same request order fails the same way
            return self._rng.random() < self.fail_rate

    def _active_faults(self, header: str, path: str, body: bytes) -> list[Fault]:
        active: list[Fault] = []
        for fault in parse_faults(header):
            if fault.times is None:
                active.append(fault)
                continue
            with self._lock:
                key = (path, body, fault.spec)
                seen = self._arrivals[key] = self._arrivals.get(key, 0) + 1
            if seen <= fault.times:
                active.append(fault)
        return active

    def _sleep(self, share: float) -> None:
        if self.latency_ms > 0:
            time.sleep(self.latency_ms * share / 1000)


def serve(
    host: str = "127.0.0.1", port: int = 8000, *, latency_ms: float = 0.0, fail_rate: float = 0.0, seed: int = 0
) -> None:
    """Run a simulator in the foreground until Ctrl-C or SIGTERM (for `tokentrail sim`)."""
    sim = Simulator(host, port, latency_ms=latency_ms, fail_rate=fail_rate, seed=seed).start()
    stopped = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stopped.set())
    print(f"tokentrail sim listening on {sim.url} (OpenAI base_url {sim.url}/v1)", flush=True)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
