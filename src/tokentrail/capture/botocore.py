"""Capture for botocore (boto3, and so Bedrock): ``Endpoint._send``, once per attempt.

``Endpoint._send`` takes the final, signed request and returns the ``AWSResponse`` before botocore
parses anything; botocore's retry loop calls it once per attempt, and any ``http_session`` (not
only ``URLLib3Session``) sends through it. Requests answered by a ``before-send`` handler (moto,
recorded fixtures) never reach it and are not recorded. Every other AWS call leaves after one
``detect(method, path)`` check.

A non-streaming body is already in memory when ``_send`` returns; an event stream
(``ConverseStream``, ``InvokeModelWithResponseStream``) is observed through `ObservedRaw`, shared
with requests: botocore's ``EventStream`` reads ``raw.stream()`` and gets every byte unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tokentrail._guard import guard, suppressed
from tokentrail.capture import _exchange
from tokentrail.capture.requests import attach, body_bytes, split_url

_SENTINEL = "__tokentrail_original__"
_LIBRARY = "botocore"


def _hooked_send(original: Callable[..., Any]) -> Callable[..., Any]:
    def _send(self: Any, request: Any) -> Any:
        if suppressed():
            return original(self, request)
        exchange = None
        with guard("capture.start"):
            host, path = split_url(request.url)
            exchange = _exchange.start(request.method, host, path, request.headers, body_bytes(request.body), _LIBRARY)
        if exchange is None:
            return original(self, request)
        try:
            response = original(self, request)
        except BaseException as exc:
            _exchange.record_failure(exchange, exc)
            raise
        with guard("capture.finish"):
            attach(exchange, response)
        return response

    setattr(_send, _SENTINEL, original)
    return _send


def install() -> list[str]:
    """Hook ``botocore.endpoint.Endpoint._send`` if botocore is importable. Idempotent."""
    if _LIBRARY not in sys.modules:  # hooked when imported (see capture.install)
        return []
    from botocore.endpoint import Endpoint

    current = Endpoint._send
    if not hasattr(current, _SENTINEL):
        Endpoint._send = _hooked_send(current)  # type: ignore[method-assign]
    return [_LIBRARY]


def uninstall() -> None:
    """Restore ``Endpoint._send`` where our wrapper is still the one in place."""
    module = sys.modules.get("botocore.endpoint")
    if module is None:
        return
    original = getattr(module.Endpoint.__dict__.get("_send"), _SENTINEL, None)
    if original is not None:
        module.Endpoint._send = original
