"""Usage, UsageTotals and Provenance: the values every other module adds up."""

from __future__ import annotations

from functools import reduce
from operator import add

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.usage import (
    MISSING,
    REPORTED,
    TOKEN_FIELDS,
    ZERO,
    Provenance,
    Source,
    Usage,
    UsageTotals,
    weakest,
)

from .strategies import provenances, sources, totals, usages

# -- UsageTotals addition ------------------------------------------------------------------------


@settings(max_examples=100)
@given(totals(), totals(), totals())
def test_addition_is_associative(a: UsageTotals, b: UsageTotals, c: UsageTotals) -> None:
    assert (a + b) + c == a + (b + c)


@settings(max_examples=100)
@given(totals())
def test_zero_is_the_identity(a: UsageTotals) -> None:
    assert a + ZERO == a
    assert ZERO + a == a


@settings(max_examples=100)
@given(totals(), totals())
def test_addition_is_commutative(a: UsageTotals, b: UsageTotals) -> None:
    assert a + b == b + a


def test_adding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        ZERO + 1  # type: ignore[operator]


# -- UsageTotals.of: one call ---------------------------------------------------------------------


@settings(max_examples=100)
@given(usages(), provenances())
def test_of_counts_each_known_count_exactly_and_says_what_it_left_out(u: Usage, p: Provenance) -> None:
    one = UsageTotals.of(u, p)
    assert one.calls == 1
    # A known count is added exactly; an unknown one adds nothing (it is not a guess of 0) ...
    assert one.input_tokens == (u.input_tokens if u.input_tokens is not None else 0)
    assert one.output_tokens == (u.output_tokens if u.output_tokens is not None else 0)
    assert one.cache_read_tokens == (u.cache_read_tokens or 0)
    assert one.cache_write_tokens == (u.cache_write_tokens or 0)
    assert one.reasoning_tokens == (u.reasoning_tokens or 0)
    assert one.total_tokens == (u.total_tokens if u.total_tokens is not None else 0)
    # ... and the call is counted as one the totals could not include (or only include a floor of).
    partial = Source.PARTIAL in (p.input, p.output)
    assert one.calls_without_usage == int(u.input_tokens is None or u.output_tokens is None or partial)
    ours = {Source.COUNTED, Source.ESTIMATED}
    assert one.calls_estimated == int(p.input in ours or p.output in ours)


@pytest.mark.parametrize(
    ("usage", "without"),
    [
        (Usage(input_tokens=10, output_tokens=5), 0),
        (Usage(input_tokens=0, output_tokens=0), 0),  # 0 is a count, not "unknown"
        (Usage(input_tokens=10), 1),
        (Usage(output_tokens=5), 1),
        (Usage(), 1),
        (Usage(cache_read_tokens=3, reasoning_tokens=2), 1),
    ],
)
def test_of_calls_without_usage(usage: Usage, without: int) -> None:
    assert UsageTotals.of(usage).calls_without_usage == without
    assert (
        UsageTotals.of(usage, Provenance(input=Source.ESTIMATED, output=Source.COUNTED)).calls_without_usage == without
    )


@settings(max_examples=50)
@given(st.lists(st.tuples(usages(), provenances()), max_size=8))
def test_totals_of_many_calls_are_the_sum_of_the_known_counts(calls: list[tuple[Usage, Provenance]]) -> None:
    total = reduce(add, (UsageTotals.of(u, p) for u, p in calls), ZERO)
    assert total.calls == len(calls)
    assert total.input_tokens == sum(u.input_tokens for u, _ in calls if u.input_tokens is not None)
    assert total.output_tokens == sum(u.output_tokens for u, _ in calls if u.output_tokens is not None)
    assert total.total_tokens == sum(u.total_tokens for u, _ in calls if u.total_tokens is not None)
    assert total.calls_without_usage == sum(
        1 for u, p in calls if u.total_tokens is None or Source.PARTIAL in (p.input, p.output)
    )


def test_of_a_complete_call_totals_input_plus_output() -> None:
    one = UsageTotals.of(Usage(input_tokens=10, output_tokens=5, cache_read_tokens=4, reasoning_tokens=1))
    assert (one.total_tokens, one.cache_read_tokens, one.reasoning_tokens) == (15, 4, 1)


