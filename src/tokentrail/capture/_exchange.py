"""The library-neutral core of capture: one `Exchange` per HTTP attempt to an LLM API.

The hot path (`start`, `Exchange.body_read`, the stream feed) only notes facts and references: the
request object, the scope, the call-site frame, clocks. Parsing the body and building the
`CallRecord` happens in `tokentrail.sinks.pipeline`, off the caller's thread.
"""

from __future__ import annotations

import time
from typing import Any

from tokentrail import scope as _scope
from tokentrail.enrich import callsite
from tokentrail.sinks import pipeline
from tokentrail.wire import detect
from tokentrail.wire._base import ParsedCall, StreamOutcome, StreamParser, WholeBody, WireParser


class Exchange:
    """One HTTP attempt in flight. Mutable, touched by one thread at a time, handed to the pipeline once."""

    __slots__ = (
        "parser",
        "method",
        "host",
        "path",
        "headers",
        "body_sent",
        "library",
        "scope",
        "site",
        "started_ns",
        "t0",
        "t_first",
        "t_end",
        "status_code",
        "response_headers",
        "body",
        "result",
        "outcome",
        "error",
        "streamed",
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
        """The response is being streamed; returns the parser to feed with its chunks."""
        self.status_code, self.response_headers = status_code, headers
        self.streamed = True
        content_type = headers.get("content-type", "") if headers is not None else ""
        # A plain JSON body read through a streaming response is parsed whole at the end; every other
        # type (SSE, AWS event stream, NDJSON, Cohere's stream+json) is the family's stream format.
        if content_type.partition(";")[0].strip().lower() == "application/json":
            return WholeBody(self.parser)
        return self.parser.stream()

    def stream_finished(self, parser: StreamParser, outcome: StreamOutcome, error: BaseException | None) -> None:
        """The streamed body ended (read to the end, closed, broken or abandoned)."""
        self.t_end = time.perf_counter_ns()
        self.outcome, self.error = outcome, error
        self.result = parser.finish(outcome)
        pipeline.submit(self)


def start(method: str, host: str, path: str, headers: Any, body: bytes | None, library: str) -> Exchange | None:
    """An `Exchange` if the request is an LLM API call, else ``None`` (after one cheap check)."""
    parser = detect(method, host, path)
    if parser is None:
        return None
    return Exchange(parser, method, host, path, headers, body, library)
