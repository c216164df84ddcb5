"""Instrumentation never breaks the user's call: make every part of tokentrail raise and compare.

These tests switch off strict mode (which re-raises tokentrail's own errors in our test suite) to see
what a user would see.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tokentrail
from tests.capture._clients import http, mock_client
from tests.conftest import recorded
from tokentrail import _guard
from tokentrail.capture import _exchange
from tokentrail.sinks import pipeline
from tokentrail.sinks.sqlite import SqliteSink
from tokentrail.wire import openai_chat

BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}
CHUNKS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n',
    b"data: [DONE]\n\n",
]


def handler(request: Any) -> Any:
    if json.loads(request.content).get("stream"):
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=iter(CHUNKS))
    return http.Response(200, json=BODY)


def boom(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("injected tokentrail bug")


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    _guard.reset_error_counts()
    with pytest.warns(tokentrail.errors.InstrumentationWarning):
        yield


def call(stream: bool) -> tuple[Any, list[bytes]]:
    """Make one call through the real SDK; return the parsed reply and the raw bytes the SDK saw."""
    client = mock_client(handler)
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    if not stream:
        reply = client.chat.completions.with_raw_response.create(**kwargs)
        return reply.parse(), [reply.http_response.content]
    with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as reply:
        raw = list(reply.http_response.iter_raw())
    return None, raw


@pytest.mark.parametrize(
    "target, stream",
    [
        ((_exchange, "open_exchange"), False),
        ((_exchange, "open_exchange"), True),
        ((openai_chat.ChatCompletions, "parse"), False),
        ((openai_chat.ChatCompletions, "parse_stream"), True),  # a stream held whole is parsed in one go
        ((openai_chat.ChatStream, "feed"), "declined"),  # … else (declined, or past 1 MiB) event by event
        ((openai_chat.ChatStream, "finish"), "declined"),
        ((pipeline, "build"), False),
        ((pipeline, "build"), True),
        ((pipeline, "add_calls"), False),
    ],
    ids=lambda v: v[1] if isinstance(v, tuple) else (f"{v}-stream" if isinstance(v, str) else "stream" if v else "body"),
)
def test_a_failing_part_leaves_the_call_identical(
    db: Path, lenient: None, monkeypatch: pytest.MonkeyPatch, target: tuple[Any, str], stream: bool | str
) -> None:
    if stream == "declined":
        monkeypatch.setattr(openai_chat.ChatCompletions, "parse_stream", lambda self, data, outcome: None)
    stream = bool(stream)
    expected_reply, expected_raw = _uninstrumented(stream)
    monkeypatch.setattr(*target, boom)
    with tokentrail.run("faulty"):  # streams abandoned by earlier tests may land in this ledger too
        reply, raw = call(stream)
    assert raw == expected_raw
    if not stream:
        assert reply.model_dump() == expected_reply.model_dump()
    tokentrail.flush()
    assert sum(_guard.error_counts().values()) >= 1, "the error was not counted"
    records = recorded(_current_db, run="faulty")
    if target[0] is _exchange:  # capture itself failed: the call went out unobserved
        assert records == []
    elif target[1] == "add_calls":  # the record was complete; only the live totals failed
        assert [(r["input_tokens"], r["flags"]) for r in records] == [(9, [])]
    else:  # parsing failed: the call is stored with what is certain, its usage unknown
        assert [(r["status"], r["input_tokens"], r["flags"]) for r in records] == [("ok", None, ["unparsed"])]


def _uninstrumented(stream: bool) -> tuple[Any, list[bytes]]:
    tokentrail.uninstrument()
    try:
        return call(stream)
    finally:
        tokentrail.instrument(_current_db)


_current_db: Path


@pytest.fixture(autouse=True)
def _remember_db(db: Path) -> None:
    global _current_db
    _current_db = db


def test_the_users_exception_passes_untouched(db: Path) -> None:
    error = RuntimeError("the application's own transport failure")

    def failing(request: Any) -> Any:
        raise error

    client = mock_client(failing)
    with pytest.raises(Exception) as caught:
        client.with_options(max_retries=0).chat.completions.create(model="m", messages=[])
    assert caught.value.__cause__ is error or caught.value is error
    [record] = recorded(db)
    assert record["status"] == "network_error"


def test_a_failing_sink_keeps_records_and_retries(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_STRICT", "0")
    monkeypatch.setattr(SqliteSink, "write", boom)
    with pytest.warns(tokentrail.errors.InstrumentationWarning):
        for _ in range(3):
            call(stream=False)
        tokentrail.flush()
    monkeypatch.undo()
    monkeypatch.setenv("TOKENTRAIL_STRICT", "1")
    assert len(recorded(db)) == 3


def test_records_dropped_past_the_queue_limit_are_counted(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokentrail import report
    from tokentrail.sinks.sqlite import connect

    tokentrail.flush()
    monkeypatch.setattr(pipeline, "max_queue", 0)
    monkeypatch.setattr(pipeline, "_dropped", 0)
    monkeypatch.setattr(pipeline, "_dropped_unwritten", 0)
    with pytest.warns(tokentrail.errors.RecordsDroppedWarning):
        call(stream=False)
        call(stream=False)
    monkeypatch.setattr(pipeline, "max_queue", 1_000_000)
    tokentrail.flush()
    assert report.dropped(connect(db, readonly=True)) >= 2
