"""Capture for requests: ``Session.send``, once per attempt.

``send`` is hooked rather than ``HTTPAdapter.send``: it sees every request whatever adapter is
mounted (custom and mocking adapters included). Redirects re-enter ``send`` once per hop with
``allow_redirects=False``, so each hop is its own exchange; the outermost call then answers for
its own attempt, ``response.history[0]``.

A body already in memory (``stream=False``, the default) is handed over whole. A streamed body is
observed by replacing ``response.raw`` with `ObservedRaw`, a transparent stand-in for the urllib3
response: every read method passes its bytes through unchanged and feeds them to the parser once.
botocore reads its urllib3 responses the same way and shares `ObservedRaw`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tokentrail._guard import guard, suppressed
from tokentrail.capture import _exchange
from tokentrail.capture.streams import _Observer
from tokentrail.wire._base import StreamOutcome

_SENTINEL = "__tokentrail_original__"
_LIBRARY = "requests"

# -- shared helpers (also used by botocore and aiohttp) --------------------------------------------

# scheme://[userinfo@](host|[v6])[:port]path — ~0.3 µs where an uncached urlsplit costs ~8 µs.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?(?:\[([^\]/?#]*)\]|([^:/?#]*))(?::[^/?#]*)?([^?#]*)")


def split_url(url: str) -> tuple[str, str]:
    """(host, path) of an absolute URL string, as ``urlsplit(url).hostname`` and ``.path`` give them."""
    match = _URL.match(url)
    if match is None:
        parts = urlsplit(url)
        return parts.hostname or "", parts.path
    return (match[1] or match[2]).lower(), match[3]


def swallow(site: str, error: Exception) -> None:
    """What ``guard(site)`` does with ``error`` (count, warn once; re-raise in strict mode), paid for
    only when something failed: a ``with guard()`` costs ~2 µs, too much once per chunk."""
    with guard(site):
        raise error


def body_bytes(body: Any) -> bytes | None:
    """A request body held in memory, as bytes; ``None`` for a streamed upload (a file, a generator)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")  # what urllib3 sends for a str body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    return None


class Proxy(_Observer):
    """A transparent stand-in for a library's body reader: attributes read and written pass through,
    ``isinstance`` still holds, and the names in ``_WRAPS`` come back wrapped to observe the bytes.

    Wrapping happens on lookup, so the stand-in has exactly the methods its reader has (requests
    checks ``hasattr(raw, "stream")`` to choose how to read).
    """

    __slots__ = ("__weakref__", "_exchange", "_first", "_inner", "_parser")
    _WRAPS: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {}
    _OWN: ClassVar[frozenset[str]] = frozenset(("_inner", "_exchange", "_parser", "_first"))

    def __init__(self, inner: Any, exchange: _exchange.Exchange, parser: Any) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_exchange", exchange)
        object.__setattr__(self, "_parser", parser)
        object.__setattr__(self, "_first", True)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(response.raw, urllib3.HTTPResponse) stays true
        return type(self._inner)

    def __getattr__(self, name: str) -> Any:
        if name in self._OWN:  # not set yet: never look for our own state on the reader
            raise AttributeError(name)
        value = getattr(self._inner, name)
        wrap = self._WRAPS.get(name)
        return value if wrap is None else wrap(self, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)  # e.g. ``response.raw.decode_content = True``

    def __delattr__(self, name: str) -> None:
        delattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def __dir__(self) -> Iterable[str]:
        return dir(self._inner)

    def _got(self, data: Any, done: bool) -> None:
        """``data`` was handed to the caller; ``done`` when it was the end of the body.
        Callers hand its errors to `swallow`: the bytes are already the caller's."""
        exchange = self._exchange
        if data and exchange is not None:
            if self._first:
                self._first = False
                exchange.t_first = time.perf_counter_ns()
            self._parser.feed(data)
        if done:
            self._finish(StreamOutcome.COMPLETE)

    def _closed(self) -> None:
        self._finish(StreamOutcome.CLOSED_EARLY)  # a no-op once the body was read to the end


# -- urllib3 responses -------------------------------------------------------------------------------


def _reader(
    name: str, default: Any, seen: Callable[[Any, Any], tuple[bytes, bool]]
) -> Callable[[ObservedRaw, Callable[..., Any]], Any]:
    """Observe one read method whose first parameter is ``name`` (``default`` when not passed): the
    caller gets ``method``'s result unchanged; ``seen(that argument, result)`` gives the bytes it
    carried and whether the body has ended. A read error finishes the
    record (and is the caller's); a failure of ours is swallowed."""

    def observe(proxy: ObservedRaw, method: Callable[..., Any]) -> Callable[..., Any]:
        def read(*args: Any, **kwargs: Any) -> Any:
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                proxy._finish(StreamOutcome.BROKEN, exc)
                raise
            try:
                proxy._got(*seen(args[0] if args else kwargs.get(name, default), result))
            except Exception as exc:
                swallow("stream.chunk", exc)
            return result

        return read

    return observe


# What each urllib3 read method read, and whether the body ended with it.
_read = _reader("amt", None, lambda amt, data: (data, amt is None or amt < 0 or (not data and amt != 0)))
_read1 = _reader("amt", None, lambda amt, data: (data, data is not None and not data and amt != 0))
_readinto = _reader(
    "b", None, lambda buf, count: (bytes(memoryview(buf)[:count]) if count else b"", count == 0 and len(buf) > 0)
)
_readline = _reader("size", -1, lambda size, line: (line, not line and size != 0))
_readlines = _reader("hint", -1, lambda hint, lines: (b"".join(lines), hint is None or hint <= 0 or not lines))


