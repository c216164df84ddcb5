"""instructor: structured output with validation retries. Each retry is a new request the user never
wrote: every attempt is one record, with the tokens served, in the user's scope, and its call site names
the library that made the call (instructor's retry loop), as the issue asks (``instructor/...``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

instructor = pytest.importorskip("instructor")
openai = pytest.importorskip("openai")

from instructor.core import InstructorRetryException  # noqa: E402
from pydantic import BaseModel, field_validator  # noqa: E402

import tokentrail  # noqa: E402
from tests.hidden.conftest import records_match, served_since  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

# The simulator answers with a tool call when the user's message mentions a tool: the first reply then
# fits the schema, and the validator below is what rejects it once.
PROMPT = "Use the lookup tool to plan a weekend in Lyon."


def make_plan_model(seen: list[str]) -> type[BaseModel]:
    class Plan(BaseModel):
        title: str
        days: int

        @field_validator("title")
        @classmethod
        def reject_first_answer(cls, value: str) -> str:
            seen.append(value)
            if len(seen) == 1:
                # The reask quotes this: it mentions the tool, so the simulator calls it again.
                raise ValueError("title too vague: call the lookup tool again with a better title")
            return value

    return Plan


def assert_named_instructor(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        assert call["call_module"].startswith("instructor."), call["call_site"]
        assert call["call_site"].startswith("instructor/"), call["call_site"]
        assert call["call_function"].startswith(call["call_module"] + "."), call["call_function"]


def test_validation_retry_chat_tools_every_attempt_recorded(db: Path, sim: Simulator) -> None:
    seen: list[str] = []
    Plan = make_plan_model(seen)
    start = len(sim.served)
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=2) as raw:
        client = instructor.from_openai(raw, mode=instructor.Mode.TOOLS)
        with tokentrail.run("extract") as run, tokentrail.agent("planner") as planner:
            plan = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": PROMPT}],
                response_model=Plan,
                max_retries=2,
                # Under instructor's retries, the SDK's own: the header goes with every request instructor
                # makes, and `429*1` refuses each distinct request once, so every attempt is 429 + retry.
                extra_headers={"X-Sim-Fault": "429*1"},
            )
    served = served_since(sim, start)
    calls = records_match(db, served)
    assert plan.title == seen[-1] and len(seen) >= 2
    # Per instructor attempt: the 429, then the SDK's retry of it (attempt 2). The first answer is rejected
    # by the validator; against the simulator the reask (a `tool` message last) may come back as prose,
    # which instructor rejects too, so 2 or 3 attempts (max_retries=2), each paid for and recorded.
    attempts = len(calls) // 2
    assert 2 <= attempts <= 3
    assert [(c["status"], c["http_status"], c["attempt"]) for c in calls] == [
        ("http_error", 429, 1), ("ok", 200, 2),
    ] * attempts  # fmt: skip
    assert {(c["run"], c["agent"], c["scope_path"]) for c in calls} == {("extract", "planner", "extract/planner")}
    assert all(c["api"] == "openai.chat" and c["model"] == "gpt-4o-mini" for c in calls)
    assert_named_instructor(calls)
    assert planner.usage.calls == run.usage.calls == len(served)
    assert planner.usage.input_tokens == sum(s.input_tokens or 0 for s in served if s.status == 200)
    assert planner.usage.output_tokens == sum(s.output_tokens or 0 for s in served if s.status == 200)


def test_validation_retry_async_responses_tools(db: Path, sim: Simulator) -> None:
    seen: list[str] = []
    Plan = make_plan_model(seen)
    start = len(sim.served)

    async def main() -> Any:
        async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as raw:
            client = instructor.from_openai(raw, mode=instructor.Mode.RESPONSES_TOOLS)
            async with tokentrail.run("extract-async"), tokentrail.agent("planner"):
                return await client.responses.create(
                    model="gpt-4o-mini",
                    input=[{"role": "user", "content": PROMPT}],
                    response_model=Plan,
                    max_retries=2,
                )

    plan = asyncio.run(main())
    served = served_since(sim, start)
    calls = records_match(db, served)
    assert plan.title == seen[-1]
    # Rejected once, accepted on the reask: exactly two requests, two records.
    assert len(seen) == 2 and len(served) == 2
    assert [c["status"] for c in calls] == ["ok", "ok"]
    assert all(c["api"] == "openai.responses" and c["scope_path"] == "extract-async/planner" for c in calls)
    assert_named_instructor(calls)


def test_retries_exhausted_every_attempt_still_recorded(db: Path, sim: Simulator) -> None:
    class Never(BaseModel):
        title: str

        @field_validator("title")
        @classmethod
        def always_wrong(cls, value: str) -> str:
            raise ValueError("still wrong: call the lookup tool again")

    start = len(sim.served)
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as raw:
        client = instructor.from_openai(raw, mode=instructor.Mode.TOOLS)
        with tokentrail.run("give-up"), pytest.raises(InstructorRetryException):
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": PROMPT}],
                response_model=Never,
                max_retries=2,
            )
    served = served_since(sim, start)
    calls = records_match(db, served)
    assert len(calls) == 3  # max_retries=2: three attempts, all paid for, none of them returned
    assert_named_instructor(calls)
