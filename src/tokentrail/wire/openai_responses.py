"""OpenAI Responses API (``POST …/responses``).

Usage shape: https://platform.openai.com/docs/api-reference/responses/object#responses/object-usage
Stream: named events; the model comes with ``response.created`` and the usage with the terminal event,
``response.completed`` (or ``response.incomplete`` / ``response.failed``), inside its ``response``
object (https://platform.openai.com/docs/api-reference/responses-streaming).
"""

from __future__ import annotations

from typing import Any

from tokentrail.wire._base import (
    UNPARSED,
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    loads,
    parsed,
    request_info,
    top_level,
)
from tokentrail.wire.sse import SseDecoder

USAGE = UsageMap(
    input=("input_tokens",),
    output=("output_tokens",),
    cache_read=("input_tokens_details.cached_tokens",),
    reasoning=("output_tokens_details.reasoning_tokens",),
    total="total_tokens",
)

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_FIRST = frozenset({"response.created", "response.in_progress"})


def output_text(response: Any) -> str:
    """The text a Response generated: output_text parts, refusals, function-call names and arguments."""
    if type(response) is not dict:
        return ""
    out = []
    for item in response.get("output") or ():
        if type(item) is not dict:
            continue
        if item.get("type") == "function_call":
            out += [item.get("name") or "", item.get("arguments") or ""]
        for part in item.get("content") or ():
            if type(part) is dict:
                out.append(part.get("text") or part.get("refusal") or "")
    return "".join(p for p in out if type(p) is str)


class ResponsesStream:
    __slots__ = ("_deltas", "_done", "_id", "_model", "_sse", "_usage")

    def __init__(self) -> None:
        self._deltas: list[bytes] = []
        self._sse = SseDecoder()
        self._model: object = None
        self._id: object = None
        self._usage: object = None
        self._done = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            name = event.event
            if name.endswith(".delta"):  # output_text, refusal and function_call_arguments deltas
                self._deltas.append(event.data)
                continue
            if name in _TERMINAL or (self._model is None and name in _FIRST):
                obj = loads(event.data)
                response = obj.get("response") if isinstance(obj, dict) else None
                if not isinstance(response, dict):
                    continue
                self._model = response.get("model") or self._model
                self._id = response.get("id") or self._id
                if name in _TERMINAL:
                    self._done = True
                    self._usage = response.get("usage")

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        deltas, self._deltas = self._deltas, []

        def text() -> str:
            pieces = (loads(d) for d in deltas)
            return "".join(p["delta"] for p in pieces if type(p) is dict and type(p.get("delta")) is str)

        return parsed(self._usage, USAGE, model=self._model, response_id=self._id, complete=self._done,
                      output_text=text)  # fmt: skip


class Responses:
    api = "openai.responses"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/responses")

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "usage", "model", "id")
        if not fields and type(loads(body)) is not dict:  # not JSON, or not an object: nothing to count
            return UNPARSED
        return parsed(fields.get("usage"), USAGE, model=fields.get("model"), response_id=fields.get("id"),
                      output_text=lambda: output_text(loads(body)))  # fmt: skip

    def stream(self) -> ResponsesStream:
        return ResponsesStream()


SUFFIXES: tuple[str, ...] = ("/responses",)

RESPONSES = Responses()
