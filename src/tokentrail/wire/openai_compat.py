"""OpenAI-compatible servers: where their usage departs from OpenAI's, and the few that are not OpenAI-shaped.

The OpenAI parsers (`openai_chat`) read ``prompt_tokens`` / ``completion_tokens`` with OpenAI's meaning:
cached and reasoning tokens are parts of them. Several servers speak the same wire format with other
meanings. `compat_usage` reads any OpenAI-shaped usage object with those quirks applied, and `refine`
re-derives a finished `ParsedCall` from its raw usage; `reported_cost` keeps a provider's own price.

Quirks (each decided from the usage object itself where its numbers allow, else from the provider):

- DeepSeek reports the cache as ``prompt_cache_hit_tokens`` + ``prompt_cache_miss_tokens`` = ``prompt_tokens``
  (https://api-docs.deepseek.com/guides/kv_cache): the hit count is the cache read; if the two do not sum
  to ``prompt_tokens`` the record is flagged ``total_mismatch``.
- xAI counts reasoning apart from ``completion_tokens`` but inside ``total_tokens`` ("reasoning token
  consumption will be counted separately from completion_tokens, but will be counted in the total_tokens",
  https://docs.x.ai/docs/key-information/consumption-and-rate-limits; vercel/ai#12425,
  UKGovernmentBEIS/inspect_ai#5528): output = completion + reasoning.
- Perplexity: "Input tokens comprise of Prompt tokens + Citation tokens", and Deep Research bills its
  ``reasoning_tokens`` (top level of usage) apart from the completion
  (https://docs.perplexity.ai/guides/pricing#detailed-pricing-breakdown-for-sonar-deep-research);
  ``usage.cost.total_cost`` is its own price.
  Whether reasoning or citation tokens are *additional* is read from the provider's own ``total_tokens``
  when it has one (total = prompt + completion + reasoning [+ citation] says so); without a total, from
  the provider name (``xai``, ``perplexity``).
- OpenRouter: ``usage.cost`` is the price in credits (USD), ``is_byok`` requests add
  ``cost_details.upstream_inference_cost`` billed by the user's own provider key
  (https://openrouter.ai/docs/use-cases/usage-accounting); ``prompt_tokens_details.cache_write_tokens``
  is read like in `openai_chat`.
- Groq streams put the usage in ``x_groq.usage`` of the last chunk, not in ``usage`` (vercel/ai#1651);
  `stream_usage` reads either. ``queue_time`` and friends stay in the raw usage.
- Voyage embeddings report only ``usage.total_tokens`` (https://docs.voyageai.com/reference/embeddings-api):
  for an embeddings call that is the input.
- Shapes that need nothing here: Azure OpenAI, Together, Fireworks, Cerebras, Mistral (``/v1/chat/completions``,
  ``/v1/fim/completions`` and ``/v1/agents/completions`` all end in ``/completions``: the OpenAI completions
  parser reads them), Jina embeddings (``prompt_tokens`` + ``total_tokens``), vLLM continuous usage (handled
  by `openai_chat.ChatStream`), and Anthropic's OpenAI-compatible endpoint, which reports plain
  prompt/completion counts and does no prompt caching (https://docs.anthropic.com/en/api/openai-sdk).

Non-OpenAI shapes served here as parsers: IBM watsonx.ai text generation and embeddings, and Hugging Face
text-generation-inference's native ``/generate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from msgspec.structs import replace

from tokentrail.records import Flag
from tokentrail.usage import Provenance, Usage
from tokentrail.wire import openai_chat
from tokentrail.wire._base import (
    ParsedCall,
    RequestInfo,
    StreamOutcome,
    UsageMap,
    WholeBody,
    as_partial,
    is_count,
    loads,
    parsed,
    read_usage,
    request_info,
    top_level,
)
from tokentrail.wire.sse import SseDecoder

SUFFIXES: tuple[str, ...] = (
    "/ml/v1/text/generation",
    "/ml/v1/text/generation_stream",
    "/ml/v1/text/chat",
    "/ml/v1/text/chat_stream",
    "/ml/v1/text/embeddings",
    "/generate",
    "/generate_stream",
)

_USAGE_FLAGS = frozenset({Flag.INVALID_VALUE, Flag.PARTS_EXCEED_WHOLE, Flag.TOTAL_MISMATCH})
_REASONING = "completion_tokens_details.reasoning_tokens"


def _count(raw: Mapping[str, Any], path: str) -> int | None:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if is_count(node) else None


def _additive(raw: Mapping[str, Any], reasoning_path: str, provider: str | None) -> tuple[bool, bool]:
    """Whether reasoning and citation tokens come on top of completion and prompt tokens."""
    prompt, completion, total = (
        _count(raw, "prompt_tokens"),
        _count(raw, "completion_tokens"),
        _count(raw, "total_tokens"),
    )
    reasoning, citation = _count(raw, reasoning_path) or 0, _count(raw, "citation_tokens") or 0
    if prompt is not None and completion is not None and total is not None:
        base = prompt + completion
        if total == base:
            return False, False
        if reasoning and citation and total == base + reasoning + citation:
            return True, True
        if reasoning and total == base + reasoning:
            return True, False
        if citation and total == base + citation:
            return False, True
        return False, False  # read as OpenAI's, and read_usage flags the total
    return bool(reasoning) and provider in ("xai", "perplexity"), bool(citation) and provider == "perplexity"


def compat_spec(raw_usage: Any, provider: str | None = None) -> UsageMap:
    """The `UsageMap` that reads this OpenAI-shaped usage object with its server's quirks."""
    if not isinstance(raw_usage, Mapping):
        return openai_chat.USAGE
    reasoning = (
        "reasoning_tokens" if "reasoning_tokens" in raw_usage and _count(raw_usage, _REASONING) is None else _REASONING
    )
    add_reasoning, add_citation = _additive(raw_usage, reasoning, provider)
    return UsageMap(
        input=("prompt_tokens", "citation_tokens") if add_citation else ("prompt_tokens",),
        output=("completion_tokens", reasoning) if add_reasoning else ("completion_tokens",),
        cache_read=("prompt_cache_hit_tokens",)
        if "prompt_cache_hit_tokens" in raw_usage
        else ("prompt_tokens_details.cached_tokens",),
        cache_write=("prompt_tokens_details.cache_write_tokens",),
        reasoning=(reasoning,),
        total="total_tokens",
    )


