"""Carry the current scope where Python does not: threads, executors and child processes.

asyncio tasks inherit context by themselves. Threads do not: work submitted to a
``ThreadPoolExecutor`` (and so ``loop.run_in_executor``) or run by a ``threading.Thread`` started inside
a scope is attributed to that scope once `install()` has run. Only tokentrail's own scope is carried,
not the whole context, so other libraries' context variables behave as they always did.

Processes: ``multiprocessing`` children (fork, spawn, forkserver), ``Pool`` and ``ProcessPoolExecutor``
tasks, and Python programs started with ``subprocess`` carry the scope they were started or submitted
in: fork children inherit it, spawned ones read it from ``TOKENTRAIL_SCOPE`` (see `scope_env`), and
pool tasks are wrapped in a picklable `ScopedCall`. Capture itself reaches spawned children through
the environment that `tokentrail.instrument` sets. Worker processes flush before their ``os._exit``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tokentrail import scope as _scope

_SENTINEL = "__tokentrail_original__"
ENV = "TOKENTRAIL_SCOPE"


def _in_scope(target: Any, carried: _scope.Scope) -> Any:
    @functools.wraps(target)
    def run_in_scope(*args: Any, **kwargs: Any) -> Any:
        token = _scope._current.set(carried)
        try:
            return target(*args, **kwargs)
        finally:
            _scope._current.reset(token)

    return run_in_scope


def _patched_submit(original: Any) -> Any:
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        carried = _scope._current.get()
        if carried is not None:
            fn = _in_scope(fn, carried)
        return original(self, fn, *args, **kwargs)

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
        if carried is not None:
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


def _chain(scope: _scope.Scope) -> list[list[Any]]:
    return [[s.id, s.kind.value, s.name, s.tags] for s in reversed(scope.chain())]


def _rebuild(chain: list[list[Any]]) -> _scope.Scope | None:
    node: _scope.Scope | None = None
    for sid, kind, name, tags in chain:
        node = _scope.rebuild(sid, _scope.ScopeKind(kind), str(name), node, tags)
    return node


def scope_env(scope: _scope.Scope | None = None) -> dict[str, str]:
    """Environment variables that make a child process's calls belong under ``scope``."""
    scope = scope or _scope.current_scope()
    return {ENV: json.dumps(_chain(scope), separators=(",", ":"))}


_inherited: tuple[str | None, _scope.Scope | None] = (None, None)


def inherited_scope() -> _scope.Scope | None:
    """The scope a parent process passed in ``TOKENTRAIL_SCOPE``, rebuilt with the same ids."""
    global _inherited
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
    # Only an explicit scope travels with the task. Outside one, the worker's own default already
    # is the parent's default run (inherited at fork, or from TOKENTRAIL_SCOPE at spawn), and a
    # run() the task opens stays a root rather than nesting under that implicit bucket.
    carried = _scope._current.get()
    return fn if carried is None else ScopedCall(fn, carried)


def _patched_process_submit(original: Any) -> Any:
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        return original(self, _scoped(fn), *args, **kwargs)

    setattr(submit, _SENTINEL, original)
    return submit


def _patched_pool_method(original: Any) -> Any:
    def method(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, _scoped(func), *args, **kwargs)

    setattr(method, _SENTINEL, original)
    return method


def _patched_process_start(original: Any) -> Any:
    # spawn and forkserver children read the environment at start: hand them the current scope.
    # (fork children inherit the ContextVar itself.)
    def start(self: Any) -> None:
        previous = os.environ.get(ENV)
        os.environ.update(scope_env(_scope.current_scope()))
        try:
            return original(self)
        finally:
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous

    setattr(start, _SENTINEL, original)
    return start


def _patched_bootstrap_process(original: Any) -> Any:
    # Worker processes end with os._exit(), which skips atexit: flush before it.
    def _bootstrap(self: Any, *args: Any, **kwargs: Any) -> Any:
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
