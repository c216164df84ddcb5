"""Ollama's native API: ``/api/chat``, ``/api/generate``, ``/api/embed`` and the legacy ``/api/embeddings``.

Ollama's OpenAI-compatible ``/v1/…`` endpoints are the OpenAI parsers'. Reference:
https://github.com/ollama/ollama/blob/main/docs/api.md and https://docs.ollama.com/api/usage

- ``/api/chat`` and ``/api/generate`` stream by default: a request without ``"stream": false`` gets
  newline-delimited JSON (``application/x-ndjson``), one object per line; the last has ``"done": true``
  and the counts ``prompt_eval_count`` (input) and ``eval_count`` (output).
- ``prompt_eval_count`` is left out when the whole prompt came from Ollama's prompt cache
  (ollama/ollama#2068, #3427; fixed for some paths by #5371, still seen since): absent means unknown,
  never 0. Newer servers add ``prompt_eval_cached_count``, a part of ``prompt_eval_count``
  (``promptEvalCount() = CacheN + PromptN`` in llm/llama_server.go, cited in stdapi-ai/stdapi.ai#252).
- ``/api/embed`` reports ``prompt_eval_count``; the legacy ``/api/embeddings`` reports nothing.

Output text (counted when no ``eval_count`` came, `ParsedCall.output_text`): ``thinking`` (part of
``eval_count``), then ``message.content`` (chat) or ``response`` (generate), then each tool call's
function name plus its arguments as compact JSON, line by line for a stream: the rule
`tokentrail.sim.ollama` counts ``eval_count`` by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msgspec.structs import replace

from tokentrail.wire._base import (
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    WholeBody,
    compact_json,
    loads,
    parsed,
    top_level,
)

SUFFIXES: tuple[str, ...] = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")

USAGE = UsageMap(
    input=("prompt_eval_count",),
    output=("eval_count",),
    cache_read=("prompt_eval_cached_count",),
)
_METRICS = (
    "prompt_eval_count",
    "prompt_eval_cached_count",
    "eval_count",
    "total_duration",
    "load_duration",
    "prompt_eval_duration",
    "eval_duration",
    "done_reason",
)
"""What of a final object is kept as the raw usage (never the message itself)."""


class JsonLines:
    """Splits newline-delimited JSON into lines, whatever the chunking (shared with Cohere v1 streams).

    Linear in the stream's length: an unfinished line is kept as its pieces, and only the newest is
    searched for the line end (a line of megabytes in small chunks cost quadratic time before)."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The non-blank lines completed by ``chunk``, without their line ends."""
        end = chunk.rfind(b"\n")
        if end < 0:
            if chunk:
                self._pending.append(chunk)
            return []
        head = chunk[:end]
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
            self._pending.clear()
        if end + 1 < len(chunk):
            self._pending.append(chunk[end + 1 :])
        return [line for line in (raw.strip() for raw in head.split(b"\n")) if line]

    def close(self) -> bytes:
        """What is left after the last line end (a last object the server sent without one)."""
        rest = b"".join(self._pending).strip()
        self._pending.clear()
        return rest


def _metrics(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: obj[k] for k in _METRICS if k in obj}


def object_text(obj: Any) -> str:
    """The generated text of one chat or generate object (a whole answer or a stream line)."""
    if type(obj) is not dict:
        return ""
    message = obj.get("message")
    source = message if type(message) is dict else obj
    parts = [source.get("thinking"), source.get("content") if source is message else obj.get("response")]
    calls = source.get("tool_calls")
    for call in calls if type(calls) is list else ():
        function = call.get("function") if type(call) is dict else None
        if type(function) is dict:
            arguments = function.get("arguments")
            # Ollama sends arguments as an object; a string (a proxy's) is the JSON as generated.
            parts += [function.get("name"), arguments if type(arguments) is str or arguments is None
                      else compact_json(arguments)]  # fmt: skip
    return "".join([p for p in parts if type(p) is str])


def _lines_text(lines: list[bytes]) -> str:
    return "".join([object_text(loads(line)) for line in lines])


def _final(
    obj: dict[str, Any] | None,
    *,
    complete: bool = True,
    model: Any = None,
    output_text: Callable[[], str | None] | None = None,
) -> ParsedCall:
    if obj is None:
        return parsed(None, USAGE, model=model, complete=complete, output_text=output_text)
    return parsed(_metrics(obj), USAGE, model=obj.get("model") or model, complete=complete, output_text=output_text)


