"""Scope handles used as generators' decorators, entered again while open, and shared by tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx

import tokentrail
from tests.conftest import recorded

BODY = b'{"model": "gpt-4o-mini", "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}'


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=BODY)


sync_client = httpx.Client(transport=httpx.MockTransport(_answer), base_url="https://api.openai.com/v1")
async_client = httpx.AsyncClient(transport=httpx.MockTransport(_answer), base_url="https://api.openai.com/v1")
REQUEST = {"model": "gpt-4o-mini", "messages": []}


def call() -> None:
    sync_client.post("/chat/completions", json=REQUEST)


async def acall() -> None:
    await async_client.post("/chat/completions", json=REQUEST)


def paths(db: Path) -> list[str]:
    return [c["scope_path"] for c in recorded(db)]


def test_a_decorated_generator_covers_its_steps_and_not_its_consumer(db: Path) -> None:
    @tokentrail.tool("search")
    def search(n: int) -> Iterator[int]:
        for i in range(n):
            call()
            yield i

    with tokentrail.run("R"):
        for _ in search(2):
            call()  # the consumer's own call, between two steps
        assert tokentrail.current_scope().name == "R"
    assert paths(db) == ["R/search", "R", "R/search", "R"]


def test_a_decorated_async_generator_covers_its_steps_and_not_its_consumer(db: Path) -> None:
    @tokentrail.step("stream")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await acall()
            yield i

    async def main() -> None:
        async with tokentrail.run("R"):
            async for _ in stream(2):
                await acall()
            gen = stream(3)
            await gen.__anext__()
            await gen.aclose()  # closed early: the scope closes with it

    asyncio.run(main())
    assert paths(db) == ["R/stream", "R", "R/stream", "R", "R/stream"]


def test_a_handle_entered_again_while_open_restores_each_scope_on_exit(db: Path) -> None:
    retry = tokentrail.step("retry")
    with tokentrail.run("R"):
        with retry:
            with retry:
                call()
            call()
        call()
    call()
    assert paths(db) == ["R/retry/retry", "R/retry", "R", "default"]


def test_one_handle_shared_by_two_tasks_closes_each_tasks_own_scope(db: Path) -> None:
    planner = tokentrail.agent("planner")
    first_inside = asyncio.Event()

    async def task(wait: bool) -> None:
        async with planner:
            if wait:
                first_inside.set()
                await asyncio.sleep(0.01)  # the other task enters and leaves meanwhile
            else:
                await first_inside.wait()
            await acall()
        await acall()  # after its own exit: the run

    async def main() -> None:
        async with tokentrail.run("R"):
            await asyncio.gather(task(True), task(False))

    asyncio.run(main())
    assert sorted(paths(db)) == ["R", "R", "R/planner", "R/planner"]


def test_every_scopes_summary_breaks_its_calls_down_by_model_and_agent(db: Path) -> None:
    with tokentrail.run("R"), tokentrail.agent("planner") as planner, tokentrail.step("draft") as draft:
        call()
        call()
    for handle in (planner, draft):
        summary = handle.summary()
        assert summary["calls_by_model"] == {"gpt-4o-mini": 2}
        assert list(summary["by_agent"]) == ["planner"] and summary["by_agent"]["planner"]["calls"] == 2
