"""OpenAI Agents SDK (``openai-agents``): traces, agents, tools, handoffs and guardrails become scopes.

==========================  =====================================================================
Agents SDK                  tokentrail scope
==========================  =====================================================================
trace                       ``run``, named after the trace's ``workflow_name``
``AgentSpanData``           ``agent``, named after the agent
``FunctionSpanData``        ``tool``, named after the function tool (or MCP tool)
``HandoffSpanData``         ``tool`` named ``handoff`` (the hand-off callback's calls, if any)
``GuardrailSpanData``       ``step``, named after the guardrail
other spans                 nothing (model calls are recorded by the HTTP hooks, under the agent)
==========================  =====================================================================

How: a `TracingProcessor` added with ``agents.add_trace_processor`` (public API, beside the SDK's own
exporter, which it leaves alone). The SDK starts and finishes every span and trace in the context (task)
that runs the work it describes: it keeps its own current span in a `ContextVar` the same way and resets it
right after ``on_span_end``. So ``on_span_start`` makes the new scope current in that context, the model
call the SDK makes next reads it there, and ``on_span_end`` resets it. Scopes nest the way the SDK's own
spans do, under whatever scope was current when the run began.

Limits: with tracing disabled (``OPENAI_AGENTS_DISABLE_TRACING=1``, ``RunConfig(tracing_disabled=True)``
or ``agents.set_tracing_disabled(True)``) the SDK sends no span to any processor, so calls keep only the
scopes the program opened itself. ``agents.set_trace_processors([...])`` replaces every processor, this
one included: `tokentrail.integrations.install()` adds it back, or pass `processor()` in the list.
"""

from __future__ import annotations

import threading
from typing import Any

from tokentrail._guard import guard
from tokentrail.integrations import Opened, close_scope, open_scope
from tokentrail.scope import ScopeKind

SITE = "integration.openai_agents"

_processor: Any = None
_registered = False


def _kind(span_data: Any) -> tuple[ScopeKind, str] | None:
    """The scope a span opens, by the class name of its data (the SDK's own ``type`` strings)."""
    kind = getattr(span_data, "type", None)
    if kind == "agent":
        return ScopeKind.AGENT, str(span_data.name)
    if kind == "function":
        return ScopeKind.TOOL, str(span_data.name)
    if kind == "handoff":
        return ScopeKind.TOOL, "handoff"
    if kind == "guardrail":
        return ScopeKind.STEP, str(span_data.name)
    return None


def _make_processor() -> Any:
    from agents.tracing import TracingProcessor

    class TokentrailProcessor(TracingProcessor):
        """Opens tokentrail scopes for Agents SDK traces and spans (see the module docstring)."""

        def __init__(self) -> None:
            self.enabled = True
            self._lock = threading.Lock()
            self._open: dict[str, Opened] = {}

        def _start(self, key: str, kind: ScopeKind, name: str) -> None:
            opened = open_scope(kind, name)
            with self._lock:
                self._open[key] = opened

        def _end(self, key: str) -> None:
            with self._lock:
                opened = self._open.pop(key, None)
            if opened is not None:
                close_scope(opened)

        def on_trace_start(self, trace: Any) -> None:
            if self.enabled:
                with guard(SITE):
                    self._start(f"trace:{trace.trace_id}", ScopeKind.RUN, str(trace.name or "workflow"))

        def on_trace_end(self, trace: Any) -> None:
            with guard(SITE):
                self._end(f"trace:{trace.trace_id}")

        def on_span_start(self, span: Any) -> None:
            if self.enabled:
                with guard(SITE):
                    if (what := _kind(span.span_data)) is not None:
                        self._start(f"span:{span.span_id}", *what)

        def on_span_end(self, span: Any) -> None:
            with guard(SITE):
                self._end(f"span:{span.span_id}")

        def shutdown(self) -> None:
            with self._lock:
                self._open.clear()

        def force_flush(self) -> None:
            return None

    return TokentrailProcessor()


def install() -> bool:
    """Register the processor beside the SDK's own (once per process); enable it."""
    global _processor, _registered
    import agents

    if _processor is None:
        _processor = _make_processor()
    _processor.enabled = True
    if not _still_registered():
        agents.add_trace_processor(_processor)
        _registered = True
    return True


def _still_registered() -> bool:
    """Whether the provider still holds our processor (``set_trace_processors`` drops it)."""
    from agents.tracing import get_trace_provider

    held = getattr(getattr(get_trace_provider(), "_multi_processor", None), "_processors", None)
    return _registered if held is None else any(p is _processor for p in held)


def uninstall() -> None:
    """Make the processor inert (the SDK has no way to remove one processor)."""
    if _processor is not None:
        _processor.enabled = False


def processor() -> Any:
    """The processor (None before `install()`), for ``agents.set_trace_processors([..., processor()])``."""
    return _processor
