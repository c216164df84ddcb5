"""Answers read through a streaming response that are not streams: recorded as the same answer
read whole would be, not as a stream cut short."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import recorded

BODY = b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}'
REQUEST = {"model": "gpt-4o-mini", "messages": [], "stream": True}


def _stream(status: int, content: bytes, content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content))

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        with client.stream("POST", "https://api.openai.com/v1/chat/completions", json=REQUEST) as response:
            for _ in response.iter_bytes():
                pass


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_a_json_answer_labelled_otherwise_is_read_whole(db: Path, content_type: str | None) -> None:
    # It went to the SSE parser, found no event, and was recorded network_error, its usage lost.
    _stream(200, BODY, content_type)
    (call,) = recorded(db)
    assert (call["status"], call["input_tokens"], call["output_tokens"], call["usage_source"]) == (
        "ok", 5, 1, "reported"
    )  # fmt: skip
    assert not call["flags"]


@pytest.mark.parametrize("status", [204, 304])
def test_an_answer_without_a_body_is_not_a_cut_stream(db: Path, status: int) -> None:
    _stream(status, b"", None)
    (call,) = recorded(db)
    assert (call["status"], call["http_status"], call["output_tokens"]) == ("ok", status, None)
    assert call["flags"] == ["unparsed"]  # as the same answer read whole


def test_an_event_stream_without_its_events_is_still_cut(db: Path) -> None:
    _stream(200, b"", "text/event-stream")
    (call,) = recorded(db)
    assert call["status"] == "network_error" and "stream_incomplete" in call["flags"]
