"""Scopes: which part of the program made a call.

A scope is a node in a tree — ``run`` → ``agent`` → ``step`` → ``tool``, nested freely. The current scope
lives in the one `ContextVar` of the package, so asyncio tasks inherit it; `tokentrail.propagate` carries
it into threads. `run()`, `agent()`, `step()` and `tool()` return a `ScopeHandle`, which is a sync and
async context manager and a decorator, and which reads the scope's live totals while it is open and
after.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from operator import itemgetter
from typing import Any, TypeVar

from msgspec.structs import astuple

from tokentrail.records import PICO, Cost
from tokentrail.usage import REPORTED, Provenance, Usage, UsageTotals, totals_row
from tokentrail.usage import TOTAL_KEYS as _TOTAL_KEYS

F = TypeVar("F", bound=Callable[..., Any])


class ScopeKind(StrEnum):
    RUN = "run"
    AGENT = "agent"
    STEP = "step"
    TOOL = "tool"


class _Totals:
    """Mutable running sums of one scope; only touched under `_totals_lock`."""

    __slots__ = ("by_agent", "by_model", "calls_without_cost", "cost", "last", "sums")

    def __init__(self, breakdowns: bool) -> None:
        self.sums = [0] * len(_TOTAL_KEYS)
        self.cost = Decimal(0)
        self.calls_without_cost = 0
        self.last: Usage | None = None
        self.by_model: dict[str, list[int]] | None = {} if breakdowns else None
        self.by_agent: dict[str, list[int]] | None = {} if breakdowns else None

    def snapshot(self) -> UsageTotals:
        return UsageTotals(**dict(zip(_TOTAL_KEYS, self.sums, strict=True)))


_totals_lock = threading.RLock()


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Scope:
    """The identity of one opened scope. Hashable by identity; live totals sit beside it."""

    id: str
    kind: ScopeKind
    name: str
    parent: Scope | None = None
    tags: dict[str, str] = field(default_factory=dict)
    started_ns: int = 0
    pid: int = 0
    id_path: str = ""
    """Ids from the root, joined by ``/``: "everything under X" is one prefix query."""
    name_path: str = ""
    """Names from the root, joined by ``/``, for display."""
    run: Scope | None = None
    """The root ``run`` scope (itself for a run)."""
    agent: str | None = None
    step: str | None = None
    tool: str | None = None
    _totals: _Totals = field(default_factory=lambda: _Totals(False), repr=False)

    def chain(self) -> list[Scope]:
        """This scope and its ancestors, nearest first."""
        out: list[Scope] = []
        node: Scope | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out


def _new_scope(kind: ScopeKind, name: str, parent: Scope | None, tags: dict[str, str], sid: str | None = None) -> Scope:
    from tokentrail.records import new_id

    sid = sid or new_id()
    if parent is None:
        id_path, name_path = sid, name
    else:
        id_path, name_path = f"{parent.id_path}/{sid}", f"{parent.name_path}/{name}"
    inherited = parent
    scope = Scope(
        id=sid,
        kind=kind,
        name=name,
        parent=parent,
        tags={**(inherited.tags if inherited else {}), **{k: str(v) for k, v in tags.items()}},
        started_ns=time.time_ns(),
        pid=os.getpid(),
        id_path=id_path,
        name_path=name_path,
        agent=name if kind is ScopeKind.AGENT else (inherited.agent if inherited else None),
        step=name if kind is ScopeKind.STEP else (inherited.step if inherited else None),
        tool=name if kind is ScopeKind.TOOL else (inherited.tool if inherited else None),
        _totals=_Totals(breakdowns=True),
    )
    # A run nested in another run is still a run of its own: the root of what it reports.
    object.__setattr__(scope, "run", scope if kind is ScopeKind.RUN or parent is None else parent.run)
    return scope


def rebuild(
    sid: str,
    kind: ScopeKind,
    name: str,
    parent: Scope | None,
    tags: dict[str, str] | None = None,
    *,
    started_ns: int | None = None,
    pid: int | None = None,
) -> Scope:
    """A scope of another process (a parent passing its scope down), with its original id and, when
    given, its original start time and pid (so that its stored row is the same whoever writes it)."""
    scope = _new_scope(kind, name, parent, tags or {}, sid=sid)
    if started_ns is not None:
        object.__setattr__(scope, "started_ns", started_ns)
    if pid is not None:
        object.__setattr__(scope, "pid", pid)
    return scope


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("tokentrail_scope", default=None)
_default_run: Scope | None = None
_default_lock = threading.Lock()
_listeners: list[Callable[[str, Scope], None]] = []
"""Called with ("open" | "close", scope); the sink pipeline registers itself here."""


def default_run() -> Scope:
    """The scope of calls made outside any `run()`: one run per process invocation, named by
    ``$TOKENTRAIL_RUN`` (else ``default``), or the scope a parent process passed down."""
    global _default_run
    if _default_run is None:
        with _default_lock:
            if _default_run is None:
                # A child process started by a parent that passed its scope down continues that
                # scope; otherwise each process invocation gets a run of its own.
                inherited = _inherited_parent()
                if inherited is None:
                    name = os.environ.get("TOKENTRAIL_RUN") or "default"
                    inherited = _new_scope(ScopeKind.RUN, name, None, {})
                    _notify("open", inherited)
                    # A launcher can name the agent of a whole process (job arrays, worker pools).
                    agent_name = os.environ.get("TOKENTRAIL_AGENT")
                    if agent_name:
                        inherited = _new_scope(ScopeKind.AGENT, agent_name, inherited, {})
                        _notify("open", inherited)
                _default_run = inherited
    return _default_run


def _inherited_parent() -> Scope | None:
    """The scope a parent process passed down (see `tokentrail.propagate`), if any."""
    from tokentrail import propagate

    return propagate.inherited_scope()


def current_scope() -> Scope:
    """The innermost open scope, or this process's default run."""
    return _current.get() or default_run()


