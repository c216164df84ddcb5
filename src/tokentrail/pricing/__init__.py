"""What each call cost: the shipped price table, the user's overrides, and the arithmetic per token kind.

    price(record)     → Cost | None        the amount and the price version, for the ledger
    breakdown(record) → Breakdown | None   the same per token kind (input, cache read/write, output)
    rates_for(model, provider) → Rates | None the per-million-token rates in force (for `tokentrail prices`)
    configure(file)                        load the overrides now; bad config raises ConfigError

Prices come from genai-prices' bundled table (`tokentrail.pricing.table`), read offline and never
updated at run time, so a stored ``price_version`` such as ``genai-prices==0.2.3`` names the exact
table. Per-model overrides from ``tokentrail.toml`` or ``pyproject.toml``
(`tokentrail.pricing.overrides`) win over it and are stored as ``override:<file>``. Unknown is
``None``, never 0: an unknown model, or an unknown input or output count, leaves the cost unknown,
logged once per model.
"""

from __future__ import annotations

from tokentrail.pricing.catalog import breakdown, configure, current_overrides, price, price_of, rates_for, reset
from tokentrail.pricing.overrides import Overrides
from tokentrail.pricing.rates import Breakdown, Rates, Tiered, amount, cost

__all__ = [
    "Breakdown",
    "Overrides",
    "Rates",
    "Tiered",
    "amount",
    "breakdown",
    "configure",
    "cost",
    "current_overrides",
    "price",
    "price_of",
    "rates_for",
    "reset",
]
