"""Who served a call, named from the host — a label only: the API family is detected from the request."""

from __future__ import annotations

import functools

# Host suffix → provider. Checked longest first, so "openai.azure.com" wins over "azure.com".
_HOSTS = {
    "api.openai.com": "openai",
    "openai.azure.com": "azure",
    "services.ai.azure.com": "azure",
    "openrouter.ai": "openrouter",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "aiplatform.googleapis.com": "vertex",
    "api.mistral.ai": "mistral",
    "api.cohere.com": "cohere",
    "api.cohere.ai": "cohere",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.together.xyz": "together",
    "api.fireworks.ai": "fireworks",
    "api.cerebras.ai": "cerebras",
    "api.x.ai": "xai",
    "api.perplexity.ai": "perplexity",
}
_ORDERED = sorted(_HOSTS.items(), key=lambda kv: -len(kv[0]))
_LOCAL = ("localhost", "127.", "::1", "[::1]", "0.0.0.0")


@functools.lru_cache(maxsize=256)
def known_provider(host: str) -> str | None:
    """The provider a host belongs to, when it is a known LLM API host (never loopback)."""
    host = host.lower()
    for suffix, name in _ORDERED:
        if host == suffix or host.endswith("." + suffix):
            return name
    # bedrock-runtime.<region>.amazonaws.com (and -fips); other AWS traffic (S3, STS…) is not an LLM call.
    if host.startswith("bedrock-runtime") and host.endswith(".amazonaws.com"):
        return "bedrock"
    return None


@functools.lru_cache(maxsize=256)
def provider_for(host: str, api: str) -> str:
    """``openai``, ``openrouter``, … for known hosts; ``local`` on loopback; else ``<family>-compatible``."""
    known = known_provider(host)
    if known is not None:
        return known
    if host.lower().startswith(_LOCAL):
        return "local"
    return f"{api.split('.', 1)[0]}-compatible"