def _generator(proxy: ObservedRaw, method: Callable[..., Any]) -> Callable[..., Any]:
    def generator(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        return proxy._iterate(method(*args, **kwargs))

    return generator


def _redispatch(proxy: ObservedRaw, method: Any) -> Any:
    # ``raw.json()`` reads ``self.data``: run the library's own code with the stand-in as ``self``.
    function = getattr(method, "__func__", None)
    return method if function is None else function.__get__(proxy)


def _closing(proxy: ObservedRaw, method: Callable[..., Any]) -> Callable[..., Any]:
    def closing(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            proxy._closed()

    return closing


class ObservedRaw(Proxy):
    """Stands in for a urllib3 ``HTTPResponse`` (``requests.Response.raw``, botocore's ``AWSResponse.raw``).

    Only the methods that hand decoded bytes to the caller are observed (``read``, ``read1``,
    ``readinto``, ``readline(s)``, ``stream``, ``read_chunked``, iteration, ``data``); the urllib3
    response's own internal calls (``stream`` → ``read``) never pass through the stand-in, so each
    byte is fed once. The record finishes at the end of the body, on ``close()``/``drain_conn()``,
    on a read error, or when the stand-in is garbage-collected.
    """

    __slots__ = ()
    _WRAPS: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {
        "read": _read,
        "read1": _read1,
        "readinto": _readinto,
        "readline": _readline,
        "readlines": _readlines,
        "stream": _generator,
        "read_chunked": _generator,
        "json": _redispatch,
        "close": _closing,
        "drain_conn": _closing,
    }

    @property
    def data(self) -> Any:
        try:
            data = self._inner.data  # reads the rest of the body (or returns the preloaded one)
        except Exception as exc:
            self._finish(StreamOutcome.BROKEN, exc)
            raise
        try:
            self._got(data, True)
        except Exception as exc:
            swallow("stream.chunk", exc)
        return data

    def _iterate(self, chunks: Iterable[bytes] | None) -> Iterator[bytes]:
        outcome = StreamOutcome.CLOSED_EARLY
        error: BaseException | None = None
        try:
            for chunk in chunks or ():
                try:
                    self._got(chunk, False)
                except Exception as exc:
                    swallow("stream.chunk", exc)
                yield chunk
            outcome = StreamOutcome.COMPLETE
        except Exception as exc:
            outcome, error = StreamOutcome.BROKEN, exc
            raise
        finally:
            self._finish(outcome, error)

    def __iter__(self) -> Iterator[bytes]:
        return self._iterate(iter(self._inner))

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line  # type: ignore[no-any-return]

    def __enter__(self) -> ObservedRaw:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def attach(exchange: _exchange.Exchange, response: Any) -> None:
    """Hand ``response`` (a requests ``Response`` or a botocore ``AWSResponse``) to ``exchange``:
    whole if its body is already in memory, else by observing its ``raw`` reader."""
    content = getattr(response, "_content", None)
    if isinstance(content, bytes):
        if "event-stream" in response.headers.get("content-type", ""):
            # ``requests.post(..., json={"stream": True})`` without ``stream=True`` buffers the
            # whole SSE body: parse it as the stream it is, not as a JSON body.
            parser = exchange.stream_started(response.status_code, response.headers)
            parser.feed(content)
            exchange.stream_finished(parser, StreamOutcome.COMPLETE, None)
        else:
            exchange.body_read(response.status_code, response.headers, content)
        return
    raw = response.raw
    if raw is None:
        exchange.body_read(response.status_code, response.headers, b"")
        return
    parser = exchange.stream_started(response.status_code, response.headers)
    response.raw = ObservedRaw(raw, exchange, parser)


# -- the hook --------------------------------------------------------------------------------------


def _hooked_send(original: Callable[..., Any]) -> Callable[..., Any]:
    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        if suppressed():
            return original(self, request, **kwargs)
        exchange = None
        with guard("capture.start"):
            host, path = split_url(request.url)
            exchange = _exchange.start(request.method, host, path, request.headers, body_bytes(request.body), _LIBRARY)
        if exchange is None:
            return original(self, request, **kwargs)
        try:
            response = original(self, request, **kwargs)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        with guard("capture.finish"):
            # After redirects the outermost send returns the last hop; its own attempt is the first.
            history = response.history
            attach(exchange, history[0] if history else response)
        return response

    setattr(send, _SENTINEL, original)
    return send


def install() -> list[str]:
    """Hook ``requests.Session.send`` if requests is importable; returns the names hooked. Idempotent."""
    if _LIBRARY not in sys.modules:  # hooked when imported (see capture.install)
        return []
    import requests

    current = requests.Session.send
    if not hasattr(current, _SENTINEL):
        requests.Session.send = _hooked_send(current)  # type: ignore[method-assign]
    return [_LIBRARY]


def uninstall() -> None:
    """Restore ``Session.send`` where our wrapper is still the one in place."""
    module = sys.modules.get(_LIBRARY)
    if module is None:
        return
    original = getattr(module.Session.__dict__.get("send"), _SENTINEL, None)
    if original is not None:
        module.Session.send = original
