"""A payload the ledger cannot store as sent is stored made storable and flagged, never lost, and
never holds back the records after it (before, one such record stopped every later write)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import recorded

GOOD = b'{"id": "ok", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}'


def _client(bad: bytes) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bad if request.headers.get("x-bad") else GOOD)

    return httpx.Client(transport=httpx.MockTransport(answer), base_url="https://api.openai.com/v1")


def _calls(client: httpx.Client, **headers: str | bytes) -> None:
    client.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": []}, headers=headers)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        pytest.param(  # JSON's \ud800 escape decodes to a lone surrogate, which UTF-8 cannot encode
            rb'{"id": "b", "model": "\ud800x", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}',
            {"model": "\\ud800x", "input_tokens": 5, "usage_source": "reported"},
            id="surrogate-in-model",
        ),
        pytest.param(
            rb'{"id": "\udfff", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 2}}',
            {"model": "gpt-4o-mini", "input_tokens": 5},
            id="surrogate-in-id",
        ),
        pytest.param(  # fits 64 bits, but its cost in pico-dollars does not: a server's bug, not a count
            b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10000000000000, "completion_tokens": 2}}',
            {"input_tokens": None, "input_source": "missing", "output_tokens": 2, "cost_usd": None},
            id="count-too-large",
        ),
        pytest.param(
            b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 18446744073709551616}}',
            {"input_tokens": 5, "output_tokens": None, "output_source": "missing"},
            id="count-past-64-bits",
        ),
    ],
)
def test_a_bad_payload_is_stored_flagged_and_the_ledger_keeps_recording(
    db: Path, bad: bytes, expected: dict[str, Any]
) -> None:
    client = _client(bad)
    _calls(client)
    recorded(db)  # flushed: the bad record comes in a batch of its own, then more after it
    _calls(client, **{"x-bad": "1"})
    recorded(db)
    for _ in range(5):
        _calls(client)
    calls = recorded(db)
    assert len(calls) == 7
    flagged = [c for c in calls if c["flags"]]
    assert len(flagged) == 1 and "invalid_value" in flagged[0]["flags"]
    assert {k: flagged[0][k] for k in expected} == expected
    good = [c for c in calls if not c["flags"]]
    assert {(c["input_tokens"], c["output_tokens"], c["usage_source"]) for c in good} == {(5, 2, "reported")}


def test_an_invalid_count_stays_null_rather_than_counted(db: Path) -> None:
    # The provider reported the input, as something that is not a count: it is kept raw and left
    # unknown; counting the request instead would overwrite what the provider said.
    client = _client(b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": "many", "completion_tokens": 2}}')
    client.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"x-bad": "1"})  # fmt: skip
    (call,) = recorded(db)
    assert (call["input_tokens"], call["input_source"], call["tokenizer"]) == (None, "missing", None)
    assert (call["output_tokens"], call["output_source"]) == (2, "reported")
    assert "invalid_value" in call["flags"]


def test_a_retry_header_that_is_not_a_small_number_is_ignored(db: Path) -> None:
    client = _client(GOOD)
    _calls(client, **{"x-stainless-retry-count": "9" * 30})
    _calls(client, **{"x-stainless-retry-count": "²".encode("latin-1")})  # isdigit() says yes; int() no
    _calls(client, **{"x-stainless-retry-count": "2"})
    assert [c["attempt"] for c in recorded(db)] == [1, 1, 3]


def test_the_ledger_stores_what_it_was_given_for_a_good_payload(db: Path) -> None:
    _calls(_client(GOOD))
    (call,) = recorded(db)
    assert not call["flags"]
    row = sqlite3.connect(db).execute("SELECT model, response_id FROM calls").fetchone()
    assert row == ("gpt-4o-mini", "ok")
