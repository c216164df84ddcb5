"""LangChain and LangGraph: graphs, nodes, named chains and tools become tokentrail scopes.

============================================  ===========================================================
LangChain run                                 tokentrail scope
============================================  ===========================================================
a LangGraph graph (a run whose children are   ``agent``, named after the graph (``compile(name=...)``,
graph nodes), ``AgentExecutor``               default ``LangGraph``)
a LangGraph node (``langgraph_node`` metadata ``step``, named after the node
and a ``graph:step:N`` tag)
a top-level chain given a name (``run_name``, ``step``, named after it
a function's name)
a tool (``on_tool_start``)                    ``tool``, named after the tool
anything else (prompts, parsers, sequences)   nothing: its calls belong to the enclosing scope
============================================  ===========================================================

How: one `BaseCallbackHandler`, added to every callback manager LangChain builds through
`langchain_core.tracers.context.register_configure_hook` (the mechanism LangChain's own tracers use),
keyed by ``run_id``. Callbacks are not lexically nested, so the handler keeps a ``run_id`` → run map and
gives every scope its parent explicitly.

The HTTP hooks read the scope `ContextVar` of the context that sends the request, so the handler must set
it *there*. It is ``run_inline``: LangChain then calls it in the caller's context, for sync managers
(``handle_event``) and async ones (``ahandle_event`` awaits inline handlers in the calling task) alike. A
node or tool scope is made current when its run starts, before LangChain copies the context its body runs
in; a chat model's start makes the scope of its parent run current in the context the model sends from.
Ends differ: sync managers call the handler in the same context (the token resets), but the async run
managers' ``on_*_end``/``on_*_error`` are ``@shielded`` and run the handlers in a task of their own,
where resetting cannot reach the caller. So the async end methods are wrapped (wrapt) to restore the
`ContextVar` synchronously, in the caller's context, before LangChain schedules the handlers.

Graphs are recognised lazily: a run becomes an agent when its first node starts (LangGraph gives the graph
run neither tags nor metadata that say so); a top-level chain that turns out not to be a graph becomes a
step when its first child starts. Neither is ever current in the caller's context: their children are
opened under them explicitly, so a user's context is never left pointing at a finished LangGraph run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from tokentrail import _guard
from tokentrail import scope as _scope
from tokentrail._guard import guard
from tokentrail.integrations import Opened, activate, close_scope, deactivate, live, open_scope
from tokentrail.scope import Scope, ScopeKind

SITE = "integration.langchain"
_AGENT_NAMES = frozenset({"AgentExecutor"})
_MAX_RUNS = 10_000

_handler: Any = None
_var: ContextVar[Any] | None = None
_wrapped: list[tuple[type, str, Any]] = []


class _Run:
    """What the handler knows about one LangChain run."""

    __slots__ = ("agent", "base", "children", "generic", "is_node", "model", "name", "opened", "pending")

    def __init__(self, name: str, base: Scope | None) -> None:
        self.name = name
        self.base = base
        """The scope the run started under: its parent run's, else the caller's current scope."""
        self.opened: Opened | None = None
        """The scope this run opened when it started (tool, node, agent executor)."""
        self.agent: Opened | None = None
        """The agent scope of a run found to be a graph (opened when its first node starts)."""
        self.model: Opened | None = None
        """A model run: its parent's scope, made current in the context the model sends from."""
        self.pending = False
        """A top-level chain: a graph (→ agent) or a named chain (→ step), as its first child tells."""
        self.generic = True
        self.is_node = False
        self.children = 0

    @property
    def scope(self) -> Scope | None:
        """The scope the run's children belong to."""
        for opened in (self.agent, self.opened):
            if opened is not None:
                return opened.scope
        return self.base


def _is_generic(name: str, serialized: dict[str, Any] | None) -> bool:
    """A name LangChain made up from a class (``RunnableSequence``), not one a user gave."""
    if name.startswith("Runnable") or name in ("LangGraph", "chain"):
        return True
    ident = (serialized or {}).get("id")
    return isinstance(ident, list) and bool(ident) and name == ident[-1]


