"""tokentrail: account for every token and every dollar an LLM application spends.

    import tokentrail
    tokentrail.instrument()                 # every LLM HTTP call in the process is now recorded
    with tokentrail.run("trial-7") as run:
        with tokentrail.agent("planner"):
            client.chat.completions.create(...)
    print(run.usage, run.summary())
"""

from __future__ import annotations

from tokentrail._instrument import Instrumentation, flush, instrument, subscribe, uninstrument
from tokentrail.errors import BudgetExceeded, ConfigError, StoreError, TokentrailError
from tokentrail.records import CallRecord, CallStatus
from tokentrail.scope import Scope, ScopeHandle, agent, current_scope, run, step, tool
from tokentrail.usage import Provenance, Source, Usage, UsageTotals

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "CallRecord",
    "CallStatus",
    "ConfigError",
    "Instrumentation",
    "Provenance",
    "Scope",
    "ScopeHandle",
    "Source",
    "StoreError",
    "TokentrailError",
    "Usage",
    "UsageTotals",
    "agent",
    "current_scope",
    "flush",
    "instrument",
    "run",
    "step",
    "subscribe",
    "tool",
    "uninstrument",
]
