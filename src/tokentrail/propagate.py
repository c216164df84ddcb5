"""Carry the current scope where Python does not: threads, executors and child processes.

asyncio tasks inherit context by themselves. Threads do not: work submitted to a
``ThreadPoolExecutor`` (and so ``loop.run_in_executor``) or run by a ``threading.Thread`` started inside
a scope is attributed to that scope once `install()` has run. Only tokentrail's own scope is carried,
not the whole context, so other libraries' context variables behave as they always did.

Child processes receive the scope as a small JSON value in ``TOKENTRAIL_SCOPE`` (see `scope_env`).
"""

from __future__ import annotations

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
    """Carry scopes into threads and executors. Idempotent; pools created earlier are covered too."""
    for cls, name, factory in _PATCHES:
        current = cls.__dict__.get(name)
        if current is not None and not hasattr(current, _SENTINEL):
            setattr(cls, name, factory(current))


def uninstall() -> None:
    """Undo `install`, where our patch is still the one in place."""
    for cls, name, _ in _PATCHES:
        original = getattr(cls.__dict__.get(name), _SENTINEL, None)
        if original is not None:
            setattr(cls, name, original)


def scope_env(scope: _scope.Scope | None = None) -> dict[str, str]:
    """Environment variables that make a child process's calls belong under ``scope``."""
    scope = scope or _scope.current_scope()
    chain = [[s.id, s.kind.value, s.name] for s in reversed(scope.chain())]
    return {ENV: json.dumps(chain, separators=(",", ":"))}


@functools.lru_cache(maxsize=1)
def inherited_scope() -> _scope.Scope | None:
    """The scope a parent process passed in ``TOKENTRAIL_SCOPE``, rebuilt with the same ids."""
    raw = os.environ.get(ENV)
    if not raw:
        return None
    try:
        chain = json.loads(raw)
        node: _scope.Scope | None = None
        for sid, kind, name in chain:
            node = _scope.rebuild(sid, _scope.ScopeKind(kind), str(name), node)
        return node
    except (ValueError, TypeError):
        return None
