"""The openai SDK under test sends through httpx2 (3.x) or httpx (2.x): build matching clients."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import openai

OPENAI_MAJOR = int(openai.__version__.split(".")[0])
http = importlib.import_module("httpx2" if OPENAI_MAJOR >= 3 else "httpx")
"""The HTTP library this openai version sends through."""


def mock_client(handler: Callable[[Any], Any]) -> openai.OpenAI:
    transport = http.MockTransport(handler)
    return openai.OpenAI(
        base_url="http://mock.test/v1", api_key="sk-test", max_retries=2, http_client=http.Client(transport=transport)
    )


def mock_async_client(handler: Callable[[Any], Any]) -> openai.AsyncOpenAI:
    transport = http.MockTransport(handler)
    return openai.AsyncOpenAI(
        base_url="http://mock.test/v1", api_key="sk-test", max_retries=2, http_client=http.AsyncClient(transport=transport)
    )
