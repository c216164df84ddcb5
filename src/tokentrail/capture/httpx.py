"""Capture for httpx and httpx2: ``Client.send`` and ``AsyncClient.send``, one implementation for both.

``send`` is hooked rather than the transport: it sees every request whatever transport a client was
built with (``MockTransport`` and custom transports included), exactly once per attempt — redirects
and auth round-trips stay inside one ``send``. openai 3.x and current anthropic send through httpx2;
openai 2.x and most other libraries through httpx.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tokentrail._guard import SUPPRESSED, guard, suppressed
from tokentrail.capture import _exchange, inject
from tokentrail.capture.streams import filter_classes, stream_classes
from tokentrail.wire._base import StreamOutcome

MODULES = ("httpx", "httpx2")
_SENTINEL = "__tokentrail_original__"


def _body(request: Any) -> bytes | None:
    try:
        return request.content  # type: ignore[no-any-return]
    except Exception:  # RequestNotRead: a streamed upload we must not consume
        return None


def _attach(
    exchange: _exchange.Exchange, response: Any, stream: bool, module: ModuleType, sync: bool, injected: bool = False
) -> None:
    if not stream:
        exchange.body_read(response.status_code, response.headers, response.content)
        return
    parser = exchange.stream_started(response.status_code, response.headers)
    if injected:  # only an event stream carries what the option added; anything else passes as is
        content_type = response.headers.get("content-type", "")
        injected = content_type.partition(";")[0].strip().lower() == "text/event-stream"
    content = getattr(response, "_content", None)
    if isinstance(content, bytes):
        # Already in memory (a transport that answered with bytes, e.g. MockTransport or respx):
        # nobody will read the stream, so the record is finished now.
        parser.feed(content)
        exchange.stream_finished(parser, StreamOutcome.COMPLETE, None)
        if injected:
            response._content = inject.filter_whole(content)
        return
    observed_sync, observed_async = stream_classes(module)
    response.stream = (observed_sync if sync else observed_async)(response.stream, exchange, parser)
    if injected:  # the parser sees the stream as sent; the caller, as it would have been without the option
        filtered_sync, filtered_async = filter_classes(module)
        response.stream = (filtered_sync if sync else filtered_async)(response.stream)


def _injected_request(module: ModuleType, request: Any, exchange: _exchange.Exchange) -> Any:
    """The request with usage asked for (``stream_usage="inject"``), or None to send it as is."""
    body = inject.injected_body(exchange.parser.api, _where(request), exchange.body_sent)
    return None if body is None else inject.rebuild(module, request, body)


def _where(request: Any) -> tuple[str, int | None, str]:
    url = request.url
    return (url.host, url.port, url.path)


def _sync_send(original: Callable[..., Any], module: ModuleType) -> Callable[..., Any]:
    library = module.__name__

    def send(self: Any, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
        if suppressed():
            return original(self, request, stream=stream, **kwargs)
        exchange = None
        with guard("capture.start"):
            url = request.url
            exchange = _exchange.start(request.method, url.host, url.path, request.headers, _body(request), library)
        if exchange is None:
            return original(self, request, stream=stream, **kwargs)
        injected = None
        if inject.mode is not None and stream:
            with guard("inject.prepare"):
                injected = _injected_request(module, request, exchange)
        try:
            # Suppressed below us: an httpx transport built on aiohttp or requests must not record the
            # same attempt a second time.
            token = SUPPRESSED.set(True)  # suppress(), without a generator's cost on every call
            try:
                if injected is not None:
                    response = original(self, injected, stream=stream, **kwargs)
                    if response.status_code in inject.REJECTED_STATUSES:
                        response.close()
                        inject.rejected(_where(request))
                        injected = None
                        response = original(self, request, stream=stream, **kwargs)
                else:
                    response = original(self, request, stream=stream, **kwargs)
            finally:
                SUPPRESSED.reset(token)
        except BaseException as exc:
            with guard("capture.failed"):
                exchange.failed(exc)
            raise
        with guard("capture.finish"):
            if injected is not None:
                response.request = request  # the caller's own request, as without injection
            _attach(exchange, response, stream, module, sync=True, injected=injected is not None)
        return response

    setattr(send, _SENTINEL, original)
    return send


def _async_send(original: Callable[..., Any], module: ModuleType) -> Callable[..., Any]:
    library = module.__name__

    async def send(self: Any, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
        if suppressed():
            return await original(self, request, stream=stream, **kwargs)
        exchange = None
        with guard("capture.start"):
            url = request.url
            exchange = _exchange.start(request.method, url.host, url.path, request.headers, _body(request), library)
        if exchange is None:
            return await original(self, request, stream=stream, **kwargs)
        injected = None
        if inject.mode is not None and stream:
            with guard("inject.prepare"):
                injected = _injected_request(module, request, exchange)
        try:
            token = SUPPRESSED.set(True)  # suppress(), without a generator's cost on every call
            try:
                if injected is not None:
                    response = await original(self, injected, stream=stream, **kwargs)
                    if response.status_code in inject.REJECTED_STATUSES:
                        await response.aclose()
                        inject.rejected(_where(request))
                        injected = None
                        response = await original(self, request, stream=stream, **kwargs)
                else:
                    response = await original(self, request, stream=stream, **kwargs)
            finally:
                SUPPRESSED.reset(token)
        except BaseException as exc:
            with guard("capture.failed"):
                exchange.failed(exc)
            raise
        with guard("capture.finish"):
            if injected is not None:
                response.request = request  # the caller's own request, as without injection
            _attach(exchange, response, stream, module, sync=False, injected=injected is not None)
        return response

    setattr(send, _SENTINEL, original)
    return send


def install() -> list[str]:
    """Hook every module of `MODULES` that is imported; returns the names hooked. Idempotent."""
    hooked = []
    for name in MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        for cls, factory in ((module.Client, _sync_send), (module.AsyncClient, _async_send)):
            current = cls.send
            if not hasattr(current, _SENTINEL):
                cls.send = factory(current, module)
        hooked.append(name)
    return hooked


def uninstall() -> None:
    """Restore the original ``send`` where our wrapper is still the one in place."""
    for name in MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        for cls in (module.Client, module.AsyncClient):
            original = getattr(cls.__dict__.get("send"), _SENTINEL, None)
            if original is not None:
                cls.send = original
