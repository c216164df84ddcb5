"""pydantic-ai: agent runs and tool calls become ``agent`` and ``tool`` scopes.

=============================  ======================================================================
pydantic-ai                    tokentrail scope
=============================  ======================================================================
an agent run (``run``,         ``agent``, named after the agent (``Agent(name=...)``, else the name
``run_sync``, ``run_stream``,  pydantic-ai infers from the variable holding it, else ``agent``)
``iter``)
a tool call                    ``tool``, named after the tool
=============================  ======================================================================

How: a capability (pydantic-ai's public extension point) whose ``wrap_run`` and ``wrap_tool_execute``
open the scope around the handler they are given. pydantic-ai documents that `ContextVar` values set in
``wrap_run`` before calling the handler are ambient in the run (model requests, tool tasks and the caller's
``async with agent.iter(...)`` block), which is exactly where the HTTP hooks read the scope. Every run gets
the capability through the ``capabilities=`` argument of ``Agent.iter``, which ``run``, ``run_sync`` and
``run_stream`` all go through: ``Agent.iter`` is wrapped (wrapt) to add it, so agents built before
`install()` are covered too and no agent's own configuration changes.

A pydantic-ai agent called inside a tool of another (delegation) gets an ``agent`` scope under that tool.
"""

from __future__ import annotations

from typing import Any

from tokentrail._guard import guard
from tokentrail.integrations import Opened, close_scope, open_scope
from tokentrail.scope import ScopeKind

SITE = "integration.pydantic_ai"

_capability_class: Any = None
_wrapped: tuple[type, Any] | None = None
_enabled = False


def _name(ctx: Any) -> str:
    agent = getattr(ctx, "agent", None)
    return str(getattr(agent, "name", None) or "agent")


def _open(kind: ScopeKind, name_of: Any, *args: Any) -> Opened | None:
    if not _enabled:
        return None
    with guard(SITE):
        return open_scope(kind, name_of(*args))
    return None


def _close(opened: Opened | None) -> None:
    if opened is not None:
        with guard(SITE):
            close_scope(opened)


def _make_capability_class() -> type:
    from pydantic_ai.capabilities import AbstractCapability

    class TokentrailCapability(AbstractCapability[Any]):
        """Names the scopes of a pydantic-ai run and its tool calls (see `tokentrail.integrations.pydantic_ai`)."""

        async def wrap_run(self, ctx: Any, *, handler: Any) -> Any:
            opened = _open(ScopeKind.AGENT, _name, ctx)
            try:
                return await handler()
            finally:
                _close(opened)

        async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any, handler: Any) -> Any:
            opened = _open(ScopeKind.TOOL, lambda: str(getattr(call, "tool_name", None) or tool_def.name))
            try:
                return await handler(args)
            finally:
                _close(opened)

    return TokentrailCapability


def _add_capability(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Agent.iter``: add ours to the run's capabilities (unless the caller passed one already)."""
    if _enabled:
        with guard(SITE):
            given = list(kwargs.get("capabilities") or ())
            if not any(isinstance(c, _capability_class) for c in given):
                kwargs["capabilities"] = [*given, _capability_class()]
    return wrapped(*args, **kwargs)


def install() -> bool:
    """Wrap ``Agent.iter`` so every run carries the capability."""
    global _capability_class, _wrapped, _enabled
    import wrapt
    from pydantic_ai import Agent

    if _capability_class is None:
        _capability_class = _make_capability_class()
    if _wrapped is None:
        original = Agent.__dict__["iter"]
        Agent.iter = wrapt.FunctionWrapper(original, _add_capability)  # type: ignore[method-assign]
        _wrapped = (Agent, original)
    _enabled = True
    return True


def uninstall() -> None:
    """Unwrap ``Agent.iter``; runs already going keep their capability, which stops opening scopes."""
    global _wrapped, _enabled
    import wrapt

    _enabled = False
    if _wrapped is not None:
        cls, original = _wrapped
        if isinstance(cls.__dict__.get("iter"), wrapt.FunctionWrapper):
            cls.iter = original
        _wrapped = None
