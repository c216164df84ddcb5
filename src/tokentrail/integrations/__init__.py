"""Attribution-only adapters for agent frameworks: they name scopes, they never make a record.

Capture at the HTTP layer already records every attempt exactly once (ARCHITECTURE.md §1). What a
framework knows and the wire does not is *who* made the call: which agent, graph node or tool. Each
adapter turns the framework's own lifecycle events into tokentrail scopes, so that the records the HTTP
hooks make anyway carry the framework's agent, step and tool names.

=================  ==============================  =================================================
adapter            framework (import name)         hook point
=================  ==============================  =================================================
``langchain``      langchain-core, LangGraph       a global callback handler (configure hook)
``openai_agents``  openai-agents (``agents``)      a tracing processor (``add_trace_processor``)
``pydantic_ai``    pydantic-ai (``pydantic_ai``)   a capability added to every ``Agent.iter`` run
``crewai``         crewai                          the CrewAI event bus
=================  ==============================  =================================================

`install()` enables the adapter of every framework already imported, and arms a post-import hook for
each one installed but not imported yet, so importing tokentrail never imports a framework. An adapter
whose framework is missing is skipped without a word.

The helpers below are what the adapters share: opening a scope under an explicit parent (framework
callbacks know their parent run, which is not always the scope current in the calling context) and
restoring the scope `ContextVar` where the framework ends a run in another context than it began it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextvars import Token
from types import ModuleType

import wrapt

from tokentrail import scope as _scope
from tokentrail._guard import guard
from tokentrail.scope import Scope, ScopeKind

__all__ = [
    "FRAMEWORKS",
    "Opened",
    "activate",
    "close_scope",
    "deactivate",
    "enabled",
    "install",
    "live",
    "open_scope",
    "uninstall",
]

FRAMEWORKS: dict[str, str] = {
    "langchain": "langchain_core",
    "openai_agents": "agents",
    "pydantic_ai": "pydantic_ai",
    "crewai": "crewai",
}
"""Adapter name → the module whose import enables it."""

_install_lock = threading.RLock()
_enabled = False
_active: set[str] = set()
_registered: set[str] = set()


def _adapter(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def _enable(name: str) -> bool:
    """Install one adapter (its framework is imported); False when it declined or failed."""
    with _install_lock:
        if name in _active:
            return True
        with guard(f"integration.{name}"):
            if _adapter(name).install():
                _active.add(name)
                return True
    return False


def _on_import(name: str) -> Callable[[object], None]:
    def hook(module: object) -> None:
        if _enabled:
            _enable(name)

    return hook


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install() -> list[str]:
    """Enable the adapter of every supported framework that is installed; idempotent.

    A framework already imported is adapted now; one installed but not imported yet is adapted when the
    program imports it (tokentrail does not import it). Returns the names of both kinds, in the order of
    `FRAMEWORKS`.
    """
    global _enabled
    _enabled = True
    names: list[str] = []
    for name, module in FRAMEWORKS.items():
        if module in sys.modules:
            if _enable(name):
                names.append(name)
        elif _installed(module):
            if name not in _registered:
                _registered.add(name)
                wrapt.register_post_import_hook(_on_import(name), module)
            names.append(name)
    return names


def uninstall() -> None:
    """Disable every adapter; frameworks imported later stay unadapted until `install()`."""
    global _enabled
    _enabled = False
    with _install_lock:
        for name in sorted(_active):
            with guard(f"integration.{name}"):
                _adapter(name).uninstall()
        _active.clear()


def enabled() -> list[str]:
    """The adapters active now."""
    with _install_lock:
        return sorted(_active)


# -- scopes opened on a framework's behalf -------------------------------------------------------------

_closed: OrderedDict[str, None] = OrderedDict()
"""Ids of scopes the adapters closed, newest last (bounded): a context a framework left pointing at one
of them is pointed back at its nearest open ancestor."""
_CLOSED_KEEP = 4096
_closed_lock = threading.Lock()


class Opened:
    """A scope an adapter opened: the scope, and the `ContextVar` token while it is current somewhere."""

    __slots__ = ("scope", "token")

    def __init__(self, scope: Scope, token: Token[Scope | None] | None) -> None:
        self.scope = scope
        self.token = token

    def __repr__(self) -> str:
        return f"<Opened {self.scope.kind.value} {self.scope.name!r}{' current' if self.token else ''}>"


def open_scope(kind: ScopeKind, name: str, parent: Scope | None = None, *, activate: bool = True) -> Opened:
    """Open a scope under ``parent`` (default: the current scope) and, with ``activate``, make it the
    current scope of the calling context until `deactivate()`."""
    if parent is None:
        parent = live(_scope._current.get())
        if parent is None and kind is not ScopeKind.RUN:
            parent = _scope.default_run()
    scope = _scope._new_scope(kind, name, parent, {})
    _scope._notify("open", scope)
    token = _scope._current.set(scope) if activate else None
    return Opened(scope, token)


def activate(opened: Opened) -> None:
    """Make an open scope the current scope of the calling context (again) until `deactivate()`."""
    if opened.token is None:
        opened.token = _scope._current.set(opened.scope)


def deactivate(opened: Opened) -> None:
    """Stop ``opened`` being the current scope of the calling context (the one that activated it).

    A scope opened after it and still open stays current (runs ended out of order); a descendant
    already closed does not. Called from another context than the one that activated it (some frameworks
    end runs in a task of their own), it clears only the calling context and keeps the token for the
    activating one.
    """
    token = opened.token
    if token is None:
        return
    current = _scope._current.get()
    if live(current) is opened.scope:
        try:
            _scope._current.reset(token)
        except ValueError:  # the token belongs to another context
            _scope._current.set(live(opened.scope.parent))
            return
        restored = _scope._current.get()
        if live(restored) is not restored:  # what was current before has closed since
            _scope._current.set(live(restored))
    opened.token = None


def close_scope(opened: Opened) -> None:
    """Deactivate ``opened`` if it is still current and close it (its totals stay readable)."""
    deactivate(opened)
    with _closed_lock:
        _closed[opened.scope.id] = None
        while len(_closed) > _CLOSED_KEEP:
            _closed.popitem(last=False)
    _scope._notify("close", opened.scope)


def live(scope: Scope | None) -> Scope | None:
    """``scope``, or its nearest ancestor that no adapter has closed."""
    while scope is not None and scope.id in _closed:
        scope = scope.parent
    return scope
