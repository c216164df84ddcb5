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

Some servers send those parts unasked (LiteLLM Proxy's always-include-usage setting, vLLM's
``--enable-force-include-usage``): removing them would hide from the caller what it gets without
tokentrail. What the option adds can only be known by comparing with what the server sends without
it, so the first such stream to an endpoint and model is sent as is and watched (`UsageProbe`): a
server that reported usage unasked is never sent the option (its usage is reported anyway); one that
sent only ``"usage": null`` members keeps them, and only the usage-only event is removed.

An endpoint that rejects the option (HTTP 400 or 422 with an error about it, as older
OpenAI-compatible servers and Azure API versions answer, see `refuses`) is sent the original request
unchanged, and that host and path are not injected again in this process. The rejected attempt is
tokentrail's, not the application's: it is not recorded. Any other 400 or 422 is the application's
own answer, passed on as is.

Off by default: it changes what goes on the wire. httpx and httpx2 clients only (the openai SDK,
litellm's OpenAI path, LangChain's OpenAI models).
"""

from __future__ import annotations

import ast
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

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


Key = tuple[str, int | None, str, str | None]
"""An endpoint (host, port, path) and the requested model: what a server sends unasked is learnt per key
(a proxy such as LiteLLM routes each model to a server of its own)."""

NULLS, USAGE = 1, 2
"""What a server sent unasked in a stream without the option: ``"usage": null`` members, usage itself."""

_unasked: dict[Key, int] = {}
"""Per key, what `UsageProbe` saw the server send unasked (`NULLS` | `USAGE`, 0 for nothing)."""
_unasked_lock = threading.Lock()


class Plan(NamedTuple):
    """What inject mode does with one streaming request that did not ask for usage (`plan`)."""

    key: Key
    body: bytes | None
    """The body with the option added; None for a probe, sent as is and watched (`UsageProbe`)."""
    nulls: bool = True
    """Whether the ``"usage": null`` members are the option's to remove (the server sends none unasked)."""

    def watcher(self) -> Callable[[], UsageChunkFilter | UsageProbe]:
        """Makes what a pass over the response's bytes goes through: the filter, or the probe."""
        if self.body is None:
            return lambda: UsageProbe(self.key)
        return lambda: UsageChunkFilter(nulls=self.nulls)

    def whole(self, body: bytes) -> bytes:
        """What the caller gets of a stream held whole in memory (see `watcher`)."""
        watch = self.watcher()()
        return watch.feed(body) + watch.finish()


def plan(api: str, where: tuple[str, int | None, str], body: bytes | None) -> Plan | None:
    """What to do with a request, or None to send it as is and watch nothing: not a streaming request
    of an `APIS` family, usage already asked for, a body that is not a JSON object, an endpoint that
    rejected the option before, or a server that reports usage unasked. The first stream of a key is
    a probe; the next ones get the option."""
    if api not in APIS or not body or where in _rejected or _STREAM_TRUE.search(body) is None:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")  # pyright: ignore[reportUnknownMemberType]
    if "stream_options" in request and (not isinstance(options, dict) or options.get("include_usage") is True):  # pyright: ignore
        return None
    model = request.get("model")  # pyright: ignore[reportUnknownMemberType]
    key = (*where, model if isinstance(model, str) else None)
    unasked = _unasked.get(key)
    if unasked is None:
        return Plan(key, None)
    if unasked & USAGE:  # nothing for the option to add: the stream is reported as it is
        return None
    if options is None:
        # Appended before the closing brace: the rest of the body stays byte for byte as sent.
        head = body.rstrip()
        injected = head[:-1] + b"," + _OPTION + b"}" if head.endswith(b"}") else None
    else:
        request["stream_options"] = {**options, "include_usage": True}  # pyright: ignore[reportUnknownArgumentType]
        injected = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
    return None if injected is None else Plan(key, injected, nulls=not unasked & NULLS)


def learned(key: Key, unasked: int) -> None:
    """A probe's verdict. Once seen unasked, a part stays so: removing it is the error to avoid."""
    with _unasked_lock:
        if len(_unasked) >= 1024:  # a program that makes up models or hosts: learn them again
            _unasked.clear()
        _unasked[key] = _unasked.get(key, 0) | unasked


def rejected(where: tuple[str, int | None, str]) -> None:
    """The endpoint refused the injected option (`refuses`): never inject there again."""
    with _rejected_lock:
        _rejected.add(where)


