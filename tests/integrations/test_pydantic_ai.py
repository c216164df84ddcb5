"""pydantic-ai against the simulator: agent runs and tool calls name the records, never add any."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest

pytest.importorskip("pydantic_ai")
pytest.importorskip("pydantic_ai.models.openai")

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import tokentrail
from tests.integrations.conftest import names
from tokentrail.sim import Simulator

Attempts = Callable[[], tuple[int, list[dict[str, Any]]]]
QUESTION = "Please lookup the weather in Paris."


def build(sim: Simulator, client: openai.AsyncOpenAI) -> Agent[None, str]:
    """``forecaster`` with one tool that calls a model itself."""
    model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
    forecaster = Agent(model, name="forecaster", instructions="Answer with the tool.")

    @forecaster.tool_plain
    async def lookup_weather(city: str) -> str:
        """Look up the weather of a city."""
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"Weather in {city}?"}]
        )
        return reply.choices[0].message.content or ""

    return forecaster


# the model asks for the tool · the tool's own call · the model answers
EXPECTED = [("forecaster", None, None), ("forecaster", None, "lookup_weather"), ("forecaster", None, None)]


def run(sim: Simulator, how: str = "run") -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client:
            agent = build(sim, client)
            if how == "run":
                result = await agent.run(QUESTION)
                assert result.output
            elif how == "iter":
                async with agent.iter(QUESTION) as agent_run:
                    async for _ in agent_run:
                        # The caller's block runs in the agent's scope too.
                        assert tokentrail.current_scope().agent == "forecaster"
                assert tokentrail.current_scope().agent is None  # and leaves it
            else:
                async with agent.run_stream(QUESTION) as stream:
                    assert await stream.get_output()

    asyncio.run(main())


def test_run_names_agent_and_tool(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    assert "pydantic_ai" in adapters
    with tokentrail.run("trial") as trial:
        run(sim)
        assert tokentrail.current_scope() is trial.scope
    served, records = attempts()
    assert served == len(records) == 3  # one record per attempt, none added by the adapter
    assert names(records) == EXPECTED
    assert [r["scope_path"] for r in records] == [
        "trial/forecaster", "trial/forecaster/lookup_weather", "trial/forecaster",
    ]  # fmt: skip


def test_iter_and_run_stream(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    run(sim, "iter")
    run(sim, "stream")
    served, records = attempts()
    assert served == len(records) == 6
    assert names(records) == EXPECTED * 2


def test_agent_delegating_from_a_tool(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client:
            forecaster = build(sim, client)
            model = OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))
            desk = Agent(model, name="desk")

            @desk.tool_plain
            async def ask_forecaster(question: str) -> str:
                """Lookup: ask the forecaster."""
                return (await forecaster.run(QUESTION)).output

            await desk.run("Use the lookup tool for Paris.")

    asyncio.run(main())
    served, records = attempts()
    assert served == len(records) == 5
    assert names(records) == [
        ("desk", None, None),
        # the inner agent's calls keep the outer tool until one of its own tools runs
        ("forecaster", None, "ask_forecaster"),
        ("forecaster", None, "lookup_weather"),
        ("forecaster", None, "ask_forecaster"),
        ("desk", None, None),
    ]
    assert records[1]["scope_path"] == "default/desk/ask_forecaster/forecaster"


def test_uninstalled_adapter_adds_no_names(db: Any, attempts: Attempts, sim: Simulator) -> None:
    from tokentrail import integrations

    integrations.install()
    integrations.uninstall()
    run(sim)
    served, records = attempts()
    assert served == len(records) == 3
    assert names(records) == [(None, None, None)] * 3