def compat_usage(raw_usage: Any, provider: str | None = None) -> tuple[Usage, Provenance, set[str]]:
    """`read_usage` for OpenAI-shaped usage from any server: a drop-in for ``read_usage(raw, openai_chat.USAGE)``.

    ``provider`` is `provider_for`'s name (``xai``, ``perplexity``…); it only decides what the numbers
    themselves cannot.
    """
    usage, provenance, flags = read_usage(raw_usage, compat_spec(raw_usage, provider))
    if isinstance(raw_usage, Mapping) and "prompt_cache_hit_tokens" in raw_usage:
        hit, miss, prompt = (
            _count(raw_usage, k) for k in ("prompt_cache_hit_tokens", "prompt_cache_miss_tokens", "prompt_tokens")
        )
        if hit is not None and miss is not None and prompt is not None and hit + miss != prompt:
            flags.add(Flag.TOTAL_MISMATCH)
    return usage, provenance, flags


def refine(result: ParsedCall, provider: str | None = None, api: str | None = None) -> ParsedCall:
    """``result`` from an OpenAI parser, re-read from its raw usage with the server's quirks.

    Call it after the OpenAI parser's `parse` or `finish`, with `provider_for`'s name and the parser's
    ``api``. Returns ``result`` itself when OpenAI's reading is already right: plain OpenAI usage,
    Responses API usage, embeddings that report ``prompt_tokens``. Stream flags and partial provenance
    are kept; the usage flags are re-derived.
    """
    raw = result.raw_usage
    if not isinstance(raw, Mapping):
        return result
    if api is not None and api.endswith("embeddings"):
        if "prompt_tokens" in raw or "total_tokens" not in raw:
            return result
        # Voyage: total_tokens alone, all of it input; an embedding generates nothing.
        counts = {"prompt_tokens": raw["total_tokens"], "completion_tokens": 0}
        usage, provenance, flags = read_usage(counts, _EMBEDDING_TOTAL)
    elif ("prompt_tokens" in raw or "completion_tokens" in raw) and compat_spec(raw, provider) != openai_chat.USAGE:
        usage, provenance, flags = compat_usage(raw, provider)
    else:  # OpenAI's own meaning: the parser's reading stands
        return result
    if not result.complete:
        provenance = as_partial(provenance)
    return replace(result, usage=usage, provenance=provenance, flags=frozenset((result.flags - _USAGE_FLAGS) | flags))


