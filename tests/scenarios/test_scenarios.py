"""The situations of real teams, reproduced against the simulator: every figure is a real sum."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import tokentrail
from tests.conftest import recorded
from tests.scenarios import crew, evalharness, memoryagent
from tokentrail import report
from tokentrail.sim import Simulator
from tokentrail.sinks.sqlite import connect


def test_evaluation_harness(db: Path, sim: Simulator) -> None:
    start = len(sim.served)
    summary = evalharness.session(sim.url + "/v1", ["What is 2+2?", "Name a planet.", "Spell cat."])
    calls = recorded(db, run="eval-session")
    served = sim.served[start:]
    assert len(calls) == len(served) == 3 + 3 + 1 + 1
    assert sorted({c["agent"] or "-" for c in calls}) == ["-", "judge", "student", "teacher"]
    assert {c["call_function"] for c in calls if c["agent"] == "teacher"} == {"tests.scenarios.evalharness.reward"}
    assert {c["step"] for c in calls} == {None, "learn"}
    # The judge closed its stream early: recorded, attributed, its prompt counted.
    [judged] = [c for c in calls if c["agent"] == "judge"]
    assert judged["status"] == "cancelled" and judged["input_source"] == "counted"
    assert summary["total_calls"] == len(calls)
    assert summary["input_tokens"] == sum(c["input_tokens"] or 0 for c in calls)
    assert summary["reasoning_tokens"] == sum(c["reasoning_tokens"] or 0 for c in calls) > 0  # o3-mini reward


def test_memory_agent_trials_in_parallel_processes(db: Path, sim: Simulator, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        logs = list(pool.map(memoryagent.trial, [sim.url + "/v1"] * 4, range(4), [str(tmp_path)] * 4))
    tokentrail.flush()
    ledger = connect(db, readonly=True)
    for seed, log in enumerate(logs):
        written = json.loads((tmp_path / f"trial-{seed}.json").read_text())
        assert written == log
        usage = written["llm_usage"]
        calls = report.calls(ledger, report.Filters(run=f"trial-{seed}"))
        assert usage["total_calls"] == len(calls) == 9  # 3 turns × (add, search, answer)
        assert usage["calls_by_model"] == {"text-embedding-3-small": 6, "gpt-4o-mini": 3}
        assert usage["prompt_tokens"] == sum(c["input_tokens"] for c in calls)
        assert usage["total_tokens"] == sum(c["total_tokens"] for c in calls)
        hidden = [c for c in calls if c["api"] == "openai.embeddings"]
        assert {c["call_function"].rsplit(".", 1)[0] for c in hidden} == {"tests.scenarios.memoryagent.TinyMemory"}
        assert {c["scope_path"] for c in calls} == {f"trial-{seed}/memory-agent"}


def test_three_agent_crew_with_tools(db: Path, sim: Simulator) -> None:
    start = len(sim.served)
    crew.crew(sim.url + "/v1")
    calls = recorded(db, run="crew")
    assert len(calls) == len(sim.served) - start
    by = {
        dims: {tuple(r[d] for d in dims): r for r in report.summarize(connect(db, readonly=True), list(dims), report.Filters(run="crew"))}
        for dims in (("agent",), ("step",), ("tool",))
    }
    for dims, rows in by.items():
        for key, row in rows.items():
            mine = [c for c in calls if tuple(c[d] for d in dims) == key]
            assert row["calls"] == len(mine)
            assert row["total_tokens"] == sum(c["total_tokens"] or 0 for c in mine)
    assert by[("tool",)][("search",)]["calls"] == 2 and by[("tool",)][("summarise",)]["calls"] == 1
    assert {k[0] for k in by[("agent",)]} == {"researcher", "writer", "reviewer"}
    assert sum(r["calls"] for r in by[("agent",)].values()) == len(calls)
