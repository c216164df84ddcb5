"""Nothing is dropped: tight loops of 10,000 calls end with 10,000 records (OTel-based peers lose up
to 30% of them in the same loop, BENCHMARKING.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import tokentrail
from tests.capture._clients import http, mock_async_client, mock_client
from tests.conftest import recorded

N = 10_000
BODY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
).encode()


def handler(request: Any) -> Any:
    return http.Response(200, content=BODY, headers={"content-type": "application/json"})


@pytest.mark.slow
def test_ten_thousand_sync_calls(db: Path) -> None:
    client = mock_client(handler)
    with tokentrail.run("volume-sync") as run:
        for _ in range(N):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    calls = recorded(db, run="volume-sync")
    assert len(calls) == N == run.usage.calls
    assert sum(c["total_tokens"] for c in calls) == 10 * N == run.usage.total_tokens


@pytest.mark.slow
def test_ten_thousand_async_calls(db: Path) -> None:
    async def main() -> int:
        client = mock_async_client(handler)
        async with client, tokentrail.run("volume-async") as run:
            for start in range(0, N, 500):
                await asyncio.gather(
                    *(
                        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
                        for _ in range(min(500, N - start))
                    )
                )
            return run.usage.calls

    assert asyncio.run(main()) == N
    calls = recorded(db, run="volume-async")
    assert len(calls) == N
    assert {c["status"] for c in calls} == {"ok"}