_EMBEDDING_TOTAL = UsageMap(input=("prompt_tokens",), output=("completion_tokens",))


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        # str() of a float is its shortest round-tripping form: 0.00042, not 0.000419999…
        amount = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def reported_cost(raw_usage: Any) -> Decimal | None:
    """The price the provider itself put on the call, in USD, or ``None``.

    OpenRouter: ``usage.cost`` (credits are USD), plus ``cost_details.upstream_inference_cost`` when
    ``is_byok`` (the user's own key was billed upstream). Perplexity: ``usage.cost.total_cost``.
    """
    if not isinstance(raw_usage, Mapping):
        return None
    cost = raw_usage.get("cost")
    if isinstance(cost, Mapping):
        cost = cost.get("total_cost")
    amount = _money(cost)
    if amount is None:
        return None
    details = raw_usage.get("cost_details")
    if raw_usage.get("is_byok") is True and isinstance(details, Mapping):
        upstream = _money(details.get("upstream_inference_cost"))
        if upstream is not None:
            amount += upstream
    return amount


def stream_usage(chunk: Mapping[str, Any]) -> Any:
    """The usage a chat.completion.chunk carries: ``usage``, else Groq's ``x_groq.usage``, else ``None``."""
    usage = chunk.get("usage")
    if isinstance(usage, Mapping):
        return usage
    groq = chunk.get("x_groq")
    if isinstance(groq, Mapping) and isinstance(groq.get("usage"), Mapping):
        return groq["usage"]
    return usage


# -- IBM watsonx.ai ---------------------------------------------------------------------------------------
# https://cloud.ibm.com/apidocs/watsonx-ai#text-generation: results[].input_token_count and
# results[].generated_token_count (TextGenResult, https://ibm.github.io/watsonx-ai-node-sdk/).

_WATSONX = UsageMap(input=("input_token_count",), output=("generated_token_count",))


def _results(results: Any) -> tuple[dict[str, Any], Any]:
    """Counts summed over ``results`` (one per prompt), and the per-result counts kept as raw usage."""
    if not isinstance(results, list):
        return {}, None
    kept = [
        {k: r[k] for k in ("input_token_count", "generated_token_count") if k in r}
        for r in results
        if isinstance(r, Mapping)
    ]
    counts: dict[str, Any] = {}
    for key in ("input_token_count", "generated_token_count"):
        values = [r[key] for r in kept if key in r]
        if not values:
            continue
        bad = [v for v in values if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0)]
        counts[key] = bad[0] if bad else sum(values)
    return counts, {"results": kept}


def _model_id(body: bytes) -> RequestInfo:
    fields = top_level(body, "model_id", "stream") if body else {}
    model = fields.get("model_id")
    return RequestInfo(model=model if isinstance(model, str) else None, stream=fields.get("stream") is True)


