"""Amazon Bedrock runtime: Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream.

    POST /model/{modelId}/converse                      bedrock.converse   JSON
    POST /model/{modelId}/converse-stream               bedrock.converse   event stream
    POST /model/{modelId}/invoke                        bedrock.invoke     the model's own JSON
    POST /model/{modelId}/invoke-with-response-stream   bedrock.invoke     event stream of base64 chunks

API reference: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_Operations_Amazon_Bedrock_Runtime.html

The model is in the path, URL-encoded (an ARN's ``:`` and ``/`` arrive as ``%3A`` and ``%2F``), never
in the body: `model_from_path` reads it. The stream operations answer in the AWS event-stream framing
(`tokentrail.wire.eventstream`). InvokeModel bodies are each model family's own format; usage is read
by shape, and where a family's body has none, Bedrock's response headers do (`usage_from_headers`).

Bedrock's OpenAI-compatible endpoint (``/openai/v1/chat/completions``) is the OpenAI parser's.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from msgspec.structs import replace

from tokentrail.records import Flag
from tokentrail.wire import cohere, openai_chat
from tokentrail.wire._base import ParsedCall, RequestInfo, StreamOutcome, UsageMap, loads, parsed, top_level
from tokentrail.wire.eventstream import EventStreamDecoder

SUFFIXES: tuple[str, ...] = ("/converse", "/converse-stream", "/invoke", "/invoke-with-response-stream")

# -- usage maps ------------------------------------------------------------------------------------

# Bedrock's inputTokens leaves the cached tokens out, like Anthropic's input_tokens: "inputTokens
# represents only the non-cached input tokens … total input tokens = inputTokens + cacheReadInputTokens
# + cacheWriteInputTokens" (https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html, as
# quoted in crmne/ruby_llm#832; the same fix in BerriAI/litellm#15292; DataDog/dd-trace-js
# llmobs/plugins/bedrockruntime.js: "bedrock input tokens only count non-cached tokens"). totalTokens does
# include them (maximhq/bifrost#1872), so it still equals input + output here.
# Not handled, because nothing in one response shows it: maximhq/bifrost#6942 measured ConverseStream
# for OpenAI gpt-oss models reporting inputTokens that already include cacheWriteInputTokens.
CONVERSE_USAGE = UsageMap(
    input=("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"),
    output=("outputTokens",),
    cache_read=("cacheReadInputTokens",),
    cache_write=("cacheWriteInputTokens",),
    total="totalTokens",
)
# Amazon Nova's InvokeModel body names the cache counts differently (…TokenCount), same meaning
# (https://docs.aws.amazon.com/nova/latest/userguide/using-invoke-api.html).
NOVA_USAGE = UsageMap(
    input=("inputTokens", "cacheReadInputTokenCount", "cacheWriteInputTokenCount"),
    output=("outputTokens",),
    cache_read=("cacheReadInputTokenCount",),
    cache_write=("cacheWriteInputTokenCount",),
    total="totalTokens",
)
# Claude's Messages body, as on Anthropic's own API: input_tokens excludes the cache
# (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#tracking-cache-performance).
# Same map as anthropic_messages.USAGE (thinking_tokens is the reasoning part of output_tokens).
ANTHROPIC_USAGE = UsageMap(
    input=("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"),
    output=("output_tokens",),
    cache_read=("cache_read_input_tokens",),
    cache_write=("cache_creation_input_tokens",),
    reasoning=("output_tokens_details.thinking_tokens",),
)
# The last chunk of every InvokeModelWithResponseStream carries "amazon-bedrock-invocationMetrics";
# inputTokenCount excludes the cache like the headers below (a recorded Claude stream: inputTokenCount 3,
# cacheWriteInputTokenCount 25037; DataDog/dd-trace-js bedrockruntime/utils.js reads all four).
METRICS_USAGE = UsageMap(
    input=("inputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount"),
    output=("outputTokenCount",),
    cache_read=("cacheReadInputTokenCount",),
    cache_write=("cacheWriteInputTokenCount",),
)
# Meta Llama: https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-meta.html
LLAMA_USAGE = UsageMap(input=("prompt_token_count",), output=("generation_token_count",))
# Titan Text streams: inputTextTokenCount on the first chunk, totalOutputTextTokenCount (cumulative) after
# (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-text.html).
TITAN_STREAM_USAGE = UsageMap(input=("inputTextTokenCount",), output=("totalOutputTextTokenCount",))
_TITAN_USAGE = UsageMap(input=("inputTextTokenCount",), output=("tokenCount",))

_BASE = {
    CONVERSE_USAGE: "inputTokens",
    NOVA_USAGE: "inputTokens",
    ANTHROPIC_USAGE: "input_tokens",
    METRICS_USAGE: "inputTokenCount",
}
"""The uncached input count each inclusive sum is built on: without it, the sum is no input count."""

# InvokeModel answers with Bedrock's own counts in headers, whatever the model family; the cache headers
# appear when prompt caching is on (DataDog/dd-trace-js bedrockruntime.js;
# traceloop/openllmetry bedrock prompt_caching.py). Same meaning as the invocation metrics.
_HEADERS = (
    ("x-amzn-bedrock-input-token-count", "inputTokenCount"),
    ("x-amzn-bedrock-output-token-count", "outputTokenCount"),
    ("x-amzn-bedrock-cache-read-input-token-count", "cacheReadInputTokenCount"),
    ("x-amzn-bedrock-cache-write-input-token-count", "cacheWriteInputTokenCount"),
)

_SAME: Any = object()


def _read(counts: Any, spec: UsageMap, *, raw_usage: Any = _SAME, **kwargs: Any) -> ParsedCall:
    """`parsed`, with an inclusive input only when its uncached base count is there."""
    base = _BASE.get(spec)
    if base is not None and isinstance(counts, Mapping) and counts.get(base) is None:
        spec = dataclasses.replace(spec, input=())
    result = parsed(counts, spec, **kwargs)
    return result if raw_usage is _SAME else replace(result, raw_usage=raw_usage)


# -- helpers for the lead ----------------------------------------------------------------------------


def model_from_path(path: str) -> str | None:
    """The model id, ARN or inference profile of a ``…/model/{modelId}/{operation}`` path, decoded."""
    at = path.find("/model/")
    end = path.rfind("/")
    if at < 0 or end <= at + 7:
        return None
    return unquote(path[at + 7 : end]) or None


def usage_from_headers(headers: Any) -> ParsedCall | None:
    """Usage from InvokeModel's ``x-amzn-bedrock-*-token-count`` response headers, or ``None`` if absent.

    ``headers`` is a mapping whose ``.get`` is case-insensitive (httpx, requests, botocore). Use it when
    the body reported no usage: Mistral, Cohere, DeepSeek and AI21 Jurassic bodies carry none.
    """
    raw: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for header, key in _HEADERS:
        value = headers.get(header)
        if value is None:
            continue
        raw[header] = value
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        text = text.strip() if isinstance(text, str) else text
        counts[key] = int(text) if isinstance(text, str) and text.isascii() and text.isdigit() else text
    if "inputTokenCount" not in counts and "outputTokenCount" not in counts:
        return None
    return _read(counts, METRICS_USAGE, raw_usage=raw)


# -- Converse -----------------------------------------------------------------------------------------


def _converse(body: bytes) -> ParsedCall:
    return _read(top_level(body, "usage").get("usage"), CONVERSE_USAGE)


class ConverseStream:
    """ConverseStream: usage arrives in the ``metadata`` event, the last one, after ``messageStop``.

    Events: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html
    Each message's ``:event-type`` header names the event and its payload is that event's JSON (plus a
    padding field ``p``); ``:message-type: exception`` carries modelStreamErrorException and the like.
    """

    __slots__ = ("_bad", "_decoder", "_done", "_error", "_usage")

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self._usage: Any = None
        self._done = False
        self._error = False
        self._bad = False

    def feed(self, chunk: bytes) -> None:
        for message in self._decoder.feed(chunk):
            if message.headers.get(":message-type") != "event":
                self._error = True
            elif message.headers.get(":event-type") == "metadata":
                obj = loads(message.payload)
                if isinstance(obj, dict):
                    self._done = True
                    self._usage = obj.get("usage")
                else:
                    self._bad = True

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        complete = self._done and not self._error
        bad = self._bad or self._decoder.failed
        return _read(self._usage, CONVERSE_USAGE, complete=complete, extra_flags={Flag.UNPARSED} if bad else None)


# -- InvokeModel --------------------------------------------------------------------------------------

_INVOKE_KEYS = (
    "usage",
    "model",
    "id",
    "inputTextTokenCount",
    "results",
    "prompt_token_count",
    "generation_token_count",
    "meta",
    "amazon-bedrock-invocationMetrics",
)


def _invoke(body: bytes) -> ParsedCall:
    """An InvokeModel body, whichever model family wrote it (recognised by shape, not by model id)."""
    obj = top_level(body, *_INVOKE_KEYS)
    model, response_id = obj.get("model"), obj.get("id")
    usage = obj.get("usage")
    if isinstance(usage, Mapping):
        if "input_tokens" in usage or "output_tokens" in usage:  # Claude (Messages API)
            return _read(usage, ANTHROPIC_USAGE, model=model, response_id=response_id)
        if "inputTokens" in usage or "outputTokens" in usage:  # Amazon Nova
            spec = CONVERSE_USAGE if "cacheReadInputTokens" in usage or "cacheWriteInputTokens" in usage else NOVA_USAGE
            return _read(usage, spec, model=model, response_id=response_id)
        # OpenAI-shaped: AI21 Jamba, Mistral Large 2407+, OpenAI gpt-oss
        return _read(usage, openai_chat.USAGE, model=model, response_id=response_id)
    metrics = obj.get("amazon-bedrock-invocationMetrics")
    if metrics is not None:
        return _read(metrics, METRICS_USAGE, model=model, response_id=response_id)
    if "inputTextTokenCount" in obj:
        results = obj.get("results")
        if isinstance(results, list):  # Titan Text: one tokenCount per result
            return _titan_text(obj["inputTextTokenCount"], results)
        # Titan embeddings: an embedding generates nothing, so output is a reported 0.
        raw = {"inputTextTokenCount": obj["inputTextTokenCount"]}
        return _read({**raw, "tokenCount": 0}, _TITAN_USAGE, raw_usage=raw)
    if "prompt_token_count" in obj or "generation_token_count" in obj:  # Meta Llama
        raw = {k: obj[k] for k in ("prompt_token_count", "generation_token_count") if k in obj}
        return _read(raw, LLAMA_USAGE)
    meta = obj.get("meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("billed_units"), Mapping):  # Cohere
        if b'"embeddings"' in body:
            return cohere.EMBED.parse(body)
        return cohere.chat_usage(meta, cohere.META_USAGE)
    # Mistral (outputs[]), Cohere Command, DeepSeek, AI21 Jurassic: no usage in the body.
    return ParsedCall(model=model if isinstance(model, str) else None)


def _titan_text(input_count: Any, results: list[Any]) -> ParsedCall:
    counts = [r.get("tokenCount") if isinstance(r, Mapping) else None for r in results]
    invalid = [c for c in counts if not (isinstance(c, int) and not isinstance(c, bool) and c >= 0)]
    # One invalid count makes the sum unknown: pass it on for read_usage to flag (a missing one is None).
    output: Any = (invalid[0] if invalid else sum(counts)) if counts else None
    raw = {"inputTextTokenCount": input_count, "results": [{"tokenCount": c} for c in counts]}
    return _read({"inputTextTokenCount": input_count, "tokenCount": output}, _TITAN_USAGE, raw_usage=raw)


# The model's own end of message inside a chunk (Claude's message_stop / stop_reason, Llama's and
# Mistral's stop_reason, Titan's completionReason, Nova's stopReason, AI21's finish_reason); a null
# value does not match.
_STOPPED = re.compile(rb'"(?:stop_reason|stopReason|completionReason|finish_reason)"\s*:\s*"|"message_stop"')
_STREAM_COUNTS = ("prompt_token_count", "generation_token_count", "inputTextTokenCount", "totalOutputTextTokenCount")
_INNER_HINTS = (b"invocationMetrics", b"usage", b"token_count", b"TokenCount", b"message_start")


class InvokeStream:
    """InvokeModelWithResponseStream: each ``chunk`` event's payload is ``{"bytes": "<base64>"}``
    wrapping one piece of the model's own stream.

    Bedrock adds ``amazon-bedrock-invocationMetrics`` to the last piece: that is the bill
    (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html).
    Until it arrives, the model's own counts are kept for a partial record: Claude's ``message_start`` and
    ``message_delta`` usage (merged by field, the delta's output_tokens is cumulative), Llama's and Titan's
    running counts (the last value wins).
    """

    __slots__ = ("_bad", "_decoder", "_error", "_id", "_metrics", "_model", "_nova", "_seen", "_stopped")

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self._metrics: Any = None
        self._seen: dict[str, Any] = {}
        self._nova: Any = None
        self._model: Any = None
        self._id: Any = None
        self._error = False
        self._bad = False
        self._stopped = False

    def feed(self, chunk: bytes) -> None:
        for message in self._decoder.feed(chunk):
            if message.headers.get(":message-type") != "event":
                self._error = True
                continue
            if message.headers.get(":event-type") != "chunk":
                continue
            outer = loads(message.payload)
            data = outer.get("bytes") if isinstance(outer, dict) else None
            try:
                inner = base64.b64decode(data, validate=True) if isinstance(data, str) else None
            except (binascii.Error, ValueError):
                inner = None
            if inner is None:
                self._bad = True
                continue
            if not self._stopped and _STOPPED.search(inner):
                self._stopped = True
            if any(hint in inner for hint in _INNER_HINTS):
                obj = loads(inner)
                if isinstance(obj, dict):
                    self._inner(obj)
                else:
                    self._bad = True

    def _inner(self, obj: dict[str, Any]) -> None:
        metrics = obj.get("amazon-bedrock-invocationMetrics")
        if metrics is not None:
            self._metrics = metrics
        kind = obj.get("type")
        if kind == "message_start" and isinstance(message := obj.get("message"), dict):
            self._model = message.get("model") or self._model
            self._id = message.get("id") or self._id
            if isinstance(message.get("usage"), dict):
                self._seen.update(message["usage"])
        elif kind == "message_delta" and isinstance(obj.get("usage"), dict):
            self._seen.update(obj["usage"])
        elif isinstance(metadata := obj.get("metadata"), dict) and isinstance(metadata.get("usage"), dict):
            self._nova = metadata["usage"]  # Nova's stream ends with a Converse-like metadata event
        for key in _STREAM_COUNTS:
            if obj.get(key) is not None:
                self._seen[key] = obj[key]

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        decoder = self._decoder
        # The metrics chunk is the last one. Without it, the stream is whole only if the body ended
        # cleanly right after the model's own end of message.
        clean = outcome is StreamOutcome.COMPLETE and not decoder.failed and decoder.pending == 0
        complete = not self._error and (self._metrics is not None or (clean and self._stopped))
        flags = {Flag.UNPARSED} if self._bad or decoder.failed else None
        common: dict[str, Any] = {
            "model": self._model,
            "response_id": self._id,
            "complete": complete,
            "extra_flags": flags,
        }
        if self._metrics is not None:
            return _read(self._metrics, METRICS_USAGE, **common)
        if self._nova is not None:
            spec = (
                CONVERSE_USAGE
                if "cacheReadInputTokens" in self._nova or "cacheWriteInputTokens" in self._nova
                else NOVA_USAGE
            )
            return _read(self._nova, spec, **common)
        seen = self._seen
        if "input_tokens" in seen or "output_tokens" in seen:
            return _read(seen, ANTHROPIC_USAGE, **common)
        if "prompt_token_count" in seen or "generation_token_count" in seen:
            return _read(
                {k: seen[k] for k in ("prompt_token_count", "generation_token_count") if k in seen},
                LLAMA_USAGE,
                **common,
            )
        if "inputTextTokenCount" in seen or "totalOutputTextTokenCount" in seen:
            return _read(
                {k: seen[k] for k in ("inputTextTokenCount", "totalOutputTextTokenCount") if k in seen},
                TITAN_STREAM_USAGE,
                **common,
            )
        return _read(None, METRICS_USAGE, **common)


# -- parsers ------------------------------------------------------------------------------------------


def _is_json(body: bytes) -> bool:
    return body.lstrip()[:1] == b"{"


class _Operation:
    """One Bedrock runtime operation; ``matches`` accepts any path prefix (proxies mount ``/bedrock/model/…``)."""

    __slots__ = ("_stream", "_suffix", "api")

    def __init__(self, api: str, suffix: str, stream: bool) -> None:
        self.api = api
        self._suffix = suffix
        self._stream = stream

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(self._suffix) and "/model/" in path

    def parse_request(self, body: bytes) -> RequestInfo:
        # The model is in the path (`model_from_path`); streaming is the operation, not a body field.
        return RequestInfo(stream=self._stream)

    def request_from_path(self, path: str) -> RequestInfo:
        return RequestInfo(model=model_from_path(path), stream=self._stream)

    def usage_from_headers(self, headers: Any) -> ParsedCall | None:
        return usage_from_headers(headers)


class Converse(_Operation):
    def parse(self, body: bytes) -> ParsedCall:
        if self._stream and not _is_json(body):  # an event-stream body read whole
            stream = self.stream()
            stream.feed(body)
            return stream.finish(StreamOutcome.COMPLETE)
        return _converse(body)

    def stream(self) -> ConverseStream:
        return ConverseStream()


class Invoke(_Operation):
    def parse(self, body: bytes) -> ParsedCall:
        if self._stream and not _is_json(body):
            stream = self.stream()
            stream.feed(body)
            return stream.finish(StreamOutcome.COMPLETE)
        return _invoke(body)

    def stream(self) -> InvokeStream:
        return InvokeStream()


CONVERSE = Converse("bedrock.converse", "/converse", stream=False)
CONVERSE_STREAM = Converse("bedrock.converse", "/converse-stream", stream=True)
INVOKE = Invoke("bedrock.invoke", "/invoke", stream=False)
INVOKE_STREAM = Invoke("bedrock.invoke", "/invoke-with-response-stream", stream=True)

PARSERS = (CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM)

__all__ = [
    "CONVERSE",
    "CONVERSE_STREAM",
    "INVOKE",
    "INVOKE_STREAM",
    "PARSERS",
    "SUFFIXES",
    "ConverseStream",
    "InvokeStream",
    "model_from_path",
    "usage_from_headers",
]
