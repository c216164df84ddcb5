"""The call site is the first frame outside tokentrail and the HTTP library, however shallow or deep."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from tests.conftest import recorded

BODY = json.dumps({"id": "c", "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}).encode()  # fmt: skip
URL = "http://llm.test/v1/chat/completions"


@pytest.mark.parametrize("http", [httpx, httpx2], ids=lambda m: m.__name__)
def test_send_called_directly_names_its_caller(db: Path, http: Any) -> None:
    client = http.Client(transport=http.MockTransport(lambda r: http.Response(200, content=BODY)))
    client.send(client.build_request("POST", URL, json={"model": "m"}))  # the shallowest stack: no post()
    client.post(URL, json={"model": "m"})
    [direct, via_post] = recorded(db)
    assert (
        direct["call_function"]
        == via_post["call_function"]
        == ("tests.capture.test_call_site.test_send_called_directly_names_its_caller")
    )
    assert direct["call_site"].startswith("tests/capture/test_call_site.py:")


@pytest.mark.parametrize("http", [httpx, httpx2], ids=lambda m: m.__name__)
def test_async_send_names_the_coroutine_that_awaited_it(db: Path, http: Any) -> None:
    async def agent_step() -> None:
        async with http.AsyncClient(transport=http.MockTransport(lambda r: http.Response(200, content=BODY))) as c:
            await c.send(c.build_request("POST", URL, json={"model": "m"}))
            await c.post(URL, json={"model": "m"})

    asyncio.run(agent_step())
    calls = recorded(db)
    assert [c["call_function"].rsplit(".", 1)[-1] for c in calls] == ["agent_step", "agent_step"]


@pytest.mark.parametrize("http", [httpx, httpx2], ids=lambda m: m.__name__)
def test_the_call_site_names_the_line_of_the_call(db: Path, http: Any) -> None:
    client = http.Client(transport=http.MockTransport(lambda r: http.Response(200, content=BODY)))
    here = sys._getframe().f_lineno
    client.post(URL, json={"model": "m"})  # here + 1
    client.post(
        URL,
        json={"model": "m"},
    )  # a call spread over lines: the line its frame reports while the call runs, as f_lineno
    for _ in range(2):
        client.post(URL, json={"model": "m"})  # here + 7, from a loop
    lines = [int(c["call_site"].rsplit(":", 1)[1]) for c in recorded(db)]
    assert lines == [here + 1, here + 2, here + 7, here + 7]