def _is_node(name: str, tags: list[str] | None, metadata: dict[str, Any] | None) -> bool:
    """A LangGraph node's own run (its inner runs inherit the metadata, not the tag)."""
    return (
        metadata is not None
        and metadata.get("langgraph_node") == name
        and any(isinstance(t, str) and t.startswith("graph:step:") for t in tags or ())
    )


def _within(scope: Scope | None, ancestor: Scope | None) -> bool:
    """``scope`` is ``ancestor`` or one of its descendants."""
    if scope is None or ancestor is None:
        return scope is ancestor
    return scope is ancestor or scope.id_path.startswith(ancestor.id_path + "/")


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name") or (serialized or {}).get("name")
    return str(name) if name else default


class _State:
    """The run map, shared by the handler and the async end wrappers."""

    def __init__(self) -> None:
        self.enabled = True
        self.lock = threading.Lock()
        self.runs: OrderedDict[UUID, _Run] = OrderedDict()

    def get(self, run_id: UUID | None) -> _Run | None:
        if run_id is None:
            return None
        with self.lock:
            return self.runs.get(run_id)

    def start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        *,
        kind: str = "chain",
        serialized: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        node = kind == "chain" and _is_node(name, tags, metadata)
        parent = self.get(parent_run_id)
        current = live(_scope._current.get())
        if parent is not None:
            self._first_child(parent, node)
            # Under the parent run's scope, or a scope the program opened inside it (a `tokentrail.step`
            # in a node's function).
            base = current if _within(current, parent.scope) else parent.scope
        else:
            base = current
        run = _Run(name, base)
        if kind == "model":
            # The model sends from this context; a graph or named chain is never current by itself.
            if base is not None and base is not current:
                run.model = Opened(base, None)
                activate(run.model)
        elif kind == "tool":
            run.opened = open_scope(ScopeKind.TOOL, name, base)
        elif node:
            run.is_node = True
            run.opened = open_scope(ScopeKind.STEP, name, base)
        elif name in _AGENT_NAMES:
            run.opened = open_scope(ScopeKind.AGENT, name, base)
        elif parent is None:
            run.pending = True
            run.generic = _is_generic(name, serialized)
        with self.lock:
            self.runs[run_id] = run
            while len(self.runs) > _MAX_RUNS:  # runs that never ended (abandoned streams)
                self.runs.popitem(last=False)

    @staticmethod
    def _first_child(parent: _Run, node: bool) -> None:
        """A run's first child tells a graph (its children are nodes) from a chain."""
        parent.children += 1
        if parent.children > 1:
            return
        if node and parent.agent is None and (parent.opened is None or parent.is_node):
            # A graph (or a subgraph added as a node, under the node's step): an agent.
            parent.agent = open_scope(ScopeKind.AGENT, parent.name, parent.scope, activate=False)
        elif parent.pending and not parent.generic:
            parent.opened = open_scope(ScopeKind.STEP, parent.name, parent.base, activate=False)
        parent.pending = False

    def leave(self, run_id: UUID) -> None:
        """Restore the calling context: an async run manager's end, before it schedules the handlers."""
        run = self.get(run_id)
        if run is not None:
            for opened in (run.model, run.opened):
                if opened is not None:
                    deactivate(opened)

    def end(self, run_id: UUID) -> None:
        with self.lock:
            run = self.runs.pop(run_id, None)
        if run is None:
            return
        if run.model is not None:
            deactivate(run.model)
        for opened in (run.agent, run.opened):
            if opened is not None:
                close_scope(opened)