class WatsonxGenerationStream:
    """``/ml/v1/text/generation_stream``: SSE events each carrying ``results``; the counts run
    (the last value wins) and ``stop_reason`` is ``not_finished`` until the last event."""

    __slots__ = ("_counts", "_done", "_model", "_sse")

    def __init__(self) -> None:
        self._sse = SseDecoder()
        self._model: Any = None
        self._counts: dict[str, Any] = {}
        self._done = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            if b"token_count" not in event.data and b"stop_reason" not in event.data and self._model is not None:
                continue
            obj = loads(event.data)
            if not isinstance(obj, dict):
                continue
            self._model = self._model or obj.get("model_id")
            results = obj.get("results")
            counts, _ = _results(results)
            self._counts.update(counts)
            if isinstance(results, list) and any(
                isinstance(r, Mapping) and r.get("stop_reason") not in (None, "not_finished") for r in results
            ):
                self._done = True

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        raw = dict(self._counts) or None
        return parsed(raw, _WATSONX, model=self._model, complete=self._done)


class WatsonxGeneration:
    __slots__ = ("_stream", "_suffix", "api")

    def __init__(self, suffix: str, stream: bool) -> None:
        self.api = "watsonx.generation"
        self._suffix = suffix
        self._stream = stream

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(self._suffix)

    def parse_request(self, body: bytes) -> RequestInfo:
        return replace(_model_id(body), stream=self._stream)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "results", "model_id")
        if not fields and self._stream:
            stream = self.stream()
            stream.feed(body)
            return stream.finish(StreamOutcome.COMPLETE)
        counts, raw = _results(fields.get("results"))
        result = parsed(counts or None, _WATSONX, model=fields.get("model_id"))
        return replace(result, raw_usage=raw) if raw is not None else result

    def stream(self) -> WatsonxGenerationStream:
        return WatsonxGenerationStream()


class WatsonxChat:
    """``/ml/v1/text/chat`` (and ``chat_stream``): OpenAI chat completions with ``model_id`` beside ``model``."""

    __slots__ = ("_stream", "_suffix", "api")

    def __init__(self, suffix: str, stream: bool) -> None:
        self.api = "watsonx.chat"
        self._suffix = suffix
        self._stream = stream

    def matches(self, method: str, path: str) -> bool:
        return path.endswith(self._suffix)

    def parse_request(self, body: bytes) -> RequestInfo:
        info = _model_id(body)
        return replace(info, stream=self._stream or info.stream)

    def parse(self, body: bytes) -> ParsedCall:
        result = openai_chat.CHAT.parse(body)
        if result.model is None:
            model = top_level(body, "model_id").get("model_id")
            result = replace(result, model=model if isinstance(model, str) else None)
        return result

    def stream(self) -> openai_chat.ChatStream:
        return openai_chat.ChatStream()


class WatsonxEmbeddings:
    """``/ml/v1/text/embeddings``: a top-level ``input_token_count``; an embedding generates nothing."""

    api = "watsonx.embeddings"

    def matches(self, method: str, path: str) -> bool:
        return path.endswith("/ml/v1/text/embeddings")

    def parse_request(self, body: bytes) -> RequestInfo:
        return _model_id(body)

    def parse(self, body: bytes) -> ParsedCall:
        fields = top_level(body, "input_token_count", "model_id")
        if "input_token_count" not in fields:
            return ParsedCall(model=fields.get("model_id") if isinstance(fields.get("model_id"), str) else None)
        raw = {"input_token_count": fields["input_token_count"]}
        result = parsed({**raw, "generated_token_count": 0}, _WATSONX, model=fields.get("model_id"))
        return replace(result, raw_usage=raw)

    def stream(self) -> WholeBody:
        return WholeBody(self)


# -- Hugging Face text-generation-inference -------------------------------------------------------------
# /generate answers {"generated_text", "details": {"finish_reason", "generated_tokens", "prefill", …}}
# when the request sets "details": true; /generate_stream sends SSE tokens, and "details" only with the
# last event (https://huggingface.github.io/text-generation-inference/ ; huggingface.js
# TextGenerationOutputDetails). The prompt is counted only as "prefill", which is empty unless the
# request sets "decoder_input_details": the input is then unknown.

_TGI = UsageMap(input=("prefill_tokens",), output=("generated_tokens",))


