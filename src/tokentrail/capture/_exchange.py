"""The library-neutral core of capture: one `Exchange` per HTTP attempt to an LLM API.

The hot path (`start` or `open_exchange`, `Exchange.body_read`, the stream feed) only notes facts:
bodies, status, the scope, the call-site frame, a clock. Parsing the bodies and building the
`CallRecord` happens in `tokentrail.sinks.pipeline`, off the caller's thread.

An exchange waits up to one writer interval for the pipeline, so it keeps no header objects or other
containers of the HTTP library's (only strings, bytes and ints): thousands of calls waiting with
their headers cost the garbage collector ~5 µs a call (measured on the raw httpx2 exchange of
`benchmarks/overhead.py`).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tokentrail import scope as _scope
from tokentrail._guard import guard
from tokentrail.enrich import callsite
from tokentrail.sinks import pipeline
from tokentrail.records import Flag
from tokentrail.wire import detect, provider_for
from tokentrail.wire._base import ParsedCall, StreamOutcome, StreamParser, WholeBody, WireParser


class Exchange(msgspec.Struct, gc=False):
    """One HTTP attempt in flight. Mutable, touched by one thread at a time, handed to the pipeline
    once. Made by `open_exchange`.

    Not tracked by the cycle collector (thousands wait for the writer at a time, and a tracked
    object is looked at by every collection while it waits). It holds no cycle: `error`, whose
    traceback may lead back to it, is cleared by the pipeline once the record is built."""

    parser: WireParser
    host: str
    path: str
    reads_headers: bool
    """Whether the family reads usage from response headers (Bedrock InvokeModel)."""
    provider: str
    """`provider_for` the host and family, found once per route."""
    retry: str | None
    """The SDK's ``x-stainless-retry-count`` header (openai, anthropic), if sent."""
    body_sent: bytes | None
    """The request body, or ``None`` when it was streamed and never held in memory."""
    library: str
    scope: Any
    """The scope when the request left, not when the record is finished: a stream drained in
    another task still belongs to the code that sent it."""
    site: Any
    """`callsite.capture_above`'s (code, offset) of the caller, or ``None``."""
    t0: int
    """When it was sent (``perf_counter_ns``; the pipeline turns it into wall-clock time)."""
    t_first: int | None = None
    t_end: int | None = None
    status_code: int | None = None
    response_headers: Any = None
    """Only for a family that reads usage from headers (Bedrock InvokeModel), else ``None``."""
    body: bytes | None = None
    result: ParsedCall | None = None
    outcome: StreamOutcome | None = None
    error: BaseException | None = None
    streamed: bool = False
    stream_parser: StreamParser | None = None

    # -- endings -----------------------------------------------------------------------------------
    def body_read(self, status_code: int, headers: Any, body: bytes) -> None:
        """The response body was read whole by the HTTP library."""
        self.t_end = time.perf_counter_ns()
        self.status_code, self.body = status_code, body
        if self.reads_headers:
            self.response_headers = headers
        pipeline.submit(self)

    def failed(self, error: BaseException) -> None:
        """Sending raised: no response at all."""
        self.t_end = time.perf_counter_ns()
        self.error = error
        pipeline.submit(self)

    def stream_started(self, status_code: int, headers: Any) -> StreamParser:
        """The response is being streamed; returns what to feed its chunks to (cheaply: see `Deferred`)."""
        self.status_code = status_code
        if self.reads_headers:
            self.response_headers = headers
        self.streamed = True
        parser = self.stream_parser = Deferred(self.parser, media_type(headers))
        pipeline.streaming[id(self)] = self  # finished as abandoned if still open at exit
        return parser

    def stream_finished(self, parser: StreamParser, outcome: StreamOutcome, error: BaseException | None) -> None:
        """The streamed body ended (read to the end, closed, broken or abandoned). The parsing left
        to do happens in the pipeline, off the caller's thread. Once only: a stream still open at
        exit is finished by the pipeline, and its wrapper may end it again while the interpreter
        tears down."""
        if pipeline.streaming.pop(id(self), None) is None:
            return
        self.t_end = time.perf_counter_ns()
        self.outcome, self.error = outcome, error
        self.stream_parser = parser
        pipeline.submit(self)

    def finish_stream(self) -> ParsedCall:
        """Parse what the stream carried (called by the pipeline)."""
        parser = self.stream_parser
        if parser is None or self.outcome is None:
            return ParsedCall(complete=False)
        return parser.finish(self.outcome)


