"""Carry the current scope where Python does not: threads, executors and child processes.

asyncio tasks inherit context by themselves. Threads do not: work submitted to a
``ThreadPoolExecutor`` (and so ``loop.run_in_executor``) or a ``multiprocessing.pool.ThreadPool``
runs in the scope it was submitted in, and a ``threading.Thread`` started inside a scope runs in it,
once `install()` has run. Only tokentrail's own scope is carried, not the whole context, so other
libraries' context variables behave as they always did.

Processes: ``multiprocessing`` children (fork, spawn, forkserver), ``Pool`` and ``ProcessPoolExecutor``
tasks, and Python programs started with ``subprocess`` carry the scope they were started or submitted
in. A ``multiprocessing`` child gets it on its ``Process`` object (pickled to spawn and forkserver
children; fork children also inherit the context variable), so the parent's environment is never
touched; pool tasks are wrapped in a picklable `ScopedCall`; ``subprocess`` children read it from
``TOKENTRAIL_SCOPE`` (see `scope_env`). Capture itself reaches spawned children through the
environment that `tokentrail.instrument` sets. Worker processes flush before their ``os._exit``.

Pool workers (threads or processes) outlive the scope that happened to start them: they start in
no scope, so a task submitted outside any scope runs in the default run whichever worker runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from tokentrail import scope as _scope
from tokentrail._guard import guard

_SENTINEL = "__tokentrail_original__"
ENV = "TOKENTRAIL_SCOPE"

_pool_workers: frozenset[int] = frozenset()
"""Ids of the functions pool workers run (thread and process pools of the standard library); set by
`install`. A worker started by a task submitted inside a scope must not keep that scope."""


def _run_in(carried: _scope.Scope | None, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    token = _scope._current.set(carried)
    try:
        return fn(*args, **kwargs)
    finally:
        _scope._current.reset(token)


def _patched_submit(original: Any) -> Any:
    # Every task is wrapped, in no scope too: a worker thread may run anything left set by an
    # earlier task. partial() costs ~0.15 µs here; functools.wraps on a closure cost ~2 µs.
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return original(self, partial(_run_in, _scope._current.get(), fn), *args, **kwargs)

    setattr(submit, _SENTINEL, original)
    return submit


def _patched_bootstrap(original: Any) -> Any:
    # Thread._bootstrap_inner runs run() for Thread subclasses too, which a patched run() would miss.
    def _bootstrap_inner(self: threading.Thread) -> None:
        carried = getattr(self, "_tokentrail_scope", None)
        if carried is not None:
            _scope._current.set(carried)
        original(self)

    setattr(_bootstrap_inner, _SENTINEL, original)
    return _bootstrap_inner


def _patched_start(original: Any) -> Any:
    def start(self: threading.Thread) -> None:
        carried = _scope._current.get()
        # A pool's worker thread is started by whichever task found the pool short of one, and
        # outlives it: it starts in no scope, and each task brings its own (see _patched_submit).
        if carried is not None and id(getattr(self, "_target", None)) not in _pool_workers:
            self._tokentrail_scope = carried  # type: ignore[attr-defined]
        original(self)

    setattr(start, _SENTINEL, original)
    return start


_PATCHES = (
    (ThreadPoolExecutor, "submit", _patched_submit),
    (threading.Thread, "start", _patched_start),
    (threading.Thread, "_bootstrap_inner", _patched_bootstrap),
)


def install() -> None:
    """Carry scopes into threads, executors and child processes. Idempotent; pools created earlier
    are covered too."""
    global _pool_workers
    _pool_workers = _pool_worker_ids()
    for cls, name, factory in (*_PATCHES, *_process_patches()):
        current = cls.__dict__.get(name)
        if current is not None and not hasattr(current, _SENTINEL):
            setattr(cls, name, factory(current))


def uninstall() -> None:
    """Undo `install`, where our patch is still the one in place."""
    for cls, name, _ in (*_PATCHES, *_process_patches()):
        original = getattr(cls.__dict__.get(name), _SENTINEL, None)
        if original is not None:
            setattr(cls, name, original)


def _pool_worker_ids() -> frozenset[int]:
    import concurrent.futures.process
    import concurrent.futures.thread
    import multiprocessing.pool

    workers = (
        getattr(concurrent.futures.thread, "_worker", None),
        getattr(concurrent.futures.process, "_process_worker", None),
        getattr(multiprocessing.pool, "worker", None),  # Pool and ThreadPool
    )
    # By id: a thread's target may be any callable, even an unhashable one.
    return frozenset(id(w) for w in workers if w is not None)


def _chain(scope: _scope.Scope) -> list[list[Any]]:
    # With its start time and pid: a child that stores the scope's row (the first record under it
    # there) writes the very row the parent writes, whichever of them comes first.
    return [[s.id, s.kind.value, s.name, s.tags, s.started_ns, s.pid] for s in reversed(scope.chain())]


def _rebuild(chain: list[list[Any]]) -> _scope.Scope | None:
    node: _scope.Scope | None = None
    for sid, kind, name, tags, *origin in chain:
        started_ns, pid = (int(origin[0]), int(origin[1])) if len(origin) == 2 else (None, None)
        node = _scope.rebuild(sid, _scope.ScopeKind(kind), str(name), node, tags, started_ns=started_ns, pid=pid)
    return node


def scope_env(scope: _scope.Scope | None = None) -> dict[str, str]:
    """Environment variables that make a child process's calls belong under ``scope``."""
    scope = scope or _scope.current_scope()
    return {ENV: json.dumps(_chain(scope), separators=(",", ":"))}


