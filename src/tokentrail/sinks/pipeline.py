"""From captured exchanges to stored records, off the caller's thread.

    hot path ─submit()─▶ pending (deque) ─process_pending()─▶ records + live totals ─▶ ready (deque)
                                                                          writer thread ─▶ sinks

`process_pending` parses bodies, builds `CallRecord`s, runs the enrichers and updates the scopes' live
totals. The writer thread runs it every `interval` seconds; reading a scope's totals runs it too, so
totals always include every finished call. Sink failures keep records queued for the next round;
records are dropped only past `max_queue`, and every drop is counted and stored. At exit (and on
SIGTERM) there is no next round: the last flush may take `exit_timeout` seconds, and what the sinks
could not write by then is counted as dropped and reported (`drop_unwritten`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from tokentrail._guard import failed, guard, report
from tokentrail.enrich.callsite import resolve
from tokentrail.errors import RecordsDroppedWarning
from tokentrail.records import CallRecord, CallStatus, Cost, Flag, new_id
from tokentrail.scope import Call, Scope, _listeners, add_calls
from tokentrail.usage import REPORTED, Provenance, Source, Usage
from tokentrail.wire._base import ParsedCall, RequestInfo, StreamOutcome

if TYPE_CHECKING:
    from tokentrail.capture._exchange import Exchange

log = logging.getLogger("tokentrail")


class ScopeEvent(tuple[str, Scope, int]):
    """("open" | "close", scope, wall-clock ns)."""

    __slots__ = ()


class Sink(Protocol):
    """Where finished records go. Called from one thread at a time; may raise (records are kept)."""

    def write(self, records: list[CallRecord], scopes: list[ScopeEvent], dropped: int) -> None: ...

    def close(self) -> None: ...


Enricher = Callable[[CallRecord, "Exchange"], CallRecord]
Pricer = Callable[
    [str, "str | None", "str | None", int, Usage, Any, str, frozenset[str]], "tuple[Cost | None, frozenset[str]]"
]

anatomy_on = False
"""Record each prompt's anatomy (tokens per part); set by ``instrument(anatomy=True)``. Off by
default: it tokenizes every prompt in the background, which costs CPU in proportion to its size."""
pricer: Pricer | None = None
"""Prices a call from its parts while its record is built (one construction, no copy); set by instrument()."""

max_queue = 1_000_000
"""Captured exchanges waiting to be processed before new ones are dropped (and counted)."""
interval = 0.2
"""Seconds between writer rounds."""
exit_timeout = 2.0
"""Seconds the flush at exit or on SIGTERM may wait for a sink (a ledger another process holds
locked) before what is left unwritten is counted as dropped and reported."""
exit_deadline: float | None = None
"""``time.monotonic()`` by which the flush at exit or on SIGTERM must end; sinks stop waiting for a
lock then. ``None`` while the program runs."""

_pending: deque[Any] = deque()
_ready: deque[CallRecord | ScopeEvent] = deque()
_dropped = 0
_dropped_unwritten = 0
_process_lock = threading.Lock()
_write_lock = threading.Lock()
_sinks: list[Sink] = []
_enrichers: list[Enricher] = []
_subscribers: list[Callable[[CallRecord], None]] = []
_writer: threading.Thread | None = None
_stop = threading.Event()
_failures: dict[tuple[str, str, int], tuple[int, float]] = {}
_HOST = socket.gethostname()
_wall_offset = 0
"""Wall-clock ns minus ``perf_counter_ns`` now: exchanges note only the latter (one clock read less on
the caller's thread); refreshed every round, so a clock step shifts start times by one round at most."""
streaming: dict[int, Exchange] = {}
"""The exchanges of streamed responses not yet ended, by id. At exit each is finished as abandoned,
so that a stream the program still held is recorded."""
_announced: set[str] = set()
"""Scopes already handed to the sinks; a record's unannounced ancestors are announced before it."""


# -- hot path --------------------------------------------------------------------------------------


def submit(item: Exchange | ScopeEvent) -> None:
    """Queue a finished exchange or a scope event. O(1), no I/O."""
    global _dropped
    if len(_pending) >= max_queue:
        _dropped += 1
        if type(item) is not ScopeEvent:
            item.error = None  # its traceback may lead back to the exchange: see `Exchange`
        if _dropped == 1:
            warnings.warn(
                f"tokentrail's queue is full ({max_queue} items); records are being dropped and counted",
                RecordsDroppedWarning,
                stacklevel=3,
            )
        return
    _pending.append(item)
    if _writer is None and _sinks:
        _start_writer()


def _on_scope(event: str, scope: Scope) -> None:
    submit(ScopeEvent((event, scope, time.time_ns())))


_listeners.append(_on_scope)


# -- processing ------------------------------------------------------------------------------------


def process_pending() -> None:
    """Turn every queued exchange into a record and count it in its scopes' live totals.

    Always takes the lock, even with nothing queued: another thread may be processing items it has
    already taken off the queue, and the caller must see them counted when this returns.
    """
    global _wall_offset
    with _round(), _process_lock:  # the round ends once the lock is free (`flush_then`)
        _wall_offset = time.time_ns() - time.perf_counter_ns()
        finished: list[Call] = []
        records: list[CallRecord] = []
        while _pending:
            item = _pending.popleft()
            if type(item) is ScopeEvent:
                if item[0] == "open":
                    _announced.add(item[1].id)
                _ready.append(item)
                continue
            if item.scope.id not in _announced:
                _announce(item.scope)
            record: CallRecord | None = None
            try:  # not guard(): a bare try costs nothing until it raises, and this runs per call
                record = build(item)
                for enrich in _enrichers:
                    with guard(f"enrich.{getattr(enrich, '__name__', 'step')}"):
                        record = enrich(record, item)
            except Exception as exc:
                failed("pipeline.build", exc)
            finally:
                # A bug of ours must not lose the call: it is stored with what is certain (who,
                # where, when, status), its usage unknown and flagged; the error is counted.
                item.error = None  # its traceback may lead back to the exchange: see `Exchange`
                if record is None:
                    record = fallback_record(item)
                _ready.append(record)
            finished.append((item.scope, record.usage, record.provenance, record.model, record.cost))
            records.append(record)
        try:  # once per round: calls summed per (scope, model), each sum added up the scope tree
            add_calls(finished)
        except Exception as exc:
            failed("pipeline.totals", exc)
        for subscriber in _subscribers:  # after the totals: a subscriber sees its record counted
            for record in records:
                with guard("subscriber"):
                    subscriber(record)


def fallback_record(exchange: Exchange) -> CallRecord:
    """The record of an exchange whose parsing failed: facts only, usage unknown, flag ``unparsed``."""
    code = exchange.status_code
    if code is None:
        status = CallStatus.NETWORK_ERROR
    else:
        status = CallStatus.OK if code < 400 else CallStatus.HTTP_ERROR
    t_end = exchange.t_end or exchange.t0
    started_ns = exchange.t0 + _wall_offset
    return CallRecord(
        id=new_id(started_ns),
        api=exchange.parser.api,
        provider=exchange.provider,
        host=exchange.host,
        endpoint=exchange.path,
        stream=exchange.streamed,
        status=status,
        http_status=code,
        started_ns=started_ns,
        latency_ns=t_end - exchange.t0,
        flags=frozenset({Flag.UNPARSED}),
        **dict(zip(_PLACE_FIELDS, _where_from(exchange.scope), strict=True)),
    )


def _announce(scope: Scope) -> None:
    """Scopes opened before any sink existed (e.g. before instrument()) are stored with their first call."""
    missing = []
    node: Scope | None = scope
    while node is not None and node.id not in _announced:
        missing.append(node)
        node = node.parent
    for node in reversed(missing):
        _announced.add(node.id)
        _ready.append(ScopeEvent(("open", node, node.started_ns)))


def _attempt(exchange: Exchange, ok: bool) -> int:
    """1 + the retries before this attempt: from the SDK's retry header, else from an identical
    request that failed moments before (same host, path and body)."""
    header = exchange.retry  # openai and anthropic SDKs send it
    if header is not None and header.isascii() and header.isdigit() and len(header) < 7:
        return int(header) + 1
    if ok and not _failures:  # no failed request to be a retry of (nearly always)
        return 1
    key = (exchange.host, exchange.path, hash(exchange.body_sent))
    now = time.monotonic()
    previous = _failures.pop(key, None)
    attempt = previous[0] + 1 if previous is not None and now - previous[1] < 300 else 1
    if not ok:
        if len(_failures) > 1000:
            _failures.clear()
        _failures[key] = (attempt, now)
    return attempt


def build(exchange: Exchange) -> CallRecord:
    """The `CallRecord` of a finished exchange."""
    parser = exchange.parser
    info = parser.parse_request(exchange.body_sent or b"")
    from_path, from_headers, refine = _parser_traits.get(parser) or _traits(parser)
    if from_path is not None:  # Gemini and Bedrock name the model (and streaming) in the path
        in_path = _in_path.get((parser, exchange.path)) or _path_info(parser, from_path, exchange.path)
        info = in_path if not (info.model or info.stream) else RequestInfo(
            model=info.model or in_path.model, stream=info.stream or in_path.stream)  # fmt: skip
    status_code = exchange.status_code
    error = type(exchange.error).__name__ if exchange.error is not None else None

    if exchange.streamed:
        result = exchange.finish_stream()
    elif exchange.body is not None:
        result = parser.parse(exchange.body) if status_code is not None and status_code < 400 else ParsedCall()
    else:
        result = ParsedCall(complete=False)
    provider = exchange.provider
    if result.usage.is_empty and status_code is not None and status_code < 400:
        if from_headers is not None and exchange.response_headers is not None:
            result = _merge_header_usage(result, from_headers(exchange.response_headers))
    if refine is not None and result.raw_usage is not None and result.usage_json is None:
        result = refine(result, provider)

    if status_code is None:
        cancelled = exchange.error is not None and not isinstance(exchange.error, Exception)
        status = _CANCELLED if cancelled else _NETWORK_ERROR
    elif status_code >= 400:
        status = _HTTP_ERROR
    elif exchange.streamed and not result.complete and status_code in (200, 206):
        # Only a 200's body is an answer to cut short: a 204, 304 or 307 promised none.
        broken = exchange.outcome in (StreamOutcome.BROKEN, StreamOutcome.COMPLETE)
        status = _NETWORK_ERROR if broken else _CANCELLED
    else:
        status = _OK
    flags = result.flags  # a frozenset; the common call adds nothing to it
    if status is _HTTP_ERROR:  # an error's body left unread is not an answer cut short
        flags = (flags - _FLAG_STREAM_INCOMPLETE) | _FLAG_HTTP_ERROR
    elif not result.complete and exchange.streamed and status_code in (200, 206):
        flags = flags | _FLAG_STREAM_INCOMPLETE

    if result.provenance is not REPORTED and (
        status is _OK or (exchange.streamed and status is not _HTTP_ERROR)
    ):
        # A cut stream's prompt was billed, and its text so far is a floor of its output.
        result = count_missing(result, parser.api, exchange.body_sent, result.model or info.model)
        flags = flags | result.flags

    t_end = exchange.t_end or exchange.t0
    started_ns = exchange.t0 + _wall_offset
    model = result.model or info.model
    usage = result.usage if result.usage is not None else Usage()
    cost = None
    if pricer is not None:
        cost, flags = pricer(provider, model, info.model, started_ns, usage, result.raw_usage, parser.api, flags)

    anatomy = None
    if anatomy_on and exchange.body_sent and status is not _NETWORK_ERROR:
        from tokentrail.enrich.anatomy import anatomy as anatomy_of

        parts = anatomy_of(parser.api, exchange.body_sent, model)
        anatomy = None if parts is None else parts.as_dict()

    ok = status is _OK
    # The common call, without calling _attempt(): no retry header, no failed request to be a retry of.
    attempt = 1 if ok and exchange.retry is None and not _failures else _attempt(exchange, ok)
    # By position, in `CallRecord`'s field order (`_BUILT_FIELDS`): keywords cost ~1 µs a call.
    return CallRecord(
        new_id(started_ns), parser.api, provider, exchange.host, exchange.path, info.model, model, info.stream, status,
        status_code, error, attempt, started_ns, t_end - exchange.t0,
        None if exchange.t_first is None else exchange.t_first - exchange.t0, usage, result.provenance,
        result.usage_json or raw_usage_json(result.raw_usage), cost, flags, result.response_id, resolve(exchange.site),
        *(_places.get(exchange.scope) or _where_from(exchange.scope)), anatomy,
    )  # fmt: skip


def _traits(parser: Any) -> tuple[Any, Any, Any]:
    """A family's optional steps, bound to ``parser``: ``request_from_path`` (Gemini and Bedrock name
    the model in the path), ``usage_from_headers`` (Bedrock InvokeModel), ``refine`` (the quirks of
    OpenAI-compatible servers); ``None`` for each it lacks. Looked up once per parser: a missing
    attribute costs an AttributeError inside ``getattr`` on every call: `build` finds them in
    `_parser_traits` and calls this only for a parser it has not seen."""
    found = _parser_traits[parser] = tuple(  # type: ignore[assignment]
        getattr(parser, name, None) for name in ("request_from_path", "usage_from_headers", "refine")
    )
    return found  # type: ignore[return-value]


def _path_info(parser: Any, from_path: Callable[[str], RequestInfo], path: str) -> RequestInfo:
    """``from_path(path)``, remembered: a program calls a few models, and reading one from its path
    cost ~10,000 instructions a record (Gemini)."""
    if len(_in_path) >= 4096:
        _in_path.clear()
    found = _in_path[(parser, path)] = from_path(path)
    return found


_in_path: dict[tuple[Any, str], RequestInfo] = {}
"""`_path_info` by (parser, path): a `RequestInfo` is immutable, so records share it."""


_parser_traits: dict[Any, tuple[Any, Any, Any]] = {}
"""`_traits` by parser (parsers hash by identity, or a frozen dataclass by value)."""


_FLAG_HTTP_ERROR = frozenset({Flag.HTTP_ERROR})
_FLAG_STREAM_INCOMPLETE = frozenset({Flag.STREAM_INCOMPLETE})
# Statuses as plain globals for build(): on Python 3.11 reading a member off its class
# (``CallStatus.OK``) runs EnumType's ``__getattr__`` hook, ~1,000 instructions a read (callgrind;
# 3.12 dropped the hook), and build() reads three a call.
_OK, _HTTP_ERROR, _NETWORK_ERROR, _CANCELLED = (
    CallStatus.OK, CallStatus.HTTP_ERROR, CallStatus.NETWORK_ERROR, CallStatus.CANCELLED)  # fmt: skip


_PLACE_FIELDS = ("scope_id", "scope_path", "scope_id_path", "run_id", "run", "agent", "step", "tool", "pid",
                 "host_name", "tags")  # fmt: skip
# What build() passes by position: these fields, then `_PLACE_FIELDS`, then ``anatomy``.
_BUILT_FIELDS = (
    "id api provider host endpoint requested_model model stream status http_status error attempt started_ns "
    "latency_ns first_token_ns usage provenance raw_usage_json cost flags response_id call_site"
).split()
if CallRecord.__struct_fields__[: len(_BUILT_FIELDS) + 12] != (*_BUILT_FIELDS, *_PLACE_FIELDS, "anatomy"):
    raise ImportError("CallRecord's fields moved: update build() and _BUILT_FIELDS")  # a developer's error


def _where_from(scope: Scope) -> tuple[Any, ...]:
    """The fields a record takes from the scope it was made in, and the process that made it, in
    `_PLACE_FIELDS` order (the same for every call of a scope: built once per scope)."""
    where = _places.get(scope)
    if where is None:
        if len(_places) >= 4096:
            _places.clear()
        where = _places[scope] = _place(scope)
    return where


_places: dict[Scope, tuple[Any, ...]] = {}
"""`_where_from` of the scopes seen lately (scopes hash by identity); emptied in a forked child."""


def _place(scope: Scope) -> tuple[Any, ...]:
    run = scope.run or scope
    return (scope.id, scope.name_path, scope.id_path, run.id, run.name, scope.agent, scope.step, scope.tool,
            os.getpid(), _HOST, scope.tags)  # fmt: skip


def count_missing(result: ParsedCall, api: str, body: bytes | None, model: str | None) -> ParsedCall:
    """Fill the counts the provider did not report by counting (input from the request body, output
    from the text seen); reported and partial figures are never replaced, nor invalid ones."""
    if Flag.INVALID_VALUE in result.flags:  # the provider sent counts we could not read: they stay null, kept raw
        return result
    prov, usage = result.provenance, result.usage
    need_input = prov.input is Source.MISSING and usage.input_tokens is None and body
    need_output = prov.output is Source.MISSING and usage.output_tokens is None and result.output_text is not None
    if not (need_input or need_output):
        return result
    from tokentrail.enrich.count import count_request, count_text

    flags = set(result.flags)
    tokenizer = prov.tokenizer
    inp, out = usage.input_tokens, usage.output_tokens
    in_src, out_src = prov.input, prov.output
    if need_input:
        counted = count_request(api, body, model)  # type: ignore[arg-type]
        if counted is not None:
            inp, in_src, tokenizer = counted.tokens, counted.source, counted.tokenizer
            if not counted.complete:
                flags.add(Flag.COUNT_FLOOR)
    if need_output:
        text = result.output_text()  # type: ignore[misc]
        counted = count_text(text, model) if text is not None else None
        if counted is not None:
            out, out_src, tokenizer = counted.tokens, counted.source, counted.tokenizer
            if not counted.complete or not result.complete:
                flags.add(Flag.COUNT_FLOOR)
    return ParsedCall(
        model=result.model,
        usage=Usage(
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
        ),
        provenance=Provenance(input=in_src, output=out_src, tokenizer=tokenizer),
        raw_usage=result.raw_usage,
        usage_json=result.usage_json,
        flags=frozenset(flags),
        response_id=result.response_id,
        complete=result.complete,
    )


def _merge_header_usage(result: ParsedCall, from_headers: ParsedCall | None) -> ParsedCall:
    if from_headers is None:
        return result
    return ParsedCall(
        model=result.model,
        usage=from_headers.usage,
        provenance=from_headers.provenance,
        raw_usage=from_headers.raw_usage,
        flags=result.flags | from_headers.flags,
        response_id=result.response_id,
        complete=result.complete,
    )


# -- writing ---------------------------------------------------------------------------------------


def write_ready() -> None:
    """Hand every ready record to the sinks. A sink that fails keeps its batch, in order, and gets it
    again with the next round's: each sink has its own backlog, so no sink ever gets a record twice."""
    global _dropped_unwritten
    with _round(), _write_lock:  # taken even when nothing is ready: the writer may be mid-batch
        batch: list[Any] = []
        while _ready:
            batch.append(_ready.popleft())
        dropped = _dropped - _dropped_unwritten
        _dropped_unwritten += dropped
        for sink in _sinks:
            items, sink_dropped, _ = _backlogs.pop(sink, None) or ([], 0, None)
            items += batch
            sink_dropped += dropped
            if not items and not sink_dropped:
                continue
            records = [r for r in items if type(r) is CallRecord]
            scopes = [s for s in items if type(s) is ScopeEvent]
            try:
                sink.write(records, scopes, sink_dropped)
            except Exception as exc:
                _backlogs[sink] = (items, sink_dropped, exc)
                report("sink.write", exc)


_backlogs: dict[Sink, tuple[list[Any], int, Exception]] = {}
"""What a sink failed to write: its items in order, the drops it has not stored, and why, retried
next round."""


def drop_unwritten(why: str) -> int:
    """Count what the sinks could not write as dropped, and say so once (log, so stderr unless the
    program configured logging): for the end of the process, when there is no next round. Returns
    the number of records dropped."""
    global _dropped, _dropped_unwritten
    # The writer gives up its wait at `exit_deadline` too; past that, read the backlogs regardless.
    locked = _write_lock.acquire(timeout=1.0)
    try:
        lost: dict[int, CallRecord] = {}
        reasons = []
        for sink, (items, sink_dropped, exc) in list(_backlogs.items()):
            records = [r for r in items if type(r) is CallRecord]
            lost.update((id(r), r) for r in records)
            also = []
            if len(items) > len(records):
                also.append(f"{len(items) - len(records)} scope events")
            if sink_dropped:
                also.append(f"the count of {sink_dropped} earlier drops")
            nor = f" (nor {', '.join(also)})" if also else ""
            reasons.append(f"{len(records)} not written to {sink}{nor}: {exc}")
        unhanded = [r for r in _ready if type(r) is CallRecord] if _sinks else []
        if unhanded:  # handed to no sink (the last flush itself failed)
            lost.update((id(r), r) for r in unhanded)
            reasons.append(f"{len(unhanded)} never handed to a sink")
        _backlogs.clear()
        _ready.clear()
        if lost:
            _dropped += len(lost)
            _dropped_unwritten += len(lost)  # no sink is left to store the count: it is reported here
        if reasons:
            log.warning(
                "tokentrail: %d records were dropped, unwritten when %s: %s",
                len(lost), why, "; ".join(reasons),
            )  # fmt: skip
        return len(lost)
    finally:
        if locked:
            _write_lock.release()


def flush() -> None:
    """Process and write everything captured so far. Blocks until the sinks have it."""
    process_pending()
    write_ready()


@contextlib.contextmanager
def _round() -> Iterator[None]:
    """Mark this thread as inside a round (it holds a pipeline lock, which is not reentrant) until
    the block ends; then run what a signal handler left for the end of the round (`flush_then`)."""
    me = threading.get_ident()
    _in_round.add(me)
    try:
        yield
    finally:
        _in_round.discard(me)
        left = _after_round.pop(me, None)
        if left is not None:
            flush_then(left)


def flush_then(then: Callable[[], None]) -> None:
    """`flush()`, then ``then()``: for a signal handler, which runs between any two bytecodes of the
    main thread. When that thread was inside a round, holding the locks (waiting for them would hang
    it), both run when that round ends instead."""
    global exit_deadline
    me = threading.get_ident()
    if me in _in_round:
        _after_round[me] = then
        return
    exit_deadline = time.monotonic() + exit_timeout  # the process is being ended: no long waits
    try:
        with guard("flush.signal"):
            flush()
    finally:
        try:
            then()
        finally:  # the handler let the process go on (or it is exiting: `_at_exit` sets its own)
            exit_deadline = None


_in_round: set[int] = set()
"""Threads inside `process_pending` or `write_ready`."""
_after_round: dict[int, Callable[[], None]] = {}
"""What `flush_then` left for the end of a thread's round, by thread."""


def _run_writer() -> None:
    while not _stop.wait(interval):
        try:
            process_pending()
            write_ready()
        except Exception as exc:  # the writer must outlive any bug
            report("writer", exc)


def _start_writer() -> None:
    global _writer
    with _write_lock:
        if _writer is None:
            _stop.clear()
            _writer = threading.Thread(target=_run_writer, name="tokentrail-writer", daemon=True)
            _writer.start()


# -- configuration ---------------------------------------------------------------------------------


def add_sink(sink: Sink) -> None:
    _sinks.append(sink)
    _start_writer()


def remove_sinks() -> list[Sink]:
    """Detach every sink (after a final flush) and return them."""
    flush()
    global _dropped_unwritten
    removed = list(_sinks)
    _sinks.clear()
    # What a removed sink failed to write goes to the next sinks instead (as one copy, in order).
    unwritten: dict[int, Any] = {}
    for items, _, _ in _backlogs.values():
        unwritten.update((id(item), item) for item in items)
    _dropped_unwritten -= max((dropped_here for _, dropped_here, _ in _backlogs.values()), default=0)
    _backlogs.clear()
    _ready.extendleft(reversed(list(unwritten.values())))
    return removed


def add_enricher(enricher: Enricher) -> None:
    if enricher not in _enrichers:
        _enrichers.append(enricher)


def subscribe(callback: Callable[[CallRecord], None]) -> Callable[[], None]:
    """Call ``callback(record)`` for every finished record (from the processing thread).

    Returns a function that unsubscribes.
    """
    _subscribers.append(callback)
    return lambda: _subscribers.remove(callback) if callback in _subscribers else None


def dropped() -> int:
    """Records dropped in this process: the queue was full, or the sinks could not write them by
    the end of the exit's (or SIGTERM's) flush."""
    return _dropped


def raw_usage_json(value: Any) -> str | None:
    """The raw usage as stored: compact JSON (msgspec, several times cheaper than ``json.dumps``),
    what it cannot encode as text, or ``None``."""
    global _encode
    if value is None:
        return None
    if _encode is None:
        import msgspec

        _encode = msgspec.json.Encoder(enc_hook=str).encode
    try:
        return _encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        return json.dumps(repr(value))


_encode: Callable[[Any], bytes] | None = None


def _at_exit() -> None:
    global exit_deadline
    _stop.set()
    # A ledger another process holds locked must not hold up the exit (it waited SQLite's busy
    # timeout, 60 s, in the bug hunt): the flush gives up at the deadline, and what is left is
    # counted and reported, since there is no next round.
    exit_deadline = time.monotonic() + exit_timeout
    with guard("flush.exit"):
        for exchange in list(streaming.values()):  # still held: ended by the exit
            exchange.stream_finished(exchange.stream_parser, StreamOutcome.ABANDONED, None)
        flush()
    with guard("flush.exit"):
        drop_unwritten("the program exited")
    for sink in _sinks:
        with guard("sink.close"):
            sink.close()


def _after_fork_in_child() -> None:
    # The parent writes what it had queued; the child starts empty with fresh locks, a writer of its
    # own (started on its first record) and sinks that reopen their connections.
    global _process_lock, _write_lock, _writer, _dropped, _dropped_unwritten, _stop
    _process_lock, _write_lock = threading.Lock(), threading.Lock()
    _stop = threading.Event()
    _pending.clear()
    _ready.clear()
    streaming.clear()  # the parent's: the parent records them
    _backlogs.clear()
    _places.clear()  # they name the parent's pid
    _writer = None
    _dropped = _dropped_unwritten = 0
    for sink in _sinks:
        reopen = getattr(sink, "after_fork", None)
        if reopen is not None:
            reopen()


def _before_fork() -> None:
    # No thread of ours may be inside SQLite (or half-way through a batch) when the process forks:
    # the child would inherit SQLite's internal mutexes locked and hang on its first write.
    _process_lock.acquire()
    _write_lock.acquire()


def _after_fork_in_parent() -> None:
    _write_lock.release()
    _process_lock.release()


atexit.register(_at_exit)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
