"""Stands for a third-party library that calls an LLM behind your back, with plain httpx and no SDK.

tokentrail records it like any other call, and its call site names this module.
"""

from __future__ import annotations

import httpx


def classify(base_url: str, text: str) -> str:
    """Label ``text`` with a raw chat-completions request."""
    response = httpx.post(
        f"{base_url}/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Label the topic in one word."},
                {"role": "user", "content": text},
            ],
            "max_tokens": 8,
        },
        headers={"authorization": "Bearer sk-demo"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]
