"""Capture for httpx and httpx2: ``Client.send`` and ``AsyncClient.send``, one implementation for both.

``send`` is hooked rather than the transport: it sees every request whatever transport a client was
built with (``MockTransport`` and custom transports included), exactly once per attempt — redirects
and auth round-trips stay inside one ``send``. openai 3.x and current anthropic send through httpx2;
openai 2.x and most other libraries through httpx.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tokentrail._guard import SUPPRESSED, failed, guard
from tokentrail.capture import _exchange, inject
from tokentrail.capture.streams import filter_classes, stream_classes
from tokentrail.wire._base import StreamOutcome

MODULES = ("httpx", "httpx2")
_SENTINEL = "__tokentrail_original__"


def _attach(
    exchange: _exchange.Exchange, response: Any, module: ModuleType, sync: bool, plan: inject.Plan | None = None
) -> None:
    """Observe a streamed response (`_finish` handles a body read whole; only streams are injected)."""
    parser = exchange.stream_started(response.status_code, response.headers)
    # Only a successful event stream carries what the option added, or teaches what the server sends
    # unasked; anything else passes as is.
    if plan is not None and (
        response.status_code != 200 or _exchange.media_type(response.headers) != "text/event-stream"
    ):
        plan = None
    content = getattr(response, "_content", None)
    if isinstance(content, bytes):
        # Already in memory (a transport that answered with bytes, e.g. MockTransport or respx):
        # nobody will read the stream, so the record is finished now.
        parser.feed(content)
        exchange.stream_finished(parser, StreamOutcome.COMPLETE, None)
        if plan is not None:
            response._content = plan.whole(content)
        return
    observed_sync, observed_async = stream_classes(module)
    response.stream = (observed_sync if sync else observed_async)(response.stream, exchange, parser)
    if plan is not None:  # the parser sees the stream as sent; the caller, as it would have been without the option
        filtered_sync, filtered_async = filter_classes(module)
        response.stream = (filtered_sync if sync else filtered_async)(response.stream, plan.watcher())


def _route(request: Any) -> _exchange.Route | None:
    """`_exchange.route` of the request, remembered by the raw host and path of its parsed URL: the
    ``url.host`` and ``url.path`` properties decode (IDNA, percent-escapes) on every read, ~0.3 µs a
    call, what nearly always has nothing to decode."""
    url = request.url
    try:
        parsed = url._uri_reference
        key = (request.method, parsed.host, parsed.path)
    except AttributeError:  # another httpx version's URL: its properties
        return _exchange.route(request.method, url.host, url.path)
    try:
        return _exchange._routes[key]
    except KeyError:
        return _exchange.remember_route(key, request.method, url.host, url.path)


def _begin(request: Any, library: str) -> _exchange.Exchange | None:
    """The exchange of an LLM API request, or None (not one, or tokentrail failed: the call goes as is)."""
    try:  # not guard(): a bare try costs nothing until it raises, on every call of the hot path
        found = _route(request)
        if found is None:
            return None
        # ``request.content`` raises RequestNotRead for a streamed upload, which we must not consume.
        body = getattr(request, "_content", None)
        # own_frames=2: this function and the hook's send(), sync or async
        return _exchange.open_exchange(found, request.headers, body, library, 2)
    except Exception as exc:
        failed("capture.start", exc)
        return None


_plans: weakref.WeakKeyDictionary[Any, inject.Plan] = weakref.WeakKeyDictionary()
"""The `inject.Plan` of a caller's request, from `_injected` to `_finish` (the hooks pass on only the
request sent)."""


def _injected(module: ModuleType, request: Any, exchange: _exchange.Exchange) -> Any:
    """The streamed request with usage asked for (``stream_usage="inject"``), or None to send it as is
    (a probe among them: its plan waits in `_plans`)."""
    with guard("inject.prepare"):
        plan = inject.plan(exchange.parser.api, _where(request), exchange.body_sent)
        if plan is None:
            return None
        _plans[request] = plan
        return None if plan.body is None else inject.rebuild(module, request, plan.body)
    return None


def _where(request: Any) -> tuple[str, int | None, str]:
    url = request.url
    return (url.host, url.port, url.path)


_ERROR_LIMIT = 1 << 20
"""The largest error answer read to tell whether it refuses the option; a larger one is the application's."""


def _error_answer(response: Any) -> bool:
    """Whether the answer to an injected request is an error (400, 422) that may be read whole to tell
    what it is about: not an event stream, and not said to be larger than `_ERROR_LIMIT`."""
    if response.status_code not in inject.REJECTED_STATUSES:
        return False
    if _exchange.media_type(response.headers) == "text/event-stream":
        return False
    length = response.headers.get("content-length")
    return length is None or (length.isdigit() and int(length) <= _ERROR_LIMIT)


