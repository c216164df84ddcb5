"""CrewAI against the simulator: the agent, its task and its tool name the records, never add any.

CrewAI needs openai < 3, so this runs in its own environment (see ``tokentrail.integrations.crewai``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import pytest

if importlib.util.find_spec("crewai") is None:  # before the settings below, which are process-wide
    pytest.skip("could not import 'crewai': not installed in this environment", allow_module_level=True)
# No telemetry to CrewAI's servers (the network guard would refuse it anyway). OTEL_SDK_DISABLED holds
# for the whole process: other tests' OpenTelemetry would make no spans, hence the skip above.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_DISABLE_TRACKING", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
crewai = pytest.importorskip("crewai")
# openai 2.x looks httpx2 up in sys.modules while CrewAI's worker thread may still be importing it
# ("partially initialized module 'httpx2'"): import it before any crew runs.
pytest.importorskip("httpx2")

import openai  # noqa: E402
from crewai.tools import tool  # noqa: E402

import tokentrail  # noqa: E402
from tests.integrations.conftest import names  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

Attempts = Callable[[], tuple[int, list[dict[str, Any]]]]


def build(sim: Simulator) -> Any:
    url = sim.url + "/v1"

    @tool("lookup_weather")
    def lookup_weather(city: str) -> str:
        """Look up the weather of a city."""
        with openai.OpenAI(base_url=url, api_key="sk-test") as client:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"Weather in {city}?"}]
            )
        return reply.choices[0].message.content or ""

    llm = crewai.LLM(model="openai/gpt-4o-mini", base_url=url, api_key="sk-test")
    researcher = crewai.Agent(
        role="Researcher", goal="Answer weather questions", backstory="A forecaster.", llm=llm,
        tools=[lookup_weather], verbose=False,
    )  # fmt: skip
    task = crewai.Task(
        name="forecast", description="Use the lookup tool for the weather in Paris.",
        expected_output="One sentence.", agent=researcher,
    )  # fmt: skip
    return crewai.Crew(agents=[researcher], tasks=[task], verbose=False)


def test_crew_kickoff_names_agent_task_and_tool(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    assert "crewai" in adapters
    with tokentrail.run("trial") as trial:
        result = build(sim).kickoff()
        assert tokentrail.current_scope() is trial.scope
    assert str(result)
    served, records = attempts()
    assert served == len(records) >= 3  # one record per attempt, none added by the adapter
    assert names(records)[:3] == [
        ("Researcher", "forecast", None),
        ("Researcher", "forecast", "lookup_weather"),
        ("Researcher", "forecast", None),
    ]
    assert records[1]["scope_path"] == "trial/Researcher/forecast/lookup_weather"


def test_uninstalled_adapter_adds_no_names(db: Any, attempts: Attempts, sim: Simulator) -> None:
    from tokentrail import integrations

    integrations.install()
    integrations.uninstall()
    build(sim).kickoff()
    served, records = attempts()
    assert served == len(records) >= 3
    assert {names(records)[0]} == {(None, None, None)}
