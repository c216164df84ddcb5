"""Nothing escapes across process boundaries: children inherit capture and the parent's scope, and
their records land in the same ledger, attributed to the scope they were started or submitted in."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import tokentrail
from tests.conftest import recorded
from tests.processes import workers


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_of_eight_workers_times_five_hundred_calls(db: Path, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with tokentrail.run(f"pool-{method}") as run, tokentrail.agent("fan-out"):
        with ctx.Pool(8) as pool:
            pids = pool.map(workers.calls, [500] * 8)
            pool.close()
            pool.join()
    calls = recorded(db, run=f"pool-{method}")
    assert len(calls) == 4000
    assert {c["scope_path"] for c in calls} == {f"pool-{method}/fan-out"}
    assert sum(c["total_tokens"] for c in calls) == 4000 * 15
    assert len(set(pids)) > 1
    assert run.stored_usage().calls == 4000


def test_process_pool_executor_tasks_keep_the_submitting_scope(db: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with tokentrail.run("executor"):
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
            with tokentrail.agent("a"):
                first = [pool.submit(workers.calls, 5) for _ in range(3)]
            with tokentrail.agent("b"):
                second = [pool.submit(workers.agent_calls, "inner", 7) for _ in range(2)]
            [f.result() for f in first + second]
    by_path = Counter(c["scope_path"] for c in recorded(db, run="executor"))
    assert by_path == {"executor/a": 15, "executor/b/inner": 14}


def test_a_spawned_process_under_an_agent(db: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with tokentrail.run("spawned"), tokentrail.agent("worker-agent"):
        child = ctx.Process(target=workers.calls, args=(20,))
        child.start()
        child.join()
    assert child.exitcode == 0
    assert Counter(c["scope_path"] for c in recorded(db, run="spawned")) == {"spawned/worker-agent": 20}


def test_a_python_subprocess_inherits_capture_and_scope(db: Path, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        sys.path.insert(0, os.getcwd())
        import tests.processes.workers as w
        w.calls(9)
    """))  # fmt: skip
    with tokentrail.run("subprocess"), tokentrail.agent("shell"):
        done = subprocess.run([sys.executable, str(script)], cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0
    calls = recorded(db, run="subprocess")
    assert [c["scope_path"] for c in calls] == ["subprocess/shell"] * 9
    assert {c["call_function"] for c in calls} == {"tests.processes.workers.calls"}


def test_nothing_is_set_for_children_after_uninstrument(tmp_path: Path) -> None:
    import os

    with tokentrail.instrument(tmp_path / "x.db"):
        assert os.environ.get("TOKENTRAIL_AUTO") == "1"
    assert "TOKENTRAIL_AUTO" not in os.environ


def test_pools_created_before_instrument_are_covered(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tokentrail.uninstrument()
    threads = ThreadPoolExecutor(max_workers=2)
    processes = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork"))
    db = tmp_path / "late.db"
    with tokentrail.instrument(db), tokentrail.run("late"), tokentrail.agent("pooled"):
        threads.submit(workers.calls, 3).result()
        processes.submit(workers.calls, 4).result()
        processes.shutdown()
        threads.shutdown()
        assert Counter(c["scope_path"] for c in recorded(db, run="late")) == {"late/pooled": 7}
