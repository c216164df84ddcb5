"""What the bytes mean: one parser per API family, and the detection that picks one.

Detection goes by method and path (any host, any port): vLLM, Ollama, LM Studio, OpenRouter and local
servers speak the OpenAI wire format wherever they run. Requests that match no parser pass through
after one cheap check.
"""

from __future__ import annotations

from tokentrail.wire._base import ParsedCall, RequestInfo, StreamOutcome, StreamParser, WireParser
from tokentrail.wire.openai_chat import CHAT, COMPLETIONS, EMBEDDINGS
from tokentrail.wire.openai_responses import RESPONSES
from tokentrail.wire.provider import provider_for

PARSERS: tuple[WireParser, ...] = (CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS)
"""Tried in order; the first whose `matches` is true owns the request."""

# Every path a parser owns ends with one of these; anything else leaves after one `endswith`.
_SUFFIXES = ("completions", "responses", "embeddings")


def detect(method: str, path: str) -> WireParser | None:
    """The parser for this request, or ``None`` for non-LLM traffic."""
    if method != "POST" or not path.endswith(_SUFFIXES):
        return None
    for parser in PARSERS:
        if parser.matches(method, path):
            return parser
    return None


__all__ = ["PARSERS", "ParsedCall", "RequestInfo", "StreamOutcome", "StreamParser", "WireParser", "detect", "provider_for"]
