"""asyncio boundaries keep the scope of the code that sent the request (issue: nothing escapes)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

import tokentrail
from tests.conftest import recorded
from tokentrail.sim import Simulator

MESSAGES = [{"role": "user", "content": "Name a river."}]


def test_taskgroup_to_thread_and_executor(db: Path, sim: Simulator) -> None:
    sync_client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test")
    pool = ThreadPoolExecutor(max_workers=2)  # created before any scope

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client:
            async with tokentrail.run("async-boundaries"):
                async with tokentrail.agent("grouped"), asyncio.TaskGroup() as group:
                    for _ in range(3):
                        group.create_task(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
                async with tokentrail.agent("threaded"):
                    await asyncio.to_thread(sync_client.chat.completions.create, model="gpt-4o-mini", messages=MESSAGES)
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(
                        pool, lambda: sync_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                    )

    asyncio.run(main())
    pool.shutdown()
    sync_client.close()
    paths = sorted(c["scope_path"] for c in recorded(db, run="async-boundaries"))
    assert paths == ["async-boundaries/grouped"] * 3 + ["async-boundaries/threaded"] * 2


def test_stream_consumed_in_another_task_after_its_scope_closed(db: Path, sim: Simulator) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client:
            async with tokentrail.run("late-stream"):
                async with tokentrail.agent("sender"):
                    stream = await client.chat.completions.create(
                        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
                    )
                # The agent scope is closed; another task drains the stream under another scope.
                async def drain() -> None:
                    async with tokentrail.agent("drainer"):
                        async for _ in stream:
                            pass

                await asyncio.create_task(drain())

    asyncio.run(main())
    [call] = recorded(db, run="late-stream")
    assert call["scope_path"] == "late-stream/sender" and call["usage_source"] == "reported"
    assert call["input_tokens"] == sim.served[-1].input_tokens
