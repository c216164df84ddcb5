"""Capture for aiohttp: ``BaseConnector.connect``, ``ClientRequest.send`` and ``ClientResponse.start``.

``ClientSession._request`` runs redirects and connection retries in one call, and client
middlewares may send one request several times, so the hooks sit on the three steps of one
attempt, which each see it exactly once: ``connect(req)`` (the exchange starts here, so a refused
connection is recorded), ``req.send(conn)`` and ``resp.start(conn)`` (status line and headers).
The exchange is handed along on the request and then the response object.

aiohttp never reads a body before returning the response, so every body is observed as a stream:
``response.content`` becomes `ObservedContent`, a transparent stand-in for the ``StreamReader``.
``resp.read()``, ``json()``, ``text()``, ``content.read*()``, ``iter_any()``, ``iter_chunked()``,
``iter_chunks()`` and ``async for line in content`` all read through it; the reader's own internal
calls do not, so each byte is fed once. The record finishes at end of body, when the response is
released or closed (aiohttp then sets an exception on ``content``), on a read error, or at garbage
collection.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from tokentrail._guard import guard, suppressed
from tokentrail.capture import _exchange
from tokentrail.capture.requests import Proxy, swallow
from tokentrail.wire._base import StreamOutcome

_SENTINEL = "__tokentrail_original__"
_EXCHANGE = "_tokentrail_exchange"
_LIBRARY = "aiohttp"


def _body(request: Any) -> bytes | None:
    value = getattr(request.body, "_value", None)  # BytesPayload (bytes, str and json= bodies)
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None  # a file, an async iterable, form data: streamed, never held in memory


# -- observing the StreamReader --------------------------------------------------------------------


def _async_read(proxy: ObservedContent, method: Callable[..., Any]) -> Callable[..., Any]:
    async def read(*args: Any, **kwargs: Any) -> Any:
        try:
            data = await method(*args, **kwargs)
        except Exception as exc:
            try:
                proxy._read_failed(exc)
            except Exception as error:
                swallow("stream.finish", error)
            raise
        try:
            proxy._took(data)
        except Exception as exc:
            swallow("stream.chunk", exc)
        return data

    return read


def _read_nowait(proxy: ObservedContent, method: Callable[..., Any]) -> Callable[..., Any]:
    def read_nowait(*args: Any, **kwargs: Any) -> Any:
        try:
            data = method(*args, **kwargs)
        except Exception as exc:
            try:
                proxy._read_failed(exc)
            except Exception as error:
                swallow("stream.finish", error)
            raise
        try:
            proxy._took(data)
        except Exception as exc:
            swallow("stream.chunk", exc)
        return data

    return read_nowait


def _iterator(proxy: ObservedContent, method: Callable[..., Any]) -> Callable[..., Any]:
    def iterator(*args: Any, **kwargs: Any) -> _ObservedIterator:
        return _ObservedIterator(proxy, method(*args, **kwargs))

    return iterator


def _closing(proxy: ObservedContent, method: Callable[..., Any]) -> Callable[..., Any]:
    # ClientResponse.release()/close() before the end sets "Connection closed" on ``content``.
    def set_exception(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            proxy._closed()

    return set_exception


class _ObservedIterator:
    """Wraps the reader's own async iterator (whatever read it uses) and feeds what it yields."""

    __slots__ = ("_iterator", "_proxy")

    def __init__(self, proxy: ObservedContent, iterator: Any) -> None:
        self._proxy, self._iterator = proxy, iterator

    def __aiter__(self) -> _ObservedIterator:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self._iterator.__anext__()
        except StopAsyncIteration:
            try:
                self._proxy._took(b"")
            except Exception as exc:
                swallow("stream.chunk", exc)
            raise
        except Exception as exc:
            try:
                self._proxy._read_failed(exc)
            except Exception as error:
                swallow("stream.finish", error)
            raise
        try:
            self._proxy._took(item)
        except Exception as exc:
            swallow("stream.chunk", exc)
        return item