def test_of_adds_nothing_to_total_tokens_when_the_call_total_is_unknown() -> None:
    # "A call whose count is unknown adds nothing to that count": the call's total is unknown when
    # either side is, as the ledger's SUM(total_tokens) over NULL totals agrees.
    assert UsageTotals.of(Usage(input_tokens=10)).total_tokens == 0
    assert UsageTotals.of(Usage(output_tokens=7)).total_tokens == 0
    assert UsageTotals.of(Usage(input_tokens=10)).input_tokens == 10


@pytest.mark.parametrize("side", ["input", "output"])
def test_of_counts_a_partial_stream_as_without_usage(side: str) -> None:
    # A stream cut short: its counts are a floor, so the totals say they could not include the bill.
    partial = Provenance(**{side: Source.PARTIAL, ("output" if side == "input" else "input"): Source.REPORTED})
    one = UsageTotals.of(Usage(input_tokens=10, output_tokens=3), partial)
    assert one.calls_without_usage == 1
    assert (one.input_tokens, one.output_tokens, one.total_tokens) == (10, 3, 13)


@pytest.mark.parametrize("source", [Source.COUNTED, Source.ESTIMATED])
def test_of_counts_our_own_counts_as_estimated(source: Source) -> None:
    usage = Usage(input_tokens=10, output_tokens=5)
    assert UsageTotals.of(usage, Provenance(input=source, output=Source.REPORTED)).calls_estimated == 1
    assert UsageTotals.of(usage, Provenance(input=Source.REPORTED, output=source)).calls_estimated == 1
    assert UsageTotals.of(usage, REPORTED).calls_estimated == 0


# -- as_dict --------------------------------------------------------------------------------------


@settings(max_examples=100)
@given(totals())
def test_totals_dict_round_trip(a: UsageTotals) -> None:
    assert UsageTotals(**a.as_dict()) == a


@settings(max_examples=100)
@given(usages())
def test_usage_as_dict_has_the_five_counts_and_the_derived_total(u: Usage) -> None:
    d = u.as_dict()
    assert tuple(d) == TOKEN_FIELDS
    assert Usage(**{k: v for k, v in d.items() if k != "total_tokens"}) == u
    assert d["total_tokens"] == u.total_tokens


# -- Usage.total_tokens ---------------------------------------------------------------------------


@settings(max_examples=100)
@given(usages())
def test_total_is_none_when_either_side_is_unknown(u: Usage) -> None:
    if u.input_tokens is None or u.output_tokens is None:
        assert u.total_tokens is None
    else:
        assert u.total_tokens == u.input_tokens + u.output_tokens


@settings(max_examples=100)
@given(usages())
def test_parts_never_exceed_the_whole(u: Usage) -> None:
    # The strategy's own invariant, which the wire tests rely on.
    if u.input_tokens is not None:
        assert (u.cache_read_tokens or 0) + (u.cache_write_tokens or 0) <= u.input_tokens
    if u.output_tokens is not None:
        assert (u.reasoning_tokens or 0) <= u.output_tokens


def test_empty_usage() -> None:
    assert Usage().is_empty
    assert Usage().total_tokens is None
    assert not Usage(output_tokens=0).is_empty


def test_usage_is_immutable() -> None:
    with pytest.raises(AttributeError):
        Usage().input_tokens = 3  # type: ignore[misc]


# -- Provenance -----------------------------------------------------------------------------------

_ORDER = [Source.REPORTED, Source.COUNTED, Source.ESTIMATED, Source.PARTIAL, Source.MISSING]


@given(sources, sources)
def test_provenance_source_is_the_weaker_side(a: Source, b: Source) -> None:
    assert Provenance(input=a, output=b).source == max(a, b, key=_ORDER.index)


@pytest.mark.parametrize(
    ("a", "b", "weakest_of_the_two"),
    [
        (Source.REPORTED, Source.REPORTED, Source.REPORTED),
        (Source.REPORTED, Source.PARTIAL, Source.PARTIAL),
        (Source.COUNTED, Source.ESTIMATED, Source.ESTIMATED),
        (Source.ESTIMATED, Source.REPORTED, Source.ESTIMATED),
        (Source.PARTIAL, Source.MISSING, Source.MISSING),
        (Source.REPORTED, Source.MISSING, Source.MISSING),
    ],
)
def test_provenance_source_examples(a: Source, b: Source, weakest_of_the_two: Source) -> None:
    assert Provenance(input=a, output=b).source is weakest_of_the_two
    assert Provenance(input=b, output=a).source is weakest_of_the_two


def test_weakest_of_nothing_is_missing() -> None:
    assert weakest() is Source.MISSING
    assert MISSING.source is Source.MISSING
    assert REPORTED.source is Source.REPORTED
