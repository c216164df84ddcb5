"""Code that runs in worker processes (importable by name, so spawn can pickle it)."""

from __future__ import annotations

import json
import os

import httpx

import tokentrail

BODY = json.dumps(
    {"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}}
).encode()


def _client() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=BODY)))


def calls(n: int) -> int:
    """Make ``n`` chat calls; returns this worker's pid."""
    with _client() as client:
        for _ in range(n):
            client.post("http://llm.test/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    return os.getpid()


def agent_calls(name: str, n: int) -> int:
    """Make ``n`` calls inside an agent scope opened in the worker."""
    with tokentrail.agent(name):
        return calls(n)


def run_calls(name: str, n: int) -> int:
    """Make ``n`` calls inside a run opened in the worker."""
    with tokentrail.run(name):
        return calls(n)
