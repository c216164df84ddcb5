"""``instrument(stream_usage="inject")``: usage for OpenAI-compatible streams that did not ask for it.

A Chat Completions (or legacy Completions) stream reports usage only when the request sets
``stream_options.include_usage``; without it the record's usage is ``missing`` and tokentrail can only
count it. With this mode on, a streaming request that did not ask for usage is sent with the option
added, and the caller is shown the stream it would have seen without it. OpenAI documents what the
option changes (ChatCompletionStreamOptions, https://platform.openai.com/docs/api-reference/chat/create
#chat-create-stream_options): "an additional chunk will be streamed before the data: [DONE] message
... the choices field will always be an empty array. All other chunks will also include a usage field,
but with a null value." `UsageChunkFilter` removes exactly those two things: the usage-only event, and
the ``"usage": null`` member of every other event. tokentrail's parser sees the stream unfiltered.

An endpoint that rejects the option (HTTP 400 or 422, as older OpenAI-compatible servers and Azure
API versions do) is sent the original request unchanged, and that host and path are not injected
again in this process. The rejected attempt is tokentrail's, not the application's: it is not recorded.

Off by default: it changes what goes on the wire. httpx and httpx2 clients only (the openai SDK,
litellm's OpenAI path, LangChain's OpenAI models).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from tokentrail.errors import ConfigError

MODES = ("inject",)

mode: str | None = None
"""``"inject"`` or None (off); set by ``instrument(stream_usage=...)`` or ``$TOKENTRAIL_STREAM_USAGE``."""

APIS = frozenset({"openai.chat", "openai.completions"})
"""API families whose streams take ``stream_options.include_usage``."""

REJECTED_STATUSES = frozenset({400, 422})

_rejected: set[tuple[str, int | None, str]] = set()
_rejected_lock = threading.Lock()

_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_OPTION = b'"stream_options":{"include_usage":true}'


def configure(stream_usage: str | None) -> None:
    """Set the mode. Raises `ConfigError` for anything but None or ``"inject"``."""
    global mode
    if stream_usage not in (None, *MODES):
        raise ConfigError(f"stream_usage must be None or 'inject', not {stream_usage!r}")
    mode = stream_usage


def injected_body(api: str, where: tuple[str, int | None, str], body: bytes | None) -> bytes | None:
    """The request body with ``stream_options.include_usage`` set, or None when it should go as is:
    not a streaming request of an `APIS` family, usage already asked for, a body that is not a JSON
    object, or an endpoint (host, port, path) that rejected the option before."""
    if api not in APIS or not body or where in _rejected or _STREAM_TRUE.search(body) is None:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")  # pyright: ignore[reportUnknownMemberType]
    if options is None and "stream_options" not in request:
        # Appended before the closing brace: the rest of the body stays byte for byte as sent.
        head = body.rstrip()
        return head[:-1] + b"," + _OPTION + b"}" if head.endswith(b"}") else None
    if not isinstance(options, dict) or options.get("include_usage") is True:  # pyright: ignore
        return None
    request["stream_options"] = {**options, "include_usage": True}  # pyright: ignore[reportUnknownArgumentType]
    return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()


def rejected(where: tuple[str, int | None, str]) -> None:
    """The endpoint answered the injected request with an error: never inject there again."""
    with _rejected_lock:
        _rejected.add(where)


def rebuild(module: Any, request: Any, body: bytes) -> Any:
    """A copy of an httpx/httpx2 ``request`` with another body (headers, URL and extensions kept)."""
    headers = request.headers.copy()
    headers.pop("transfer-encoding", None)
    headers["content-length"] = str(len(body))
    return module.Request(request.method, request.url, headers=headers, content=body, extensions=request.extensions)


_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,\s*')


class UsageChunkFilter:
    """Removes what ``include_usage`` added to an SSE stream, event by event, whatever the chunking.

    Bytes of a partly received event wait for the rest of it; everything else passes unchanged.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes the caller should see now."""
        data = self._pending + chunk if self._pending else chunk
        end = 0  # where the last complete event ends, by the same matches `_events` splits on
        for match in _EVENT_END.finditer(data):
            end = match.end()
        if not end:
            self._pending = data
            return b""
        self._pending = data[end:]
        return self._events(data[:end])

    def finish(self) -> bytes:
        """What is left at the end of the stream (an event without its closing blank line)."""
        rest, self._pending = self._pending, b""
        return self._event(rest) if rest else b""

    def _events(self, complete: bytes) -> bytes:
        if b'"usage"' not in complete:
            return complete
        out, start = [], 0
        for end in _EVENT_END.finditer(complete):
            out.append(self._event(complete[start : end.end()]))
            start = end.end()
        return b"".join(out)

    @staticmethod
    def _event(event: bytes) -> bytes:
        if b'"usage"' not in event:
            return event
        if _EMPTY_CHOICES.search(event) is not None and _usage_only(event):
            return b""
        return _NULL_USAGE.sub(b"", event)


def _usage_only(event: bytes) -> bool:
    data = b"".join(
        line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
    )  # fmt: skip
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)  # pyright: ignore


def filter_whole(body: bytes) -> bytes:
    """`UsageChunkFilter` over a stream held whole in memory."""
    f = UsageChunkFilter()
    return f.feed(body) + f.finish()
