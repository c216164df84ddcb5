"""Live totals of a batch of calls: summed per (scope, model), added up the tree once per group."""

from __future__ import annotations

from decimal import Decimal

from tokentrail import scope as scopes
from tokentrail.records import Cost
from tokentrail.usage import REPORTED, Provenance, Source, Usage


def _usage(n: int) -> Usage:
    return Usage(input_tokens=n, output_tokens=1)


def test_a_batch_counts_as_its_calls_one_by_one() -> None:
    run = scopes._new_scope(scopes.ScopeKind.RUN, "r", None, {})
    agent = scopes._new_scope(scopes.ScopeKind.AGENT, "planner", run, {})
    step = scopes._new_scope(scopes.ScopeKind.STEP, "plan", agent, {})
    other = scopes._new_scope(scopes.ScopeKind.AGENT, "judge", run, {})
    one_by_one_run = scopes._new_scope(scopes.ScopeKind.RUN, "r2", None, {})
    calls = [
        (step, _usage(10), REPORTED, "m1", Cost(pico=10**11)),
        (other, _usage(20), REPORTED, "m1", None),
        (step, _usage(30), Provenance(input=Source.ESTIMATED, output=Source.REPORTED), "m2", Cost(pico=2 * 10**11)),
        (step, _usage(40), REPORTED, "m1", Cost(decimal=Decimal("0.3"))),
        (other, Usage(), Provenance(), None, None),
    ]
    scopes.add_calls(calls)
    for _, usage, provenance, model, cost in calls:
        scopes.add_calls([(one_by_one_run, usage, provenance, model, cost)])

    assert run._totals.snapshot() == one_by_one_run._totals.snapshot()
    assert run._totals.snapshot().input_tokens == 100 and run._totals.snapshot().calls == 5
    assert (run._totals.cost, run._totals.calls_without_cost) == (Decimal("0.6"), 2)
    assert run._totals.by_model == one_by_one_run._totals.by_model
    # The latest call under each scope, in the order the calls finished.
    assert run._totals.last == Usage() and other._totals.last == Usage()
    assert step._totals.last == _usage(40) and agent._totals.last == _usage(40)
    assert step._totals.snapshot().calls == 3 and agent._totals.snapshot().calls == 3
