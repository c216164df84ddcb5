"""Each task runs in the scope it was submitted in, whichever worker runs it, and each child process
in the scope it was started in, however many threads start them and whichever start method is used.

A pool's workers outlive the scope that happened to start them; a task submitted outside any scope
belongs to the default run, and a run it opens is a root of its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import pytest

import tokentrail
from tests.conftest import recorded
from tests.processes import workers
from tokentrail.sinks import pipeline


def _paths(db: Path) -> Counter[str]:
    return Counter(c["scope_path"] for c in recorded(db))


@pytest.fixture
def fresh_forkserver() -> Iterator[None]:
    """A fork server started by this test: one started earlier has an earlier test's environment."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # type: ignore[attr-defined]
    yield
    forkserver._forkserver._stop()  # type: ignore[attr-defined]


# -- threads ---------------------------------------------------------------------------------------


def test_a_thread_pool_worker_does_not_keep_the_scope_that_started_it(db: Path) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    with tokentrail.run("A") as a, tokentrail.agent("a1"):
        pool.submit(workers.calls, 2).result()  # starts the pool's only thread, inside A/a1
    pool.submit(workers.calls, 3).result()  # outside any scope
    pool.submit(workers.run_calls, "job", 4).result()  # a run of its own, not one nested in A/a1
    pool.shutdown()
    assert _paths(db) == {"A/a1": 2, "default": 3, "job": 4}
    assert a.usage.calls == 2


def test_asyncio_default_executor_tasks_keep_the_submitting_scope(db: Path) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with tokentrail.run("B"):
            await loop.run_in_executor(None, workers.calls, 2)
        await loop.run_in_executor(None, workers.calls, 3)

    asyncio.run(main())
    assert _paths(db) == {"B": 2, "default": 3}


def test_multiprocessing_thread_pool_tasks_keep_the_submitting_scope(db: Path) -> None:
    with tokentrail.run("T"):
        with tokentrail.agent("maker"):
            pool = ThreadPool(2)  # its threads start here
        with tokentrail.agent("user") as user:
            pool.map(workers.calls, [1, 2])
            assert user.usage.calls == 3  # the scope itself, not a copy: its live totals count
    pool.apply(workers.calls, (4,))
    pool.close()
    pool.join()
    assert _paths(db) == {"T/user": 3, "default": 4}


# -- process pools ---------------------------------------------------------------------------------


def _pool_task(kind: str, pool: Any, fn: Any, *args: Any) -> Any:
    return pool.apply(fn, args) if kind == "pool" else pool.submit(fn, *args).result()


@pytest.mark.parametrize("kind", ["pool", "executor"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_process_pool_made_in_a_scope_runs_later_tasks_outside_it(db: Path, method: str, kind: str) -> None:
    ctx = multiprocessing.get_context(method)
    with tokentrail.run("setup") as setup:
        pool: Any = ctx.Pool(1) if kind == "pool" else ProcessPoolExecutor(1, mp_context=ctx)
        _pool_task(kind, pool, workers.calls, 2)
    _pool_task(kind, pool, workers.calls, 3)  # outside any scope
    _pool_task(kind, pool, workers.run_calls, "own", 4)  # a root run, not nested in setup
    with tokentrail.run("later"), tokentrail.agent("x"):
        _pool_task(kind, pool, workers.calls, 5)
    if kind == "pool":
        pool.close()
        pool.join()
    else:
        pool.shutdown()
    assert _paths(db) == {"setup": 2, "default": 3, "own": 4, "later/x": 5}
    assert setup.stored_usage().calls == 2


# -- multiprocessing.Process -----------------------------------------------------------------------


def test_a_forkserver_child_runs_in_the_scope_it_was_started_in(db: Path, fresh_forkserver: None) -> None:
    ctx = multiprocessing.get_context("forkserver")
    first = ctx.Process(target=workers.calls, args=(2,))
    first.start()  # starts the fork server, outside any scope
    first.join()
    with tokentrail.run("Y"), tokentrail.agent("ya"):
        child = ctx.Process(target=workers.calls, args=(3,))
        child.start()
        child.join()
    assert (first.exitcode, child.exitcode) == (0, 0)
    assert _paths(db) == {"default": 2, "Y/ya": 3}


def test_spawned_children_started_by_many_threads_at_once_keep_their_own_scopes(db: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    names = ("alpha", "beta", "gamma")
    barrier = threading.Barrier(len(names))
    seen: set[str | None] = set()
    done = threading.Event()

    def watch() -> None:  # the parent's environment is nobody's to change
        while not done.is_set():
            seen.add(os.environ.get("TOKENTRAIL_SCOPE"))

    def start_children(name: str) -> None:
        with tokentrail.agent(name):
            children = [ctx.Process(target=workers.calls, args=(1,)) for _ in range(3)]
            for child in children:
                barrier.wait()
                child.start()
            for child in children:
                child.join()

    before = os.environ.get("TOKENTRAIL_SCOPE")
    watcher = threading.Thread(target=watch)
    watcher.start()
    with tokentrail.run("S"):
        starters = [threading.Thread(target=start_children, args=(n,)) for n in names]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
    done.set()
    watcher.join()
    assert seen == {before}
    assert _paths(db) == {"S/alpha": 3, "S/beta": 3, "S/gamma": 3}


def test_a_worker_stores_the_rows_of_its_parents_scopes_as_the_parent_would(db: Path) -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(int).result()  # the worker is up before the scopes open
        with tokentrail.run("R") as r, tokentrail.agent("inner") as inner:
            # The worker writes first: our writer waits (at exit, workers flush what they have).
            with pipeline._write_lock:
                pool.submit(workers.calls, 2).result()
                pool.shutdown()
    recorded(db)
    con = sqlite3.connect(db)
    rows = {name: (pid, started) for name, pid, started in con.execute("SELECT name, pid, started_ns FROM scopes")}
    con.close()
    assert rows["R"] == (os.getpid(), r.scope.started_ns)
    assert rows["inner"] == (os.getpid(), inner.scope.started_ns)