def _notify(event: str, scope: Scope) -> None:
    for listener in _listeners:
        listener(event, scope)


Call = tuple["Scope", Usage, Provenance, "str | None", "Cost | None"]
"""A finished call for the live totals: (scope, usage, provenance, model, cost or ``None``)."""


def add_calls(calls: list[Call]) -> None:
    """Add finished calls (in the order they finished) to the live totals of their scopes and the
    scopes' ancestors.

    The calls are grouped per (scope, model) and each group summed at once (in C for the common
    group: every count known, as reported); each sum is added once to every scope up to the run: a
    scope tree four levels deep costs four additions per group, not per call.
    """
    groups: dict[tuple[Scope, str | None], list[Call]] = {}
    for call in calls:
        key = call[0], call[3]
        members = groups.get(key)
        if members is None:
            groups[key] = [call]
        else:
            members.append(call)
    if len(groups) > 1:
        # Each scope's `last` is the latest call under it: groups are added in the order their last
        # calls finished, so the latest call of all is set last.
        last = {(call[0], call[3]): seq for seq, call in enumerate(calls)}
        ordered = sorted(groups.items(), key=lambda item: last[item[0]])
    else:
        ordered = list(groups.items())
    summed = [(scope, model, members[-1][1], *_group_sums(members)) for (scope, model), members in ordered]
    with _totals_lock:
        for scope, model, latest, sums, cost, without_cost in summed:
            agent = scope.agent
            node: Scope | None = scope
            while node is not None:
                totals = node._totals
                _add(totals.sums, sums)
                totals.last = latest
                totals.calls_without_cost += without_cost
                totals.cost += cost
                if totals.by_model is not None and totals.by_agent is not None:
                    _add_to(totals.by_model, model or "unknown", sums)
                    if agent is not None:
                        _add_to(totals.by_agent, agent, sums)
                node = node.parent


def _group_sums(members: list[Call]) -> tuple[tuple[int, ...], Decimal, int]:
    """The `totals_row` sum of calls, their summed cost and how many have no cost."""
    # Not costs.count(None): it compares every Decimal with None (~2,000 instructions a call).
    costs = [call[4] for call in members if call[4] is not None]
    without_cost = len(members) - len(costs)
    picos = [c.pico for c in costs]
    if None in picos:  # some priced as a Decimal (a tiered or reported price): summed as Decimals
        cost = sum([c.amount for c in costs], _NO_COST)
    else:  # summed as integers, one Decimal made for the group (~500 instructions a call less)
        cost = Decimal(sum(picos)) / PICO if picos else _NO_COST
    if set(map(id, map(_PROVENANCE, members))) <= _SIMPLE:  # by identity: hashing a Struct costs more
        columns = list(zip(*map(astuple, [call[1] for call in members]), strict=True))
        if None not in columns[0] and None not in columns[1]:  # every input and output count known
            inp, out, read, write, reasoning = (sum(filter(None, column)) for column in columns)
            return (len(members), inp, out, read, write, reasoning, inp + out, 0, 0), cost, without_cost
    sums = [0] * len(_TOTAL_KEYS)
    for call in members:
        _add(sums, totals_row(call[1], call[2]))
    return tuple(sums), cost, without_cost


