"""Price lookup for a finished record: our cost from the price table, checked against the provider's own.

Some providers report what a call cost: OpenRouter's ``usage.cost`` (USD), Perplexity's
``usage.cost.total_cost``. The raw usage keeps their figure; the record's ``cost`` is ours. When both
exist and differ by more than 1%, the record gets the ``cost_mismatch`` flag. When only theirs exists
(a model our table does not know), it becomes the cost, with ``price_version`` ``reported:<provider>``.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import msgspec

from tokentrail import pricing
from tokentrail.records import CallRecord, Cost, Flag
from tokentrail.usage import Usage

if TYPE_CHECKING:
    from tokentrail.capture._exchange import Exchange

COST_MISMATCH = Flag.COST_MISMATCH.value
"""Flag: our cost and the provider-reported cost differ by more than `TOLERANCE`."""
TOLERANCE = Decimal("0.01")


def price_record(record: CallRecord, exchange: Exchange | None = None) -> CallRecord:
    """The record with its ``cost`` set (used by ``reprice``; the pipeline prices before building).

    The cost stays ``None`` when neither the price table nor the provider knows it; never 0.
    """
    cost, flags = priced(record.provider, record.model, record.requested_model, record.started_ns,
                         record.usage, record.raw_usage, record.api, record.flags)  # fmt: skip
    if cost is None and flags is record.flags:
        return record
    return msgspec.structs.replace(record, cost=cost, flags=flags)


def priced(
    provider: str,
    model: str | None,
    requested: str | None,
    started_ns: int,
    usage: Usage,
    raw_usage: Any,
    api: str,
    flags: frozenset[str],
) -> tuple[Cost | None, frozenset[str]]:
    """Our cost of a call and its flags, ``cost_mismatch`` added when the provider's own differs."""
    cost = pricing.price_of(provider, model, requested, started_ns, usage, raw_usage, api)
    if raw_usage is None:  # a fast lane's usage: no provider cost in it
        return cost, flags
    reported = reported_cost(raw_usage)
    if reported is not None:
        if cost is None:
            cost = Cost(decimal=reported, price_version=f"reported:{provider}")
        elif abs(cost.amount - reported) > TOLERANCE * max(cost.amount, reported):
            flags = flags | {COST_MISMATCH}
    return cost, flags


def reported_cost(raw_usage: Any) -> Decimal | None:
    """The USD cost a provider put in its usage object, if any and valid."""
    if type(raw_usage) is not dict:
        return None
    value = raw_usage.get("cost")
    if type(value) is dict:  # Perplexity: {"input_tokens_cost": …, "total_cost": …}
        value = value.get("total_cost")
    if type(value) is int:
        return Decimal(value) if value >= 0 else None
    if type(value) is float:
        return Decimal(repr(value)) if math.isfinite(value) and value >= 0 else None
    if type(value) is str:  # some gateways send decimal strings
        try:
            number = Decimal(value)
        except InvalidOperation:
            return None
        return number if number.is_finite() and number >= 0 else None
    return None