class Deferred:
    """A stream's chunks, kept by reference and parsed after the stream ends, off the caller's thread.

    Per chunk the caller pays one list append. Past `LIMIT` bytes (a long or endless stream) the
    chunks kept so far go to the family's incremental parser and every later chunk is parsed as it
    passes, so memory stays bounded whatever the stream's length.
    """

    __slots__ = ("_chunks", "_media", "_parser", "_size", "_wire", "terminal")

    LIMIT = 1 << 20

    def __init__(self, wire: WireParser, media: str) -> None:
        self._wire = wire
        self._media = media
        self._parser: StreamParser | None = None
        self._chunks: list[bytes] | None = []
        self._size = 0
        self.terminal: bytes | None = getattr(wire, "terminal", None) if media == "text/event-stream" else None
        """The start of the line of the family's final event (Anthropic's ``event: message_``), or
        ``None``: a stream wrapper that sees it in a chunk asks `ended_by` whether the response is over."""

    def feed(self, chunk: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            self._incremental().feed(chunk)
            return
        chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self.LIMIT:
            self._drain()

    def kept(self) -> list[bytes] | None:
        """The chunks kept so far, for a stream wrapper to append to (then `overflow` past
        `LIMIT` bytes); ``None`` once they went to the incremental parser."""
        return self._chunks

    def overflow(self) -> None:
        """The kept chunks (appended by a wrapper) passed `LIMIT`: parse them, and each later one as fed."""
        if self._chunks is not None:
            self._drain()

    def ended_by(self, chunk: bytes) -> bool:
        """Whether ``chunk``, just fed, completes the stream's final event: an event whose first
        line starts with `terminal`, ended by its blank line, that the family's ``final_event``
        (if it has one) accepts. A JSON string cannot hold a raw line break, so text that merely
        quotes the marker never matches; a final event split across chunks does not either, and
        the stream is finished when it closes, as any other."""
        marker = self.terminal
        at = chunk.rfind(marker) if marker is not None else -1
        if at < 0:
            return False
        if at > 0:
            line_start = chunk[at - 1] in b"\r\n"
        else:
            chunks = self._chunks
            line_start = chunks is not None and (len(chunks) == 1 or chunks[-2].endswith((b"\n", b"\r")))
        if not line_start:
            return False
        ends = [i for i in (chunk.find(b"\n\n", at), chunk.find(b"\r\n\r\n", at), chunk.find(b"\r\r", at)) if i >= 0]
        if not ends:
            return False
        final_event = getattr(self._wire, "final_event", None)
        return final_event is None or final_event(chunk[at : min(ends)], self._chunks)

    def _incremental(self) -> StreamParser:
        if self._parser is None:
            # A plain JSON body read through a streaming response is parsed whole at the end; every
            # other type (SSE, AWS event stream, NDJSON, Cohere's stream+json) is the family's stream.
            if self._media == "application/json":
                self._parser = WholeBody(self._wire)
            else:
                self._parser = self._wire.stream()
        return self._parser

    def _drain(self) -> None:
        parser, chunks = self._incremental(), self._chunks or []
        self._chunks = None
        for chunk in chunks:
            parser.feed(chunk)

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        chunks = self._chunks
        whole = getattr(self._wire, "parse_stream", None)
        if chunks is not None and whole is not None and self._media == "text/event-stream":
            # Every chunk is still here: the family may parse the stream in one go, far cheaper
            # than event by event. It declines (None) whatever it cannot read exactly that way.
            result = whole(b"".join(chunks), outcome)
            if result is not None:
                self._chunks = None
                return result
        if chunks is not None and outcome is StreamOutcome.COMPLETE and self._media not in _STREAM_TYPES:
            # A body a server labelled text/plain, or not at all, read through a streaming response
            # (or none: a 204): read as the same body read whole would be. A JSON document is the
            # whole answer, which the family's stream would not read; anything else, NDJSON lines
            # included, goes to the family's stream as before.
            body = b"".join(chunks)
            if not body or body.lstrip()[:1] in (b"{", b"["):
                result = self._wire.parse(body)
                if not body or Flag.UNPARSED not in result.flags:
                    self._chunks = None
                    return result
        self._drain()
        return self._incremental().finish(outcome)


_STREAM_TYPES = frozenset({
    "text/event-stream", "application/json", "application/x-ndjson", "application/jsonl",
    "application/stream+json", "application/vnd.amazon.eventstream",
})  # fmt: skip
"""Media types the families' stream parsers are meant for (a JSON body is `WholeBody`'s)."""


def record_failure(exchange: Exchange, error: BaseException) -> None:
    """Sending raised: record it. Every hook calls this before re-raising the caller's own error, so a
    failure of tokentrail's here is counted, never raised in its place."""
    with guard("capture.failed"):
        exchange.failed(error)


def header(headers: Any, name: str, key: bytes | None = None, from_end: bool = False) -> str | None:
    """A header's value from any HTTP library's headers (``name`` in lower case; ``key``, the same
    as latin-1 bytes, saves encoding it), or ``None``. ``from_end``: look from the last header back
    (httpx's headers only), for a header that SDKs add after the others; a header sent twice then
    gives its last value, not its first."""
    entries = getattr(headers, "_list", None)
    if type(entries) is list:  # httpx's Headers: (name, lowercased name, value); .get() costs ~5 µs
        # A plain loop: cheaper here than any C-level search (list(map(itemgetter(1), …)) costs
        # ~4,100 instructions for eight headers, this loop ~3,100 to find the seventh, callgrind).
        key = key or name.encode("latin-1")
        try:
            for _, lowered, value in reversed(entries) if from_end else entries:
                if lowered == key:
                    return value.decode("latin-1")  # type: ignore[no-any-return]
            return None
        except (TypeError, ValueError):  # entries of another shape: ask the mapping
            pass
    try:
        return headers.get(name)  # type: ignore[no-any-return]
    except Exception:  # not a mapping we know
        return None


def media_type(headers: Any) -> str:
    """The media type of a response's ``content-type`` (lower case, parameters dropped); "" if none."""
    content_type = header(headers, "content-type", b"content-type") if headers is not None else None
    if content_type is None:
        return ""
    known = _media_types.get(content_type)
    if known is None:
        if len(_media_types) >= 256:  # a server that varies its parameters (a boundary, say)
            _media_types.clear()
        known = _media_types[content_type] = content_type.partition(";")[0].strip().lower()
    return known


_media_types: dict[str, str] = {}
"""`media_type` by ``content-type`` value as received: a server sends the same few
(``text/event-stream; charset=utf-8``), and dropping the parameters cost ~2,000 instructions."""


Route = tuple[WireParser, str, str, bool, str]
"""What detection found for a method, host and path: (parser, host, path, whether the family reads
usage from response headers: Bedrock InvokeModel, `provider_for` the host and family)."""

_routes: dict[tuple[str, str, str], Route | None] = {}
"""Routes by (method, host, path); a hook may key them by the raw form it reads more cheaply."""
_ROUTES_MAX = 4096


def route(method: str, host: str, path: str) -> Route | None:
    """The `Route` of an LLM API request, or ``None`` for other traffic (after one dict lookup)."""
    key = (method, host, path)
    try:
        return _routes[key]
    except KeyError:
        return remember_route(key, method, host, path)


def remember_route(key: tuple[str, str, str], method: str, host: str, path: str) -> Route | None:
    """`detect` the route of (method, host, path), with what the exchange needs of the parser, and
    remember it under ``key`` (bounded, for a program that talks to many endpoints)."""
    parser = detect(method, host, path)
    found = (
        None if parser is None
        else (parser, host, path, hasattr(parser, "usage_from_headers"), provider_for(host, parser.api))
    )  # fmt: skip
    if len(_routes) >= _ROUTES_MAX:
        _routes.clear()
    _routes[key] = found
    return found


def start(
    method: str, host: str, path: str, headers: Any, body: bytes | None, library: str, own_frames: int = 0
) -> Exchange | None:
    """An `Exchange` if the request is an LLM API call, else ``None`` (after one cheap check).
    ``own_frames``: how many frames of the hook's are between its caller and this call."""
    found = route(method, host, path)
    if found is None:
        return None
    return open_exchange(found, headers, body, library, own_frames + 1)


def open_exchange(found: Route, headers: Any, body: bytes | None, library: str, own_frames: int = 0) -> Exchange:
    """The `Exchange` of a request whose `Route` was found, as it leaves. ``own_frames``: how many
    frames of the hook's are between its caller and this call (each frame looked at costs a frame
    object, so the call-site walk starts above them)."""
    parser, host, path, reads_headers, provider = found
    return Exchange(
        parser, host, path, reads_headers, provider,
        # The openai SDK sends it third from the end of its 17 headers: 3 steps back instead of 15.
        header(headers, "x-stainless-retry-count", b"x-stainless-retry-count", True),  # from the end
        # Outside any run: the default run as it is kept, a function call less once it exists.
        body, library, _scope._current.get() or _scope._default_run or _scope.default_run(),
        callsite.capture_above(1 + own_frames),
        time.perf_counter_ns(),
    )  # fmt: skip
