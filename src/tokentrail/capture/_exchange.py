"""The library-neutral core of capture: one `Exchange` per HTTP attempt to an LLM API.

The hot path (`start`, `Exchange.body_read`, the stream feed) only notes facts and references: the
request object, the scope, the call-site frame, clocks. Parsing the body and building the
`CallRecord` happens in `tokentrail.sinks.pipeline`, off the caller's thread.
"""

from __future__ import annotations

import time
from typing import Any

from tokentrail import scope as _scope
from tokentrail._guard import guard
from tokentrail.enrich import callsite
from tokentrail.sinks import pipeline
from tokentrail.wire import detect
from tokentrail.wire._base import ParsedCall, StreamOutcome, StreamParser, WholeBody, WireParser


class Exchange:
    """One HTTP attempt in flight. Mutable, touched by one thread at a time, handed to the pipeline once."""

    __slots__ = (
        "body",
        "body_sent",
        "error",
        "headers",
        "host",
        "library",
        "method",
        "outcome",
        "parser",
        "path",
        "response_headers",
        "result",
        "scope",
        "site",
        "started_ns",
        "status_code",
        "stream_parser",
        "streamed",
        "t0",
        "t_end",
        "t_first",
    )

    def __init__(
        self, parser: WireParser, method: str, host: str, path: str, headers: Any, body: bytes | None, library: str
    ) -> None:
        self.parser = parser
        self.method = method
        self.host = host
        self.path = path
        self.headers = headers
        """The request headers: any mapping with a case-insensitive ``get`` (read off the hot path)."""
        self.body_sent = body
        """The request body, or ``None`` when it was streamed and never held in memory."""
        self.library = library
        # The scope is taken when the request leaves, not when the record is finished: a stream
        # drained in another task still belongs to the code that sent it.
        self.scope = _scope.current_scope()
        self.site = callsite.capture()
        self.started_ns = time.time_ns()
        self.t0 = time.perf_counter_ns()
        self.t_first: int | None = None
        self.t_end: int | None = None
        self.status_code: int | None = None
        self.response_headers: Any = None
        self.body: bytes | None = None
        self.result: ParsedCall | None = None
        self.outcome: StreamOutcome | None = None
        self.error: BaseException | None = None
        self.streamed = False
        self.stream_parser: StreamParser | None = None

    # -- endings -----------------------------------------------------------------------------------
    def body_read(self, status_code: int, headers: Any, body: bytes) -> None:
        """The response body was read whole by the HTTP library."""
        self.t_end = time.perf_counter_ns()
        self.status_code, self.response_headers, self.body = status_code, headers, body
        pipeline.submit(self)

    def failed(self, error: BaseException) -> None:
        """Sending raised: no response at all."""
        self.t_end = time.perf_counter_ns()
        self.error = error
        pipeline.submit(self)

    def stream_started(self, status_code: int, headers: Any) -> StreamParser:
        """The response is being streamed; returns what to feed its chunks to (cheaply: see `Deferred`)."""
        self.status_code, self.response_headers = status_code, headers
        self.streamed = True
        return Deferred(self.parser, headers)

    def stream_finished(self, parser: StreamParser, outcome: StreamOutcome, error: BaseException | None) -> None:
        """The streamed body ended (read to the end, closed, broken or abandoned). The parsing left
        to do happens in the pipeline, off the caller's thread."""
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

    __slots__ = ("_chunks", "_headers", "_parser", "_size", "_wire")

    LIMIT = 1 << 20

    def __init__(self, wire: WireParser, headers: Any) -> None:
        self._wire = wire
        self._headers = headers
        self._parser: StreamParser | None = None
        self._chunks: list[bytes] | None = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            self._incremental().feed(chunk)
            return
        chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self.LIMIT:
            self._drain()

    def _incremental(self) -> StreamParser:
        if self._parser is None:
            # A plain JSON body read through a streaming response is parsed whole at the end; every
            # other type (SSE, AWS event stream, NDJSON, Cohere's stream+json) is the family's stream.
            if media_type(self._headers) == "application/json":
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
        if chunks is not None and whole is not None and media_type(self._headers) == "text/event-stream":
            # Every chunk is still here: the family may parse the stream in one go, far cheaper
            # than event by event. It declines (None) whatever it cannot read exactly that way.
            result = whole(b"".join(chunks), outcome)
            if result is not None:
                self._chunks = None
                return result
        self._drain()
        return self._incremental().finish(outcome)


def record_failure(exchange: Exchange, error: BaseException) -> None:
    """Sending raised: record it. Every hook calls this before re-raising the caller's own error, so a
    failure of tokentrail's here is counted, never raised in its place."""
    with guard("capture.failed"):
        exchange.failed(error)


def media_type(headers: Any) -> str:
    """The media type of a response's ``content-type`` (lower case, parameters dropped); "" if none."""
    content_type = headers.get("content-type", "") if headers is not None else ""
    return content_type.partition(";")[0].strip().lower()


def start(method: str, host: str, path: str, headers: Any, body: bytes | None, library: str) -> Exchange | None:
    """An `Exchange` if the request is an LLM API call, else ``None`` (after one cheap check)."""
    parser = detect(method, host, path)
    if parser is None:
        return None
    return Exchange(parser, method, host, path, headers, body, library)
