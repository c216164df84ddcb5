"""Byte-stream wrappers that pass every chunk through unchanged and finish their record exactly once.

They wrap the HTTP library's byte stream, not an SDK's stream class, so they work under any SDK.
The record is finished on every exit: read to the end, ``close()``, an error while reading, and
garbage collection of a stream nobody closed (STYLE.md §6).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from itertools import islice
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tokentrail._guard import failed
from tokentrail.capture._exchange import Deferred
from tokentrail.wire._base import StreamOutcome, StreamParser

if TYPE_CHECKING:
    from tokentrail.capture._exchange import Exchange

CHECK_EVERY = 64
"""A sync wrapper adds up the kept chunks' size once per this many: a stream holds at most
``Deferred.LIMIT`` bytes plus this many chunks before it is parsed as it passes."""

# The outcomes as plain globals: on Python 3.11 reading a member off its class
# (``StreamOutcome.COMPLETE``) runs EnumType's ``__getattr__`` hook, ~1,000 instructions a read
# (callgrind; 3.12 dropped the hook), and a stream's wrapper reads three on the caller's thread.
_COMPLETE, _CLOSED_EARLY, _BROKEN, _ABANDONED = (
    StreamOutcome.COMPLETE, StreamOutcome.CLOSED_EARLY, StreamOutcome.BROKEN, StreamOutcome.ABANDONED)  # fmt: skip

_classes: dict[str, tuple[type, type]] = {}
_filters: dict[str, tuple[type, type]] = {}


class _Observer:
    """The state shared by the sync and async wrappers."""

    __slots__ = ()
    _inner: Any
    _exchange: Exchange | None
    _parser: StreamParser
    _first: bool

    def _first_chunk(self) -> None:
        self._first = False
        if self._exchange is not None:
            self._exchange.t_first = time.perf_counter_ns()

    def _finish_at_final_event(self) -> bool:
        """The response's final event has arrived: finish the record now rather than at the end of
        the body. A client may stop reading there and leave the response open (litellm does with
        Anthropic streams); the call must still be in the live totals when that loop ends, not when
        the response is closed or collected. Returns False: stop observing the chunks after."""
        self._finish(_COMPLETE)
        return False

    def _finish(self, outcome: StreamOutcome, error: BaseException | None = None) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            try:
                exchange.stream_finished(self._parser, outcome, error)
            except Exception as exc:
                failed("stream.finish", exc)

    def __del__(self) -> None:
        if getattr(self, "_exchange", None) is not None:
            self._finish(_ABANDONED)


def _kept(parser: StreamParser) -> list[bytes] | None:
    """The list a `Deferred` parser keeps chunks in, when a wrapper may append to it directly: no
    final event to watch for, no incremental parsing started."""
    if type(parser) is Deferred and parser.terminal is None:
        return parser.kept()
    return None


def stream_classes(module: ModuleType) -> tuple[type, type]:
    """(sync wrapper, async wrapper) subclassing ``module``'s byte-stream bases (httpx or httpx2),
    because ``Response.iter_raw`` checks ``isinstance(stream, SyncByteStream)``."""
    name = module.__name__
    if name in _classes:
        return _classes[name]

    class ObservedStream(_Observer, module.SyncByteStream):  # type: ignore[misc,name-defined]
        __slots__ = ("_exchange", "_first", "_inner", "_iterated", "_parser")

        def __init__(self, inner: Any, exchange: Exchange, parser: StreamParser) -> None:
            self._inner, self._exchange, self._parser = inner, exchange, parser
            self._first, self._iterated = True, False

        def __iter__(self) -> Iterator[bytes]:
            # Only the first pass is the call's. openai 3.x drains an async stream after the SDK stopped
            # at [DONE] by iterating it again: a stream that can be read twice (in memory, a mock, a
            # replay) starts over, and its second copy must not be counted.
            if self._iterated or self._exchange is None:
                return iter(self._inner)
            self._iterated = True
            return self._observed()

        def _observed(self) -> Iterator[bytes]:
            outcome = _CLOSED_EARLY
            error: BaseException | None = None
            chunks = iter(self._inner)
            kept = _kept(self._parser)
            try:
                if kept is not None:  # the common case: a chunk costs one list append, inlined here
                    for chunk in chunks:
                        self._first_chunk()
                        kept.append(chunk)
                        yield chunk
                        break
                    append, size, limit = kept.append, sum(map(len, kept)), Deferred.LIMIT
                    while True:  # the size is added up per CHECK_EVERY chunks: per chunk it cost a third
                        before = len(kept)
                        for chunk in islice(chunks, CHECK_EVERY):
                            append(chunk)
                            yield chunk
                        if len(kept) - before < CHECK_EVERY:  # the stream ended
                            outcome = _COMPLETE
                            return
                        size += sum(map(len, kept[before:]))
                        if size > limit:  # a long stream: from here on, parsed as it passes
                            try:
                                self._parser.overflow()  # type: ignore[attr-defined]
                            except Exception as exc:
                                failed("stream.chunk", exc)
                            break
                # Each chunk fed to the parser as it passes: a final event to watch for, or a long stream.
                feed = self._parser.feed
                terminal = getattr(self._parser, "terminal", None)
                observing = True
                for chunk in chunks:
                    if observing:
                        if self._first:
                            self._first_chunk()
                        try:  # zero-cost in CPython 3.11+; a guard() here would cost more than the feed
                            feed(chunk)
                            if terminal is not None and terminal in chunk and self._parser.ended_by(chunk):
                                observing = self._finish_at_final_event()
                        except Exception as exc:
                            failed("stream.chunk", exc)
                    yield chunk
                outcome = _COMPLETE
            except Exception as exc:
                outcome, error = _BROKEN, exc
                raise
            finally:
                self._finish(outcome, error)

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._finish(_CLOSED_EARLY)

    class ObservedAsyncStream(_Observer, module.AsyncByteStream):  # type: ignore[misc,name-defined]
        __slots__ = ("_exchange", "_first", "_inner", "_parser", "_pass")

        def __init__(self, inner: Any, exchange: Exchange, parser: StreamParser) -> None:
            self._inner, self._exchange, self._parser, self._first = inner, exchange, parser, True
            self._pass: weakref.ref[AsyncGenerator[bytes, None]] | None = None
            """The observing pass (by weak reference: it refers to this stream), once one started."""

        def __aiter__(self) -> AsyncIterator[bytes]:
            if self._pass is not None or self._exchange is None:  # as in the sync wrapper's ``__iter__``
                return aiter(self._inner)
            observed = self._observed()
            self._pass = weakref.ref(observed)
            return observed

        async def _observed(self) -> AsyncIterator[bytes]:
            outcome = _CLOSED_EARLY
            error: BaseException | None = None
            chunks = aiter(self._inner)
            kept = _kept(self._parser)
            try:
                if kept is not None:  # the common case: a chunk costs one list append, inlined here
                    async for chunk in chunks:
                        self._first_chunk()
                        kept.append(chunk)
                        yield chunk
                        break
                    append, size, limit = kept.append, sum(map(len, kept)), Deferred.LIMIT
                    async for chunk in chunks:
                        append(chunk)
                        size += len(chunk)
                        yield chunk
                        if size > limit:  # a long stream: from here on, parsed as it passes
                            try:
                                self._parser.overflow()  # type: ignore[attr-defined]
                            except Exception as exc:
                                failed("stream.chunk", exc)
                            break
                    else:
                        outcome = _COMPLETE
                        return
                # Each chunk fed to the parser as it passes: a final event to watch for, or a long stream.
                feed = self._parser.feed
                terminal = getattr(self._parser, "terminal", None)
                observing = True
                async for chunk in chunks:
                    if observing:
                        if self._first:
                            self._first_chunk()
                        try:
                            feed(chunk)
                            if terminal is not None and terminal in chunk and self._parser.ended_by(chunk):
                                observing = self._finish_at_final_event()
                        except Exception as exc:
                            failed("stream.chunk", exc)
                    yield chunk
                outcome = _COMPLETE
            except Exception as exc:
                outcome, error = _BROKEN, exc
                raise
            finally:
                self._finish(outcome, error)
                if outcome is _CLOSED_EARLY and isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()  # as httpx's own streams close the reader they leave

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._finish(_CLOSED_EARLY)
                # A pass its reader left suspended (the openai SDK stops at [DONE]) is closed here: left
                # to the collector, asyncio would finalise it with a task of its own, scheduled through
                # the loop's self-pipe (a system call), on every stream.
                observed = self._pass() if self._pass is not None else None
                if observed is not None and observed.ag_frame is not None:
                    try:
                        await observed.aclose()
                    except RuntimeError:  # being read right now, by another task: it ends on its own
                        pass
                    except Exception as exc:  # the reader's own error, where its finalising task would report it
                        asyncio.get_running_loop().call_exception_handler(
                            {"message": "closing a stream's reader failed", "exception": exc}
                        )

    _classes[name] = (ObservedStream, ObservedAsyncStream)
    return _classes[name]


def filter_classes(module: ModuleType) -> tuple[type, type]:
    """(sync, async) byte streams that pass ``inner`` through what ``make()`` returns, anew for each
    pass: a `UsageChunkFilter` (what the caller sees of a stream whose request tokentrail asked usage
    for, ``stream_usage="inject"``) or a `UsageProbe` (which passes every byte as it is)."""
    name = module.__name__
    if name in _filters:
        return _filters[name]
    from collections.abc import Callable

    class FilteredStream(module.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, make: Callable[[], Any]) -> None:
            self._inner, self._make = inner, make

        def __iter__(self) -> Iterator[bytes]:
            f = self._make()
            for chunk in self._inner:
                out = f.feed(chunk)
                if out:
                    yield out
            out = f.finish()
            if out:
                yield out

        def close(self) -> None:
            self._inner.close()

    class FilteredAsyncStream(module.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, inner: Any, make: Callable[[], Any]) -> None:
            self._inner, self._make = inner, make

        async def __aiter__(self) -> AsyncIterator[bytes]:
            f = self._make()
            async for chunk in self._inner:
                out = f.feed(chunk)
                if out:
                    yield out
            out = f.finish()
            if out:
                yield out

        async def aclose(self) -> None:
            await self._inner.aclose()

    _filters[name] = (FilteredStream, FilteredAsyncStream)
    return _filters[name]
