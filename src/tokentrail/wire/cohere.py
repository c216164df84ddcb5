"""Cohere: chat (v2 and v1), embed and rerank.

    POST /v2/chat     cohere.chat      usage: {billed_units, tokens, cached_tokens}; stream: SSE
    POST /v1/chat     cohere.chat.v1   meta:  {billed_units, tokens};                stream: NDJSON
    POST /v{1,2}/embed    cohere.embed     meta.billed_units.input_tokens
    POST /v{1,2}/rerank   cohere.rerank    billed in search units, not tokens

References: https://docs.cohere.com/reference/chat, https://docs.cohere.com/v1/reference/chat,
https://docs.cohere.com/reference/embed, https://docs.cohere.com/reference/rerank.
Cohere's OpenAI-compatible endpoint (``/compatibility/v1/chat/completions``) is the OpenAI parser's.

Which count is the input: Cohere reports two. ``billed_units`` are "the tokens that you're actually
billed for"; ``tokens`` also counts tokens "Cohere adds under the hood" and special tokens a model emits,
which "you are not charged for" (https://docs.cohere.com/docs/how-does-cohere-pricing-work, "What's the
Difference Between Billed Tokens and Generic Tokens?": billed 6772/248 against tokens 7596/645). The
conventions count every *billed* token, so input and output come from ``billed_units``; ``tokens`` stays
in the raw usage. When a response has no ``billed_units`` at all (some Cohere-compatible servers send only
``tokens``), ``tokens`` is the only reported count and is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec.structs import replace

from tokentrail.wire._base import (
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    WholeBody,
    loads,
    parsed,
    request_info,
    top_level,
)
from tokentrail.wire.ollama import JsonLines
from tokentrail.wire.sse import SseDecoder

SUFFIXES: tuple[str, ...] = ("/v2/chat", "/v1/chat", "/v1/embed", "/v2/embed", "/v1/rerank", "/v2/rerank")

# `cached_tokens` (v2 usage, top level) is read as the cached part of the input; Cohere's reference names
# it without saying which count it is part of. A recorded pair (billed 1480, tokens 1500, cached 600)
# fits inside the billed input; a larger value is flagged parts_exceed_whole.
V2_USAGE = UsageMap(
    input=("billed_units.input_tokens",), output=("billed_units.output_tokens",), cache_read=("cached_tokens",)
)
META_USAGE = UsageMap(input=("billed_units.input_tokens",), output=("billed_units.output_tokens",))
"""v1 ``meta`` (and Cohere bodies on Bedrock)."""
_TOKENS_USAGE = UsageMap(
    input=("tokens.input_tokens",), output=("tokens.output_tokens",), cache_read=("cached_tokens",)
)


def chat_usage(raw: Any, spec: UsageMap = V2_USAGE, **kwargs: Any) -> ParsedCall:
    """A v2 ``usage`` or v1 ``meta`` object: billed units, else the raw token counts."""
    if (
        isinstance(raw, Mapping)
        and not isinstance(raw.get("billed_units"), Mapping)
        and isinstance(raw.get("tokens"), Mapping)
    ):
        spec = _TOKENS_USAGE
    return parsed(raw, spec, **kwargs)


# -- chat v2 --------------------------------------------------------------------------------------------


class ChatV2Stream:
    """v2 streams are SSE (``event: message-start`` … ``event: message-end``); the usage is in the
    ``message-end`` event's ``delta.usage`` (https://docs.cohere.com/docs/streaming). Each data line also
    names its event in ``"type"``, which is what is matched (some proxies drop the ``event:`` lines)."""

    __slots__ = ("_done", "_id", "_sse", "_usage")

    def __init__(self) -> None:
        self._sse = SseDecoder()
        self._id: Any = None
        self._usage: Any = None
        self._done = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            data = event.data
            end = event.event == "message-end" or b'"message-end"' in data
            if end or (self._id is None and (event.event == "message-start" or b'"message-start"' in data)):
                obj = loads(data)
                if not isinstance(obj, dict):
                    continue
                if obj.get("type") == "message-start" or event.event == "message-start":
                    self._id = obj.get("id") or self._id
                elif obj.get("type") == "message-end" or event.event == "message-end":
                    self._done = True
                    delta = obj.get("delta")
                    self._usage = delta.get("usage") if isinstance(delta, dict) else None

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        return chat_usage(self._usage, response_id=self._id, complete=self._done)


class ChatV2:
    api = "cohere.chat"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/v2/chat")

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)  # "stream" defaults to false

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "usage", "id")
        return chat_usage(fields.get("usage"), response_id=fields.get("id"))

    def stream(self) -> ChatV2Stream:
        return ChatV2Stream()


# -- chat v1 --------------------------------------------------------------------------------------------


class ChatV1Stream:
    """v1 streams are newline-delimited JSON (``application/stream+json``): ``stream-start`` …
    ``stream-end``, whose ``response.meta`` has the usage (https://docs.cohere.com/v1/docs/streaming)."""

    __slots__ = ("_done", "_id", "_lines", "_meta")

    def __init__(self) -> None:
        self._lines = JsonLines()
        self._id: Any = None
        self._meta: Any = None
        self._done = False

    def feed(self, chunk: bytes) -> None:
        for line in self._lines.feed(chunk):
            self._line(line)

    def _line(self, line: bytes) -> None:
        if b'"stream-end"' not in line:
            return
        obj = loads(line)
        if not isinstance(obj, dict) or obj.get("event_type") != "stream-end":
            return
        self._done = True
        response = obj.get("response")
        if isinstance(response, dict):
            self._meta = response.get("meta")
            self._id = response.get("response_id") or response.get("generation_id")

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        rest = self._lines.close()
        if rest:
            self._line(rest)
        return chat_usage(self._meta, META_USAGE, response_id=self._id, complete=self._done)


class ChatV1:
    api = "cohere.chat.v1"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/v1/chat")

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "meta", "response_id")
        if not fields and b"\n" in body.strip():  # a whole NDJSON stream handed over at once
            stream = self.stream()
            stream.feed(body)
            return stream.finish(StreamOutcome.COMPLETE)
        return chat_usage(fields.get("meta"), META_USAGE, response_id=fields.get("response_id"))

    def stream(self) -> ChatV1Stream:
        return ChatV1Stream()


