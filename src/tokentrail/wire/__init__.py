"""What the bytes mean: one parser per API family, and the detection that picks one.

Detection goes by method and path, on any host and port: vLLM, Ollama, LM Studio, OpenRouter and local
servers speak the OpenAI or Anthropic wire formats wherever they run. A POST to a known LLM provider's
host on a path no parser owns is still recorded, by the generic parser, with its usage ``missing``.
Everything else passes after one cheap check.

Parsers may offer three optional methods, used by the pipeline when present:
``request_from_path(path) -> RequestInfo`` (Gemini, Bedrock: the model is in the path),
``usage_from_headers(headers) -> ParsedCall | None`` (Bedrock's token-count headers) and
``refine(result, provider) -> ParsedCall`` (OpenAI-compatible servers' usage quirks).
"""

from __future__ import annotations

from tokentrail.wire import (
    anthropic_messages,
    bedrock,
    cohere,
    gemini,
    ollama,
    openai_chat,
    openai_compat,
    openai_responses,
)
from tokentrail.wire._base import ParsedCall, RequestInfo, StreamOutcome, StreamParser, WireParser
from tokentrail.wire.generic import GENERIC
from tokentrail.wire.provider import known_provider, provider_for

PARSERS: tuple[WireParser, ...] = (
    # watsonx and TGI first: /ml/v1/text/embeddings also ends with /embeddings.
    *openai_compat.PARSERS,
    openai_chat.CHAT,
    openai_responses.RESPONSES,
    openai_chat.EMBEDDINGS,
    openai_chat.COMPLETIONS,
    anthropic_messages.MESSAGES,
    gemini.GENERATE,
    gemini.EMBED,
    *bedrock.PARSERS,
    *cohere.PARSERS,
    *ollama.PARSERS,
)
"""Tried in order; the first whose `matches` is true owns the request."""

# Every path a parser owns ends with one of these: anything else leaves after one `endswith`.
_SUFFIXES = tuple(
    sorted(
        {
            *openai_chat.SUFFIXES,
            *openai_responses.SUFFIXES,
            *openai_compat.SUFFIXES,
            *anthropic_messages.SUFFIXES,
            *gemini.SUFFIXES,
            *bedrock.SUFFIXES,
            *cohere.SUFFIXES,
            *ollama.SUFFIXES,
        }
    )
)


_detected: dict[tuple[str, str], WireParser | None] = {}
_DETECTED_MAX = 4096


def detect(method: str, host: str, path: str) -> WireParser | None:
    """The parser for this request, or ``None`` for non-LLM traffic. Remembered per host and path
    (a program talks to few endpoints; the memo is bounded for one that does not)."""
    if method != "POST":
        return None
    key = (host, path)
    try:
        return _detected[key]
    except KeyError:
        pass
    found = _detect(host, path)
    if len(_detected) >= _DETECTED_MAX:
        _detected.clear()
    _detected[key] = found
    return found


_FREE_COUNTS = ("/count_tokens", ":countTokens", "/input_tokens", "/count-tokens")
"""Paths of the providers' token-counting endpoints (Anthropic, Gemini, OpenAI Responses, Bedrock):
free, and they generate nothing, so they are not LLM calls to record."""


def _detect(host: str, path: str) -> WireParser | None:
    if path.endswith(_FREE_COUNTS):
        return None
    if path.endswith(_SUFFIXES):
        for parser in PARSERS:
            if parser.matches("POST", path):
                return parser
    if known_provider(host) is not None:
        return GENERIC
    return None


__all__ = [
    "PARSERS",
    "ParsedCall",
    "RequestInfo",
    "StreamOutcome",
    "StreamParser",
    "WireParser",
    "detect",
    "provider_for",
]