def _rejected(response: Any, request: Any) -> bool:
    """True when the endpoint refused the injected option: the original request must go instead.

    Only an error about the option is a refusal (`inject.refuses`): a 400 for the application's own
    mistake is its answer, sent once and passed on. The body is read to tell, as httpx lets a body be
    read again: ``read()``, ``content``, ``json()`` and ``iter_bytes()`` give it to the caller as it
    was (the raw ``iter_raw()`` does not). An error while reading is the network's, raised as it is."""
    return _error_answer(response) and _refused(response.read(), request)


async def _arejected(response: Any, request: Any) -> bool:
    """`_rejected` for an async response."""
    return _error_answer(response) and _refused(await response.aread(), request)


def _refused(body: bytes, request: Any) -> bool:
    with guard("inject.rejected"):
        if inject.refuses(body):
            inject.rejected(_where(request))
            return True
    return False


def _finish(exchange: _exchange.Exchange, response: Any, request: Any, module: ModuleType, sync: bool,
            injected: Any) -> None:  # fmt: skip
    """Observe a streamed response (the hooks finish a body read whole themselves)."""
    try:
        plan = _plans.pop(request, None) if injected is not None or inject.mode is not None else None
        if injected is not None:
            response.request = request  # the caller's own request, as without injection
        elif plan is not None and plan.body is not None:
            plan = None  # the option was refused: the original request went instead, as is
        _attach(exchange, response, module, sync=sync, plan=plan)
    except Exception as exc:
        failed("capture.finish", exc)


def _read_whole(exchange: _exchange.Exchange, response: Any) -> None:
    """Finish the common call, a body read whole (without `_finish`'s and `_attach`'s calls)."""
    try:
        exchange.body_read(response.status_code, response.headers, response.content)
    except Exception as exc:
        failed("capture.finish", exc)


# The sync and async hooks differ only in ``await``. Sending is suppressed below them when the client
# sends through anything but httpx's own connection pool: a transport built on aiohttp or requests
# must not record the same attempt a second time, nor an app served in-process (``ASGITransport``, a
# ``MockTransport`` handler) record its own upstream calls as more of the caller's. httpx's pool runs
# no such code, so a client on it (the SDKs' default) is not suppressed: setting and resetting the
# ContextVar costs ~3,200 instructions a call, and an LLM call made by an event hook is then recorded
# as the call of its own that it is. (The ContextVar is set directly: ``suppress()`` would cost a
# generator on every call.)


def _pool_only(client: Any, pool: type) -> bool:
    """Whether ``client`` sends every request through httpx's own connection pool (no mounts)."""
    return not getattr(client, "_mounts", True) and type(getattr(client, "_transport", None)) is pool


def _sync_send(original: Callable[..., Any], module: ModuleType) -> Callable[..., Any]:
    library, pool = module.__name__, module.HTTPTransport

    def send(self: Any, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
        exchange = None if SUPPRESSED.get() else _begin(request, library)
        if exchange is None:
            return original(self, request, stream=stream, **kwargs)
        injected = _injected(module, request, exchange) if stream and inject.mode is not None else None
        token = None if _pool_only(self, pool) else SUPPRESSED.set(True)
        try:
            response = original(self, request if injected is None else injected, stream=stream, **kwargs)
            if injected is not None and _rejected(response, request):
                response.close()
                injected = None
                response = original(self, request, stream=stream, **kwargs)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        finally:
            if token is not None:
                SUPPRESSED.reset(token)
        if stream or injected is not None:
            _finish(exchange, response, request, module, True, injected)
        else:
            _read_whole(exchange, response)
        return response

    setattr(send, _SENTINEL, original)
    return send


def _async_send(original: Callable[..., Any], module: ModuleType) -> Callable[..., Any]:
    library, pool = module.__name__, module.AsyncHTTPTransport

    async def send(self: Any, request: Any, *, stream: bool = False, **kwargs: Any) -> Any:
        exchange = None if SUPPRESSED.get() else _begin(request, library)
        if exchange is None:
            return await original(self, request, stream=stream, **kwargs)
        injected = _injected(module, request, exchange) if stream and inject.mode is not None else None
        token = None if _pool_only(self, pool) else SUPPRESSED.set(True)
        try:
            response = await original(self, request if injected is None else injected, stream=stream, **kwargs)
            if injected is not None and await _arejected(response, request):
                await response.aclose()
                injected = None
                response = await original(self, request, stream=stream, **kwargs)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        finally:
            if token is not None:
                SUPPRESSED.reset(token)
        if stream or injected is not None:
            _finish(exchange, response, request, module, False, injected)
        else:
            _read_whole(exchange, response)
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