def _tgi_counts(details: Any) -> dict[str, Any] | None:
    if not isinstance(details, Mapping):
        return None
    counts: dict[str, Any] = {}
    if "generated_tokens" in details:
        counts["generated_tokens"] = details["generated_tokens"]
        extra = details.get("best_of_sequences")
        if isinstance(extra, list) and isinstance(counts["generated_tokens"], int):
            # best_of generates every candidate; each is output the server computed.
            more = [s.get("generated_tokens") for s in extra if isinstance(s, Mapping)]
            if all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in more):
                counts["generated_tokens"] += sum(m for m in more if isinstance(m, int))
    prefill = details.get("prefill")
    if isinstance(prefill, list) and prefill:
        counts["prefill_tokens"] = len(prefill)
    return counts


class TgiStream:
    __slots__ = ("_counts", "_done", "_error", "_sse")

    def __init__(self) -> None:
        self._sse = SseDecoder()
        self._counts: dict[str, Any] | None = None
        self._done = False
        self._error = False

    def feed(self, chunk: bytes) -> None:
        for event in self._sse.feed(chunk):
            data = event.data
            if not openai_chat.has_object(data, b'"details"') and b'"error"' not in data:
                continue
            obj = loads(data)
            if not isinstance(obj, dict):
                continue
            if "error" in obj:
                self._error = True
            elif isinstance(obj.get("details"), Mapping):
                self._done = True
                self._counts = _tgi_counts(obj["details"])

    def finish(self, outcome: StreamOutcome) -> ParsedCall:
        return parsed(self._counts, _TGI, complete=self._done and not self._error)


class TgiGenerate:
    __slots__ = ("_stream", "_suffix", "api")

    def __init__(self, suffix: str, stream: bool) -> None:
        self.api = "tgi.generate"
        self._suffix = suffix
        self._stream = stream

    def matches(self, method: str, path: str) -> bool:
        # Ollama's /api/generate ends the same way.
        return path.endswith(self._suffix) and not path.endswith("/api/generate")

    def parse_request(self, body: bytes) -> RequestInfo:
        info = request_info(body)
        return replace(info, stream=self._stream or info.stream)

    def parse(self, body: bytes) -> ParsedCall:
        obj = loads(body)
        if isinstance(obj, list) and obj and isinstance(obj[0], dict):  # the Inference API wraps it in a list
            obj = obj[0]
        if not isinstance(obj, dict):
            if self._stream:
                stream = self.stream()
                stream.feed(body)
                return stream.finish(StreamOutcome.COMPLETE)
            return ParsedCall()
        return parsed(_tgi_counts(obj.get("details")), _TGI)

    def stream(self) -> TgiStream:
        return TgiStream()


WATSONX_GENERATION = WatsonxGeneration("/ml/v1/text/generation", stream=False)
WATSONX_GENERATION_STREAM = WatsonxGeneration("/ml/v1/text/generation_stream", stream=True)
WATSONX_CHAT = WatsonxChat("/ml/v1/text/chat", stream=False)
WATSONX_CHAT_STREAM = WatsonxChat("/ml/v1/text/chat_stream", stream=True)
WATSONX_EMBEDDINGS = WatsonxEmbeddings()
TGI_GENERATE = TgiGenerate("/generate", stream=False)
TGI_GENERATE_STREAM = TgiGenerate("/generate_stream", stream=True)

PARSERS = (
    WATSONX_GENERATION,
    WATSONX_GENERATION_STREAM,
    WATSONX_CHAT,
    WATSONX_CHAT_STREAM,
    WATSONX_EMBEDDINGS,
    TGI_GENERATE,
    TGI_GENERATE_STREAM,
)
"""Put before the OpenAI parsers: ``/ml/v1/text/embeddings`` also ends in ``/embeddings``."""

__all__ = [
    "PARSERS",
    "SUFFIXES",
    "TGI_GENERATE",
    "TGI_GENERATE_STREAM",
    "WATSONX_CHAT",
    "WATSONX_CHAT_STREAM",
    "WATSONX_EMBEDDINGS",
    "WATSONX_GENERATION",
    "WATSONX_GENERATION_STREAM",
    "compat_spec",
    "compat_usage",
    "refine",
    "reported_cost",
    "stream_usage",
]