class OllamaStream:
    """A chat or generate stream. Only the final ``done`` line (or an ``error`` line) is parsed in full;
    every line is kept by reference (no copy, no parse), its text decoded later, off the caller's
    thread, if no ``eval_count`` came."""

    __slots__ = ("_error", "_final", "_kept", "_lines", "_model")

    def __init__(self) -> None:
        self._kept: list[bytes] = []
        self._lines = JsonLines()
        self._model: Any = None
        self._final: dict[str, Any] | None = None
        self._error = False

    def feed(self, chunk: bytes) -> None:
        for line in self._lines.feed(chunk):
            self._line(line)

    def _line(self, line: bytes) -> None:
        self._kept.append(line)
        if self._model is None or b'"done":true' in line or b'"done": true' in line or b'"error"' in line:
            obj = loads(line)
            if not isinstance(obj, dict):
                return
            if self._model is None and isinstance(obj.get("model"), str):
                self._model = obj["model"]
            if obj.get("done") is True:
                self._final = obj
            elif "error" in obj:
                # Ollama reports a failure mid-stream as {"error": "..."} and ends the body.
                self._error = True

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        rest = self._lines.close()
        if rest:
            self._line(rest)
        complete = self._final is not None and not self._error
        lines = self._kept
        return _final(self._final, complete=complete, model=self._model, output_text=lambda: _lines_text(lines))


class _Native:
    __slots__ = ("_suffix", "api")

    def __init__(self, api: str, suffix: str) -> None:
        self.api = api
        self._suffix = suffix

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(self._suffix)


class Generation(_Native):
    """``/api/chat`` and ``/api/generate``."""

    def parse_request(self, body: bytes) -> RequestInfo:
        fields = top_level(body, "model", "stream") if body else {}
        model = fields.get("model")
        # "stream" defaults to true on these two endpoints: only an explicit false turns it off.
        return RequestInfo(model=model if isinstance(model, str) else None, stream=fields.get("stream") is not False)

    def parse(self, body: bytes) -> ParsedCall:
        obj = loads(body)
        if isinstance(obj, dict):
            # A single object: "stream": false, or a one-line stream.
            return _final(
                obj if obj.get("done") is True else None,
                complete=obj.get("done") is True or "error" in obj,
                model=obj.get("model"),
                output_text=lambda: object_text(obj),
            )
        if body.lstrip()[:1] != b"{":  # empty, an HTML error page…
            return ParsedCall()
        # Not one JSON value: a whole NDJSON stream handed over at once.
        stream = self.stream()
        stream.feed(body)
        return stream.finish(StreamOutcome.COMPLETE)

    def stream(self) -> OllamaStream:
        return OllamaStream()


class Embed(_Native):
    """``/api/embed``: ``prompt_eval_count`` is the input; an embedding generates nothing (output 0)."""

    def parse_request(self, body: bytes) -> RequestInfo:
        model = top_level(body, "model").get("model") if body else None
        return RequestInfo(model=model if isinstance(model, str) else None)

    def parse(self, body: bytes) -> ParsedCall:
        # "embeddings" itself is never decoded: it is megabytes of floats.
        fields = top_level(body, "model", "prompt_eval_count", "total_duration", "load_duration")
        if "prompt_eval_count" not in fields and b'"embeddings"' not in body:
            return ParsedCall(model=fields.get("model") if isinstance(fields.get("model"), str) else None)
        raw = _metrics(fields)
        result = parsed({**raw, "eval_count": 0}, USAGE, model=fields.get("model"))
        return replace(result, raw_usage=raw)

    def stream(self) -> WholeBody:
        return WholeBody(self)


class LegacyEmbeddings(_Native):
    """``/api/embeddings`` (deprecated): ``{"embedding": [...]}`` and no counts at all."""

    def parse_request(self, body: bytes) -> RequestInfo:
        model = top_level(body, "model").get("model") if body else None
        return RequestInfo(model=model if isinstance(model, str) else None)

    def parse(self, body: bytes) -> ParsedCall:
        return ParsedCall()

    def stream(self) -> WholeBody:
        return WholeBody(self)


CHAT = Generation("ollama.chat", "/api/chat")
GENERATE = Generation("ollama.generate", "/api/generate")
EMBED = Embed("ollama.embed", "/api/embed")
EMBEDDINGS = LegacyEmbeddings("ollama.embeddings", "/api/embeddings")

PARSERS = (CHAT, GENERATE, EMBED, EMBEDDINGS)

__all__ = ["CHAT", "EMBED", "EMBEDDINGS", "GENERATE", "PARSERS", "SUFFIXES", "USAGE", "JsonLines", "OllamaStream"]
