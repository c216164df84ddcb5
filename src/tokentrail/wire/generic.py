"""The fallback for a POST to a known LLM provider's host on a path no family parser owns.

``api.openai.com/v1/audio/transcriptions``, ``/v1/images/generations``, ``/v1/moderations``… are still
calls to a paid API, so they are recorded: with the model the request names (a JSON field, or a
``multipart/form-data`` field for uploads) and usage ``missing``. When the response does carry a token
usage object of the two common shapes (``input_tokens``/``output_tokens`` as gpt-4o-transcribe and
gpt-image-1 send, https://platform.openai.com/docs/api-reference/audio/json-object and
https://platform.openai.com/docs/api-reference/images/object; or ``prompt_tokens``/``completion_tokens``),
those reported counts are kept rather than thrown away. Anything else (whisper-1's
``{"type": "duration", "seconds": …}``) stays raw, with usage missing. Which hosts get this parser is the
capture layer's decision: `matches` accepts any POST.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec.structs import replace

from tokentrail.wire._base import ParsedCall, RequestInfo, StreamOutcome, UsageMap, json_value, parsed, top_level

SUFFIXES: tuple[str, ...] = ()
"""Owns no path: the capture layer picks this parser by host."""

_INPUT_OUTPUT = UsageMap(
    input=("input_tokens",),
    output=("output_tokens",),
    cache_read=("input_tokens_details.cached_tokens",),
    reasoning=("output_tokens_details.reasoning_tokens",),
    total="total_tokens",
)
_PROMPT_COMPLETION = UsageMap(
    input=("prompt_tokens",),
    output=("completion_tokens",),
    cache_read=("prompt_tokens_details.cached_tokens",),
    reasoning=("completion_tokens_details.reasoning_tokens",),
    total="total_tokens",
)
_TAIL = 16 * 1024
"""How much of a streamed body is kept: the end, where a final event carries the usage."""


def _usage(raw: Any, *, model: Any = None, complete: bool = True) -> ParsedCall:
    if isinstance(raw, Mapping):
        if "input_tokens" in raw or "output_tokens" in raw:
            return parsed(raw, _INPUT_OUTPUT, model=model, complete=complete)
        if "prompt_tokens" in raw or "completion_tokens" in raw:
            return parsed(raw, _PROMPT_COMPLETION, model=model, complete=complete)
    # Not a token count (or none at all): kept raw, the counts unknown.
    return replace(parsed(None, _INPUT_OUTPUT, model=model, complete=complete), raw_usage=raw)


def _form_field(body: bytes, name: bytes) -> str | None:
    """A ``multipart/form-data`` text field's value, found without parsing the parts (uploads are large)."""
    at = body.find(b'name="' + name + b'"')
    if at < 0:
        return None
    start = body.find(b"\r\n\r\n", at)
    if start < 0:
        return None
    end = body.find(b"\r\n", start + 4)
    if end < 0 or end - start > 4 + 256:
        return None
    return body[start + 4 : end].decode("utf-8", "replace").strip() or None


class GenericStream:
    """Keeps only the last bytes of the body; a usage object found there is read at the end."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        tail = self._tail + chunk
        self._tail = tail[-_TAIL:] if len(tail) > _TAIL else tail

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        complete = outcome is StreamOutcome.COMPLETE
        return _usage(json_value(self._tail, "usage"), model=json_value(self._tail, "model"), complete=complete)


class Generic:
    api = "unknown"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST"

    def parse_request(self, body: bytes) -> RequestInfo:
        if not body:
            return RequestInfo()
        if body.lstrip()[:1] == b"{":
            fields = top_level(body, "model", "stream")
            model = fields.get("model")
            return RequestInfo(model=model if isinstance(model, str) else None, stream=fields.get("stream") is True)
        stream = _form_field(body, b"stream")
        return RequestInfo(model=_form_field(body, b"model"), stream=stream is not None and stream.lower() == "true")

    def parse(self, body: bytes) -> ParsedCall:
        if body.lstrip()[:1] != b"{":  # audio, images as bytes, plain text
            return ParsedCall()
        fields = top_level(body, "usage", "model")
        return _usage(fields.get("usage"), model=fields.get("model"))

    def stream(self) -> GenericStream:
        return GenericStream()


GENERIC = Generic()

__all__ = ["GENERIC", "SUFFIXES", "GenericStream"]