# What endpoints that do not take the option answer (400, or 422 for Mistral), as users reported them:
# - OpenAI-style: {"error": {"message": "Unknown parameter: 'stream_options'.", "type":
#   "invalid_request_error", "param": "stream_options", "code": "unknown_parameter"}} (Azure in
#   github.com/agno-agi/agno/issues/1066, a relay in github.com/QuantumNous/new-api/issues/418); older
#   Azure API versions: "Unrecognized request argument supplied: stream_options"
#   (github.com/songquanpeng/one-api/issues/1423), as `tokentrail sim`'s ``nostreamoptions`` does.
# - vLLM before it took the option puts pydantic's errors, as a Python repr, in the message: {"object":
#   "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), 'msg': 'Extra
#   inputs are not permitted', 'input': {}}]", "param": null, ...} (github.com/modelscope/ms-agent/issues/489).
# - Mistral: 422 {"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body",
#   "stream_options", "include_usage"], ...}]}, "param": null, ...} (github.com/dnakov/anon-kode/issues/53).
# pydantic's errors echo the offending value as "input", which for a check of the whole body is the
# whole request, the option included: what is echoed is not read as what the error is about.
_NAMES_OPTION = re.compile(r"stream[_ ]?options|include[_ ]usage", re.IGNORECASE)
_NAMES_OPTION_BYTES = re.compile(_NAMES_OPTION.pattern.encode(), re.IGNORECASE)


def refuses(body: bytes) -> bool:
    """Whether an error answer (400 or 422) to a request tokentrail added the option to is about the
    option: JSON that names it in a message, a ``param`` or pydantic's ``loc``, or a plain-text answer
    that names it. Anything else (the application's own mistake, ``max_tokens=0`` or too long a
    prompt) is the application's answer."""
    if _NAMES_OPTION_BYTES.search(body) is None:
        return False
    try:
        answer = json.loads(body)
    except ValueError:  # not JSON: a message of its own, with no echo of the request to tell apart
        return True
    except RecursionError:
        return False
    try:
        return any(_NAMES_OPTION.search(text) for text in _said(answer, 0))
    except RecursionError:
        return False


def _said(value: Any, depth: int) -> Iterator[str]:
    """The strings of an error answer, without the request values it echoes (pydantic's ``input``). A
    string that is itself a structure (JSON, or vLLM's Python repr) is read as one."""
    if isinstance(value, dict):
        for name, item in value.items():  # pyright: ignore[reportUnknownVariableType]
            if name != "input":  # a key names a field too: {"stream_options": ["Unknown field."]}
                yield str(name)  # pyright: ignore[reportUnknownArgumentType]
                yield from _said(item, depth)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:  # pyright: ignore[reportUnknownVariableType]
            yield from _said(item, depth)
    elif isinstance(value, str):
        if depth < 2 and value.startswith(("[", "{")):
            for read in (json.loads, ast.literal_eval):
                try:
                    inner = read(value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    continue
                yield from _said(inner, depth + 1)
                return
        yield value


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
    With ``nulls=False`` (a server that sends them unasked) the ``"usage": null`` members are kept.
    """

    __slots__ = ("_nulls", "_pending")

    def __init__(self, nulls: bool = True) -> None:
        self._pending = b""
        self._nulls = nulls

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

    def _event(self, event: bytes) -> bytes:
        if b'"usage"' not in event:
            return event
        if _EMPTY_CHOICES.search(event) is not None and _usage_only(event):
            return b""
        return _NULL_USAGE.sub(b"", event) if self._nulls else event


def _usage_only(event: bytes) -> bool:
    data = b"".join(
        line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
    )  # fmt: skip
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)  # pyright: ignore


def filter_whole(body: bytes, nulls: bool = True) -> bytes:
    """`UsageChunkFilter` over a stream held whole in memory."""
    f = UsageChunkFilter(nulls=nulls)
    return f.feed(body) + f.finish()


_USAGE_MEMBER = re.compile(rb'"usage"\s*:\s*(\S)')
_DONE = re.compile(rb"[\r\n]data:[ \t]*\[DONE\]")


class UsageProbe:
    """Watches a stream sent without the option for the ``"usage"`` members the server sends unasked,
    null or not, passing every byte unchanged. Its verdict is `learned` at the stream's
    ``data: [DONE]`` (the usage-only event comes before it) or at its end, whichever comes first; a
    stream that breaks or is closed before teaches nothing, and the next one is a probe again.
    """

    __slots__ = ("_key", "_seen", "_tail")

    def __init__(self, key: Key) -> None:
        self._key: Key | None = key
        self._seen = 0
        self._tail = b""
        """The end of the bytes before: a member or [DONE] may straddle two chunks."""

    def feed(self, chunk: bytes) -> bytes:
        if self._key is not None:
            data = self._tail + chunk
            done = _DONE.search(data)
            for match in _USAGE_MEMBER.finditer(data, 0, len(data) if done is None else done.start()):
                self._seen |= NULLS if match[1] == b"n" else USAGE
            self._tail = data[-64:]
            if done is not None:
                self.finish()
        return chunk

    def finish(self) -> bytes:
        key, self._key = self._key, None
        if key is not None:
            learned(key, self._seen)
        return b""