# -- embed and rerank -----------------------------------------------------------------------------------


class Embed:
    """``meta.billed_units.input_tokens`` is the input; an embedding generates nothing (output 0).
    Image inputs are billed as ``billed_units.images``, not tokens: then the input is unknown."""

    api = "cohere.embed"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(("/v1/embed", "/v2/embed"))

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "meta", "id")
        meta = fields.get("meta")
        billed = meta.get("billed_units") if isinstance(meta, Mapping) else None
        if isinstance(meta, Mapping) and isinstance(billed, Mapping) and "output_tokens" not in billed:
            result = parsed(
                {**meta, "billed_units": {**billed, "output_tokens": 0}}, META_USAGE, response_id=fields.get("id")
            )
            return replace(result, raw_usage=meta)
        return parsed(meta, META_USAGE, response_id=fields.get("id"))

    def stream(self) -> WholeBody:
        return WholeBody(self)


_RERANK_TOTAL = UsageMap(input=("total_tokens",), output=("output_tokens",))


class Rerank:
    """Cohere bills rerank in search units (``meta.billed_units.search_units``): no token usage, so it is
    recorded as missing with the meta kept raw. Jina and Voyage serve the same path and bill tokens:
    their ``usage.total_tokens`` is all input (https://jina.ai/reranker/, https://docs.voyageai.com/reference/reranker-api)."""

    api = "cohere.rerank"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(("/v1/rerank", "/v2/rerank"))

    def parse_request(self, body: bytes) -> RequestInfo:
        return request_info(body)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "meta", "usage", "model", "id")
        usage = fields.get("usage")
        if isinstance(usage, Mapping) and "total_tokens" in usage:
            result = parsed(
                {**usage, "output_tokens": 0}, _RERANK_TOTAL, model=fields.get("model"), response_id=fields.get("id")
            )
            return replace(result, raw_usage=usage)
        return ParsedCall(
            raw_usage=fields.get("meta"), response_id=fields.get("id") if isinstance(fields.get("id"), str) else None
        )

    def stream(self) -> WholeBody:
        return WholeBody(self)


CHAT_V2 = ChatV2()
CHAT_V1 = ChatV1()
EMBED = Embed()
RERANK = Rerank()

PARSERS = (CHAT_V2, CHAT_V1, EMBED, RERANK)

__all__ = [
    "CHAT_V1",
    "CHAT_V2",
    "EMBED",
    "META_USAGE",
    "PARSERS",
    "RERANK",
    "SUFFIXES",
    "V2_USAGE",
    "ChatV1Stream",
    "ChatV2Stream",
    "chat_usage",
]