_inherited: tuple[str | None, _scope.Scope | None] = (None, None)
_from_parent: _scope.Scope | None = None
"""The scope a ``multiprocessing`` parent handed this process on its ``Process`` object."""


def inherited_scope() -> _scope.Scope | None:
    """The scope a parent process passed down (on the ``Process`` object of a ``multiprocessing``
    child, else in ``TOKENTRAIL_SCOPE``), rebuilt with the same ids."""
    global _inherited
    if _from_parent is not None:
        return _from_parent
    raw = os.environ.get(ENV)
    if not raw:
        return None
    if _inherited[0] == raw:
        return _inherited[1]
    try:
        node = _rebuild(json.loads(raw))
    except (ValueError, TypeError):
        node = None
    _inherited = (raw, node)
    return node


class ScopedCall:
    """A picklable callable that runs ``fn`` in a worker process under the submitter's scope."""

    __slots__ = ("chain", "fn")

    def __init__(self, fn: Any, scope: _scope.Scope) -> None:
        self.fn = fn
        self.chain = _chain(scope)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        carried = _rebuild(self.chain)
        token = _scope._current.set(carried)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _scope._current.reset(token)

    def __getstate__(self) -> tuple[Any, list[list[Any]]]:
        return self.fn, self.chain

    def __setstate__(self, state: tuple[Any, list[list[Any]]]) -> None:
        self.fn, self.chain = state


def _scoped(fn: Any) -> Any:
    # Only an explicit scope travels with the task. Outside one, the worker's own default is the
    # parent's default run (pool workers are started in no scope: see _patched_process_start), and
    # a run() the task opens stays a root rather than nesting under that implicit bucket.
    carried = _scope._current.get()
    return fn if carried is None else ScopedCall(fn, carried)


def _patched_process_submit(original: Any) -> Any:
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return original(self, _scoped(fn), *args, **kwargs)

    setattr(submit, _SENTINEL, original)
    return submit


def _patched_pool_method(original: Any) -> Any:
    from multiprocessing.pool import ThreadPool

    def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, ThreadPool):  # same process: the scope itself, so its live totals count
            func = partial(_run_in, _scope._current.get(), func)
        else:
            func = _scoped(func)
        return original(self, func, *args, **kwargs)

    setattr(method, _SENTINEL, original)
    return method


def _patched_process_start(original: Any) -> Any:
    # The scope travels on the Process object: pickled to spawn and forkserver children (a forkserver
    # child gets the server's environment, not ours), and never through os.environ, which threads
    # starting processes at once would share.
    def start(self: Any) -> None:
        with guard("propagate.process_start"):
            pooled = id(getattr(self, "_target", None)) in _pool_workers
            # A pool worker outlives the scope that started it: it runs in the default run, and each
            # task brings its own scope (ScopedCall).
            carried = _scope.default_run() if pooled else _scope.current_scope()
            self._tokentrail_scope = (_chain(carried), pooled)
        return original(self)

    setattr(start, _SENTINEL, original)
    return start


def _adopt(chain: list[list[Any]], pooled: bool) -> None:
    """In a ``multiprocessing`` child: make the scope its parent handed down its default."""
    global _from_parent
    if pooled:
        _scope._current.set(None)  # a fork child inherits the context of the thread that forked it
    if _scope._default_run is None:  # else a fork child: it has the parent's, and its context
        _from_parent = _rebuild(chain)


def _patched_bootstrap_process(original: Any) -> Any:
    # Worker processes end with os._exit(), which skips atexit: flush before it.
    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        carried = self.__dict__.pop("_tokentrail_scope", None)
        if carried is not None:
            with guard("propagate.process_bootstrap"):
                _adopt(*carried)
        try:
            return original(self, *args, **kwargs)
        finally:
            from tokentrail.sinks import pipeline

            with contextlib.suppress(Exception):
                pipeline.flush()

    setattr(_bootstrap, _SENTINEL, original)
    return _bootstrap


def _patched_popen_init(original: Any) -> Any:
    # A Python child started by subprocess inherits capture from the environment (see instrument());
    # this adds the scope it was started in.
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        env = kwargs.get("env")
        if env is None and os.environ.get("TOKENTRAIL_AUTO") == "1":
            kwargs["env"] = {**os.environ, **scope_env(_scope.current_scope())}
        elif env is not None and env.get("TOKENTRAIL_AUTO") == "1":
            kwargs["env"] = {**env, **scope_env(_scope.current_scope())}
        original(self, *args, **kwargs)

    setattr(__init__, _SENTINEL, original)
    return __init__


def _process_patches() -> tuple[tuple[type, str, Any], ...]:
    import multiprocessing.pool
    import multiprocessing.process
    import subprocess
    from concurrent.futures import ProcessPoolExecutor

    pool = multiprocessing.pool.Pool
    return (
        (ProcessPoolExecutor, "submit", _patched_process_submit),
        (pool, "apply_async", _patched_pool_method),
        (pool, "_map_async", _patched_pool_method),
        (pool, "imap", _patched_pool_method),
        (pool, "imap_unordered", _patched_pool_method),
        (multiprocessing.process.BaseProcess, "start", _patched_process_start),
        (multiprocessing.process.BaseProcess, "_bootstrap", _patched_bootstrap_process),
        (subprocess.Popen, "__init__", _patched_popen_init),
    )
