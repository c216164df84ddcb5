"""The OpenAI Agents SDK against the simulator: agents, function tools and handoffs name the records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

agents = pytest.importorskip("agents")

from agents import Agent, OpenAIResponsesModel, Runner, function_tool, handoff, trace  # noqa: E402
from agents.extensions.handoff_filters import remove_all_tools  # noqa: E402

import tokentrail  # noqa: E402
from tests.integrations.conftest import names  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

Attempts = Callable[[], tuple[int, list[dict[str, Any]]]]
QUESTION = "Please lookup the weather in Paris."


@pytest.fixture(autouse=True, scope="module")
def no_trace_export() -> Iterator[None]:
    """The SDK's default processor exports traces to OpenAI: none of that here (ours is added by install)."""
    agents.set_trace_processors([])
    yield


def build(sim: Simulator, client: openai.AsyncOpenAI) -> Agent[Any]:
    """``triage`` hands off to ``forecaster``, whose function tool calls a model itself."""
    url = sim.url + "/v1"
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)

    @function_tool
    async def lookup_weather(city: str) -> str:
        """Look up the weather of a city."""
        async with openai.AsyncOpenAI(base_url=url, api_key="sk-test") as inner:
            reply = await inner.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"Weather in {city}?"}]
            )
        return reply.choices[0].message.content or ""

    forecaster = Agent(name="forecaster", instructions="Answer with the tool.", model=model, tools=[lookup_weather])
    # The filter leaves the user's question last, so the simulator makes the forecaster call its tool too.
    return Agent(
        name="triage",
        instructions="Hand off weather questions.",
        model=model,
        handoffs=[handoff(forecaster, input_filter=remove_all_tools)],
    )


# triage: hands off · forecaster: calls its tool · the tool's own call · forecaster: answers
EXPECTED = [
    ("triage", None, None),
    ("forecaster", None, None),
    ("forecaster", None, "lookup_weather"),
    ("forecaster", None, None),
]


def run(sim: Simulator, stream: bool = False) -> Any:
    """One run of ``triage`` in an event loop of its own (the model's client closed after it)."""

    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client:
            if not stream:
                return await Runner.run(build(sim, client), QUESTION)
            result = Runner.run_streamed(build(sim, client), QUESTION)
            async for _ in result.stream_events():
                pass
            return result

    return asyncio.run(main())


def test_runner_run_names_agents_tool_and_handoff(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    assert "openai_agents" in adapters

    async def main() -> Any:
        async with (
            tokentrail.run("trial") as trial,
            openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client,
        ):
            result = await Runner.run(build(sim, client), QUESTION)
            assert tokentrail.current_scope() is trial.scope  # every span's scope reset
        return result

    result = asyncio.run(main())
    assert result.last_agent.name == "forecaster"
    served, records = attempts()
    assert served == len(records) == 4  # one record per attempt, none added by the adapter
    assert names(records) == EXPECTED
    assert [r["scope_path"] for r in records] == [
        "trial/Agent workflow/triage",
        "trial/Agent workflow/forecaster",
        "trial/Agent workflow/forecaster/lookup_weather",
        "trial/Agent workflow/forecaster",
    ]


def test_trace_names_the_run_and_streamed_runs(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    with trace("weather-desk"):
        run(sim, stream=True)
    run(sim, stream=True)  # no trace of the program's: the SDK starts one inside its own task
    served, records = attempts()
    assert served == len(records) == 8
    assert names(records) == EXPECTED * 2
    assert {r["run"] for r in records[:4]} == {"weather-desk"}
    assert {r["run"] for r in records[4:]} == {"Agent workflow"}
    assert tokentrail.current_scope().name == "default"


def test_uninstalled_adapter_adds_no_names(db: Any, attempts: Attempts, sim: Simulator) -> None:
    from tokentrail import integrations

    integrations.install()
    integrations.uninstall()
    run(sim)
    served, records = attempts()
    assert served == len(records) == 4
    assert names(records) == [(None, None, None)] * 4
