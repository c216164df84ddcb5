"""CrewAI: an agent working on a task, and the tools it uses, become ``agent``, ``step`` and ``tool`` scopes.

=======================================  ===============================================================
CrewAI                                   tokentrail scope
=======================================  ===============================================================
``Agent.execute_task`` (every task a     ``agent`` named after the agent's ``role``, and in it a
crew or a program runs)                  ``step`` named after the task (``name``, else the first line of
                                         its description, cut at 60 characters)
``Agent.kickoff`` (an agent on its own)  ``agent`` named after its ``role``
a tool run (``BaseTool.run``/``arun``,   ``tool`` named after the tool
``CrewStructuredTool.invoke``/``ainvoke``)
=======================================  ===============================================================

How: these public methods are wrapped (wrapt) to run inside the scope, like a ``with tokentrail.agent(...)``
around them. CrewAI's own event bus is no use for this: it runs synchronous listeners on a thread pool in
a *copy* of the caller's context, so a scope set there never reaches the context the model is called
from; its interception hooks (``pre_step``/``post_step``) are not dispatched when a task fails, which would
leave a scope open. A wrapper that CrewAI reaches from another wrapper of the same kind and name (a
structured tool running the tool's ``run``) opens nothing more.

Environment: CrewAI pins ``openai`` below 3 (crewai 1.15 installs openai 2.x and pydantic 2.12), so it
cannot share a virtual environment with openai 3.x; tokentrail's own tests run it in a separate one
(``.venv-frameworks``). Its model calls go through the openai SDK (httpx) and are captured as usual.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from tokentrail import scope as _scope
from tokentrail._guard import guard
from tokentrail.integrations import Opened, close_scope, open_scope
from tokentrail.scope import ScopeKind

SITE = "integration.crewai"

_wrapped: list[tuple[type, str, Any]] = []
_enabled = False


def _task_name(task: Any) -> str:
    name = getattr(task, "name", None)
    if not name:
        lines = str(getattr(task, "description", "") or "task").strip().splitlines() or ["task"]
        name = lines[0][:60].rstrip() or "task"
    return str(name)


def _role(agent: Any) -> str:
    return str(getattr(agent, "role", None) or "agent")


def _open(plan: list[tuple[ScopeKind, str]]) -> list[Opened]:
    """Open the planned scopes, innermost last; nothing when the current scopes already are the plan
    (CrewAI re-entering ``execute_task`` on a retry, a structured tool running its tool's ``run``)."""
    opened: list[Opened] = []
    if not _enabled:
        return opened
    with guard(SITE):
        current = _scope._current.get()
        chain = current.chain()[: len(plan)] if current is not None else []
        if [(s.kind, s.name) for s in reversed(chain)] == plan:
            return opened
        for kind, name in plan:
            opened.append(open_scope(kind, name))
    return opened


def _close(opened: list[Opened]) -> None:
    with guard(SITE):
        for one in reversed(opened):
            close_scope(one)


def _wrapper(plan_of: Callable[[Any, tuple[Any, ...], dict[str, Any]], list[tuple[ScopeKind, str]]]) -> Any:
    """A wrapt wrapper running the call inside the scopes ``plan_of(instance, args, kwargs)`` names."""

    def plan(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[ScopeKind, str]]:
        with guard(SITE):
            return plan_of(instance, args, kwargs)
        return []

    def sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        opened = _open(plan(instance, args, kwargs))
        try:
            return wrapped(*args, **kwargs)
        finally:
            _close(opened)

    def asynchronous(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async def run() -> Any:
            opened = _open(plan(instance, args, kwargs))
            try:
                return await wrapped(*args, **kwargs)
            finally:
                _close(opened)

        return run()

    return sync, asynchronous


def _task_plan(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[ScopeKind, str]]:
    task = kwargs.get("task", args[0] if args else None)
    return [(ScopeKind.AGENT, _role(instance)), (ScopeKind.STEP, _task_name(task))]


def _agent_plan(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[ScopeKind, str]]:
    return [(ScopeKind.AGENT, _role(instance))]


def _tool_plan(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[ScopeKind, str]]:
    return [(ScopeKind.TOOL, str(getattr(instance, "name", None) or "tool"))]


def _targets() -> list[tuple[type, str, Any]]:
    from crewai import Agent
    from crewai.tools.base_tool import BaseTool, Tool
    from crewai.tools.structured_tool import CrewStructuredTool

    targets: list[tuple[type, str, Any]] = []
    for cls, methods, plan_of in (
        (Agent, ("execute_task", "aexecute_task"), _task_plan),
        (Agent, ("kickoff", "kickoff_async", "akickoff"), _agent_plan),
        (BaseTool, ("run", "arun"), _tool_plan),
        (Tool, ("run", "arun"), _tool_plan),
        (CrewStructuredTool, ("invoke", "ainvoke"), _tool_plan),
    ):
        sync, asynchronous = _wrapper(plan_of)
        for method in methods:
            original = cls.__dict__.get(method)
            if original is not None:
                targets.append((cls, method, asynchronous if inspect.iscoroutinefunction(original) else sync))
    return targets


def install() -> bool:
    """Wrap CrewAI's agent, task and tool entry points (once); enable them."""
    global _enabled
    import wrapt

    if not _wrapped:
        for cls, method, wrapper in _targets():
            original = cls.__dict__[method]
            setattr(cls, method, wrapt.FunctionWrapper(original, wrapper))
            _wrapped.append((cls, method, original))
    _enabled = True
    return True


def uninstall() -> None:
    """Unwrap every method we wrapped (where our wrapper is still the one in place)."""
    global _enabled
    import wrapt

    _enabled = False
    while _wrapped:
        cls, method, original = _wrapped.pop()
        if isinstance(cls.__dict__.get(method), wrapt.FunctionWrapper):
            setattr(cls, method, original)