_SIMPLE = {id(REPORTED)}
"""Provenances whose counts are summed as they are (neither partial nor counted nor estimated)."""
_PROVENANCE = itemgetter(2)
_NO_COST = Decimal(0)


def _add(sums: list[int], delta: tuple[int, ...]) -> None:
    sums[:] = map(int.__add__, sums, delta)  # in C: a Python loop over the nine sums costs several µs


def _add_to(breakdown: dict[str, list[int]], key: str, delta: tuple[int, ...]) -> None:
    sums = breakdown.get(key)
    if sums is None:
        breakdown[key] = list(delta)
    else:
        _add(sums, delta)


def _pending_sync() -> None:
    """Process records captured but not yet parsed, so live totals include every finished call."""
    from tokentrail.sinks import pipeline

    pipeline.process_pending()


class ScopeHandle:
    """A scope to open: a context manager (sync and async) and a decorator.

    Used as a decorator, every call of the function opens a fresh scope of the same kind and name.
    Read ``usage``, ``last`` and ``summary()`` on the handle while it is open or after it closed.
    """

    def __init__(self, kind: ScopeKind, name: str, tags: dict[str, Any]) -> None:
        self.kind = kind
        self.name = name
        self.tags = tags
        self._scope: Scope | None = None
        """The scope it opened last."""
        self._open: list[tuple[Scope, contextvars.Token[Scope | None]]] = []
        """Each entry not yet exited: a handle may be entered again while open (nested, or by
        several tasks at once), and each exit closes its own."""

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> ScopeHandle:
        scope = self._opened()
        self._open.append((scope, _current.set(scope)))
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._open:
            return
        current = _current.get()
        # The entry this context made is the one whose scope is current here (each task has its own
        # context); else the latest (exited in another context: a generator finished by another task).
        at = next((i for i in range(len(self._open) - 1, -1, -1) if self._open[i][0] is current), -1)
        scope, token = self._open.pop(at)
        try:
            _current.reset(token)
        except ValueError:
            _current.set(scope.parent)  # another context than the one entered: the scope still closes
        _notify("close", scope)

    async def __aenter__(self) -> ScopeHandle:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def _opened(self) -> Scope:
        """A new scope of this handle's, under the current one, announced."""
        parent = _current.get()
        if parent is None and self.kind is not ScopeKind.RUN:
            parent = default_run()
        scope = self._scope = _new_scope(self.kind, self.name, parent, self.tags)
        _notify("open", scope)
        return scope

    # -- decorator -------------------------------------------------------------------------------
    def __call__(self, fn: F) -> F:
        kind, name, tags = self.kind, self.name, self.tags
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                async for item in _scoped_async_steps(ScopeHandle(kind, name, tags), fn(*args, **kwargs)):
                    yield item

            return async_gen_wrapper  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                return (yield from _scoped_steps(ScopeHandle(kind, name, tags), fn(*args, **kwargs)))

            return gen_wrapper  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with ScopeHandle(kind, name, tags):
                    return await fn(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with ScopeHandle(kind, name, tags):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # -- live totals -----------------------------------------------------------------------------
    @property
    def scope(self) -> Scope:
        """The opened scope (raises `RuntimeError` before the handle was entered)."""
        if self._scope is None:
            raise RuntimeError(f"{self.kind} {self.name!r} has not been opened yet")
        return self._scope

    @property
    def usage(self) -> UsageTotals:
        """Cumulative totals of the scope, its children included."""
        _pending_sync()
        with _totals_lock:
            return self.scope._totals.snapshot()

    @property
    def last(self) -> Usage | None:
        """The usage of the latest call made in the scope or its children."""
        _pending_sync()
        with _totals_lock:
            return self.scope._totals.last

    @property
    def cost(self) -> Decimal | None:
        """Known cost so far in USD, or ``None`` if no call could be priced."""
        _pending_sync()
        with _totals_lock:
            t = self.scope._totals
            return None if t.calls_without_cost == t.sums[0] and t.sums[0] else t.cost

    def stored_usage(self) -> UsageTotals:
        """Totals of the scope and its children from the ledger, child processes included.

        Flushes this process first; other processes' records count once they have written them
        (workers flush when they end). Raises `RuntimeError` when capture is off.
        """
        from tokentrail import _instrument, report
        from tokentrail.sinks.sqlite import connect

        path = _instrument.ledger_path()
        if path is None:
            raise RuntimeError("stored_usage() reads the ledger: call tokentrail.instrument() first")
        _instrument.flush()
        db = connect(path, readonly=True)
        try:
            return report.subtree_totals(db, self.scope.id_path)
        finally:
            db.close()

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary for trial logs: totals, cost, calls by model and per-agent totals.

        Covers calls finished in this process up to now (``flush()`` is not needed).
        """
        _pending_sync()
        scope = self.scope
        with _totals_lock:
            t = scope._totals
            totals = t.snapshot().as_dict()
            by_model = {m: dict(zip(_TOTAL_KEYS, v, strict=True)) for m, v in (t.by_model or {}).items()}
            by_agent = {a: dict(zip(_TOTAL_KEYS, v, strict=True)) for a, v in (t.by_agent or {}).items()}
            priced = t.sums[0] - t.calls_without_cost
            cost = str(t.cost) if priced else None
            calls_without_cost = t.calls_without_cost
        return {
            "scope": scope.kind.value,
            "name": scope.name,
            "id": scope.id,
            "total_calls": totals.pop("calls"),
            **totals,
            "cost_usd": cost,
            "calls_without_cost": calls_without_cost,
            "calls_by_model": {m: v["calls"] for m, v in by_model.items()},
            "by_model": by_model,
            "by_agent": by_agent,
        }

    def __repr__(self) -> str:
        state = "open" if self._open else ("closed" if self._scope else "new")
        return f"<tokentrail {self.kind.value} {self.name!r} {state}>"


class _StepScope:
    """The scope a decorated generator's steps run in: set for a step, reset after it. What a step
    left current (a ``with`` of the generator's spanning a yield) is current again at the next."""

    __slots__ = ("inner",)

    def __init__(self, scope: Scope) -> None:
        self.inner: Scope | None = scope

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        token = _current.set(self.inner)
        try:
            yield
        finally:
            self.inner = _current.get()
            _current.reset(token)


def _scoped_steps(handle: ScopeHandle, steps: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """``yield from steps``, each step run in ``handle``'s scope, opened at the first step and closed
    at the last. Only the steps: between them the consumer's code runs in its own scope, as a
    function's caller does (a scope set in a generator would otherwise stay set in its consumer)."""
    scope = handle._opened()
    within = _StepScope(scope)
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            try:
                with within.step():
                    item = steps.throw(thrown) if thrown is not None else steps.send(sent)
            except StopIteration as stop:
                return stop.value
            sent, thrown = None, None
            try:
                sent = yield item
            except GeneratorExit:
                with within.step():
                    steps.close()
                raise
            except BaseException as exc:
                thrown = exc
    finally:
        _notify("close", scope)


async def _scoped_async_steps(handle: ScopeHandle, steps: AsyncGenerator[Any, Any]) -> AsyncGenerator[Any, Any]:
    """`_scoped_steps` for an async generator."""
    scope = handle._opened()
    within = _StepScope(scope)
    sent: Any = None
    thrown: BaseException | None = None
    try:
        while True:
            try:
                with within.step():
                    item = await (steps.athrow(thrown) if thrown is not None else steps.asend(sent))
            except StopAsyncIteration:
                return
            sent, thrown = None, None
            try:
                sent = yield item
            except GeneratorExit:
                with within.step():
                    await steps.aclose()
                raise
            except BaseException as exc:
                thrown = exc
    finally:
        _notify("close", scope)


def run(name: str, **tags: Any) -> ScopeHandle:
    """A run: one trial, session or request; the root of a scope tree. Tags are stored with it."""
    return ScopeHandle(ScopeKind.RUN, name, tags)


def agent(name: str, **tags: Any) -> ScopeHandle:
    """An agent inside the current run."""
    return ScopeHandle(ScopeKind.AGENT, name, tags)


def step(name: str, **tags: Any) -> ScopeHandle:
    """A step inside the current agent or run."""
    return ScopeHandle(ScopeKind.STEP, name, tags)


def tool(name: str, **tags: Any) -> ScopeHandle:
    """A tool invocation; calls its implementation makes are attributed to it."""
    return ScopeHandle(ScopeKind.TOOL, name, tags)


def _reset_after_fork() -> None:
    global _totals_lock, _default_lock
    _totals_lock = threading.RLock()
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