def _make_handler() -> Any:
    from langchain_core.callbacks import BaseCallbackHandler

    class TokentrailCallbackHandler(BaseCallbackHandler):
        """Opens tokentrail scopes for LangChain runs (see `tokentrail.integrations.langchain`)."""

        run_inline = True  # called in the caller's context, sync and async managers alike

        def __init__(self) -> None:
            self.state = _State()

        @property
        def raise_error(self) -> bool:  # type: ignore[override]
            # Our own test suite wants to see our errors; users' runs never do (STYLE.md §5).
            return _guard._strict()

        @property
        def ignore_retriever(self) -> bool:
            return True

        @property
        def ignore_retry(self) -> bool:
            return True

        @property
        def ignore_custom_event(self) -> bool:
            return True

        def on_chain_start(
            self,
            serialized: dict[str, Any] | None,
            inputs: Any,
            *,
            run_id: UUID,
            parent_run_id: UUID | None = None,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if self.state.enabled:
                with guard(SITE):
                    name = _name(serialized, kwargs, "chain")
                    self.state.start(run_id, parent_run_id, name, serialized=serialized, tags=tags, metadata=metadata)

        def on_tool_start(
            self,
            serialized: dict[str, Any] | None,
            input_str: str,
            *,
            run_id: UUID,
            parent_run_id: UUID | None = None,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if self.state.enabled:
                with guard(SITE):
                    self.state.start(run_id, parent_run_id, _name(serialized, kwargs, "tool"), kind="tool")

        def on_chat_model_start(
            self,
            serialized: dict[str, Any] | None,
            messages: Any,
            *,
            run_id: UUID,
            parent_run_id: UUID | None = None,
            **kwargs: Any,
        ) -> None:
            if self.state.enabled:
                with guard(SITE):
                    self.state.start(run_id, parent_run_id, "model", kind="model")

        def on_llm_start(
            self,
            serialized: dict[str, Any] | None,
            prompts: Any,
            *,
            run_id: UUID,
            parent_run_id: UUID | None = None,
            **kwargs: Any,
        ) -> None:
            if self.state.enabled:
                with guard(SITE):
                    self.state.start(run_id, parent_run_id, "model", kind="model")

        def _end(self, run_id: UUID) -> None:
            with guard(SITE):
                self.state.end(run_id)

        def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
            self._end(run_id)

        def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            self._end(run_id)

        def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
            self._end(run_id)

        def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            self._end(run_id)

        def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
            self._end(run_id)

        def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
            self._end(run_id)

    return TokentrailCallbackHandler()


def _leave_first(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An async run manager's end: restore the caller's context now, then let LangChain go on."""
    handler = _handler
    if handler is not None:
        with guard(SITE):
            handler.state.leave(instance.run_id)
    return wrapped(*args, **kwargs)


_ASYNC_ENDS = (
    ("AsyncCallbackManagerForChainRun", ("on_chain_end", "on_chain_error")),
    ("AsyncCallbackManagerForToolRun", ("on_tool_end", "on_tool_error")),
    ("AsyncCallbackManagerForLLMRun", ("on_llm_end", "on_llm_error")),
)


def install() -> bool:
    """Add the handler to every LangChain callback manager; wrap the async run managers' ends."""
    global _handler, _var
    import wrapt
    from langchain_core.callbacks import manager
    from langchain_core.tracers.context import register_configure_hook

    if _handler is None:
        _handler = _make_handler()
    _handler.state.enabled = True
    if _var is None:
        # The default makes the handler present in every context and thread, with nothing to set.
        _var = ContextVar("tokentrail_langchain_handler", default=_handler)
        register_configure_hook(_var, inheritable=True)
    if not _wrapped:
        for cls_name, methods in _ASYNC_ENDS:
            cls = getattr(manager, cls_name)
            for method in methods:
                original = cls.__dict__[method]
                setattr(cls, method, wrapt.FunctionWrapper(original, _leave_first))
                _wrapped.append((cls, method, original))
    return True


def uninstall() -> None:
    """Make the handler inert and unwrap the async run managers.

    LangChain has no way to unregister a configure hook: the handler stays in the callback managers,
    doing nothing, until `install()` enables it again.
    """
    import wrapt

    if _handler is not None:
        _handler.state.enabled = False  # runs already started still end (and close their scopes)
    while _wrapped:
        cls, method, original = _wrapped.pop()
        if isinstance(cls.__dict__.get(method), wrapt.FunctionWrapper):
            setattr(cls, method, original)


def handler() -> Any:
    """The handler (None before `install()`): to pass by hand where a program builds its own managers."""
    return _handler