class ObservedContent(Proxy):
    """Stands in for ``ClientResponse.content`` (an aiohttp ``StreamReader``)."""

    __slots__ = ()
    _WRAPS: ClassVar[dict[str, Callable[[Any, Any], Any]]] = {
        "read": _async_read,
        "readany": _async_read,
        "readline": _async_read,
        "readuntil": _async_read,
        "readchunk": _async_read,
        "readexactly": _async_read,
        "read_nowait": _read_nowait,
        "iter_any": _iterator,
        "iter_chunked": _iterator,
        "iter_chunks": _iterator,
        "set_exception": _closing,
    }

    def __aiter__(self) -> _ObservedIterator:
        return _ObservedIterator(self, self._inner.__aiter__())

    def _took(self, data: Any) -> None:
        if type(data) is tuple:  # readchunk(): (data, end_of_http_chunk)
            data = data[0]
        self._got(data, self._inner.at_eof())

    def _read_failed(self, exc: Exception) -> None:
        if isinstance(exc, asyncio.IncompleteReadError):  # readexactly() consumed what there was
            self._got(exc.partial, False)
        if self._inner.at_eof() and self._inner.exception() is None:
            self._finish(StreamOutcome.COMPLETE)
        else:
            self._finish(StreamOutcome.BROKEN, exc)


# -- the hooks -------------------------------------------------------------------------------------


def _start(request: Any) -> _exchange.Exchange | None:
    url = request.url
    return _exchange.start(request.method, url.host or "", url.path, request.headers, _body(request), _LIBRARY)


def _hooked_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    # The attempt starts here, so that failing to connect is recorded too.
    async def connect(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
        if suppressed():
            return await original(self, req, *args, **kwargs)
        exchange = None
        with guard("capture.start"):
            exchange = _start(req)
        if exchange is None:
            return await original(self, req, *args, **kwargs)
        try:
            connection = await original(self, req, *args, **kwargs)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        with guard("capture.start"):
            setattr(req, _EXCHANGE, exchange)  # taken back by ClientRequest.send
        return connection

    setattr(connect, _SENTINEL, original)
    return connect


def _hooked_send(original: Callable[..., Any]) -> Callable[..., Any]:
    async def send(self: Any, conn: Any) -> Any:
        # Every aiohttp request passes here and in start(): try/swallow is free when nothing fails,
        # where ``with guard()`` costs ~1.5 µs.
        exchange = None
        try:
            exchange = self.__dict__.pop(_EXCHANGE, None)
            if exchange is None and not suppressed():  # a connector that bypassed BaseConnector.connect
                exchange = _start(self)
        except Exception as error:
            swallow("capture.start", error)
        if exchange is None:
            return await original(self, conn)
        try:
            response = await original(self, conn)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        with guard("capture.finish"):
            setattr(response, _EXCHANGE, exchange)  # taken back by ClientResponse.start
        return response

    setattr(send, _SENTINEL, original)
    return send


def _hooked_start(original: Callable[..., Any]) -> Callable[..., Any]:
    async def start(self: Any, connection: Any) -> Any:
        exchange = None
        try:
            exchange = self.__dict__.pop(_EXCHANGE, None)
        except Exception as error:
            swallow("capture.finish", error)
        if exchange is None:
            return await original(self, connection)
        try:
            response = await original(self, connection)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        with guard("capture.finish"):
            parser = exchange.stream_started(self.status, self.headers)
            self.content = ObservedContent(self.content, exchange, parser)
        return response

    setattr(start, _SENTINEL, original)
    return start


def _targets(module: Any) -> tuple[tuple[type, str, Callable[..., Any]], ...]:
    return (
        (module.BaseConnector, "connect", _hooked_connect),
        (module.ClientRequest, "send", _hooked_send),
        (module.ClientResponse, "start", _hooked_start),
    )


def install() -> list[str]:
    """Hook aiohttp's client if it is importable; returns the names hooked. Idempotent."""
    if _LIBRARY not in sys.modules:  # hooked when imported (see capture.install)
        return []
    import aiohttp

    for cls, name, factory in _targets(aiohttp):
        current = getattr(cls, name)
        if not hasattr(current, _SENTINEL):
            setattr(cls, name, factory(current))
    return [_LIBRARY]


def uninstall() -> None:
    """Restore the originals where our wrappers are still the ones in place."""
    module = sys.modules.get(_LIBRARY)
    if module is None:
        return
    for cls, name, _ in _targets(module):
        original = getattr(cls.__dict__.get(name), _SENTINEL, None)
        if original is not None:
            setattr(cls, name, original)
