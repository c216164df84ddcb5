"""The prices in force in this process: the user's overrides, then the shipped table, cached per model."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from tokentrail.errors import ConfigError
from tokentrail.pricing import overrides as _overrides
from tokentrail.pricing import table
from tokentrail.pricing.rates import Breakdown, PicoTiers, Rates, amount, cost, pico_tiers, pico_total
from tokentrail.records import CallRecord, Cost
from tokentrail.usage import Usage

log = logging.getLogger("tokentrail")

_lock = threading.Lock()
_config: _overrides.Overrides | None = None
_config_error: ConfigError | None = None
# (provider, model, requested model) → what prices them: override Rates, a table Entry, or None.
_resolved: dict[tuple[str, str | None, str | None], Rates | table.Entry | None] = {}
_unknown_logged: set[tuple[str, str | None]] = set()
_fixed: dict[tuple[str, str | None, str | None], tuple[PicoTiers, str, int]] = {}
"""The same keys, for models whose rates do not change with time (or not since a date) and that
integers price exactly: (pico-dollars per token, price version, wall-clock ns from which they hold).
The per-call path: one lookup, integer arithmetic."""


def configure(prices: str | os.PathLike[str] | None = None) -> _overrides.Overrides:
    """Load the price overrides now, from ``prices`` or the usual config file, and use them from now on.

    Call it where a bad config should fail loudly (`instrument()`, the CLI); otherwise the first
    priced call loads them.

    Raises:
        ConfigError: the overrides file is missing or invalid (the message names file and key).
    """
    global _config, _config_error
    try:
        loaded = _overrides.load(prices)
    except ConfigError as exc:
        with _lock:
            _config, _config_error = None, exc
            _resolved.clear()
        _fixed.clear()
        raise
    with _lock:
        _config, _config_error = loaded, None
        _resolved.clear()
        _fixed.clear()
        _unknown_logged.clear()
    return loaded


def current_overrides() -> _overrides.Overrides:
    """The overrides in force, loaded on first use.

    Raises:
        ConfigError: the overrides file is invalid. Raised again on every later call without
            reading the file again, so calls stay unpriced (``None``) rather than priced wrongly.
    """
    if _config is not None:
        return _config
    if _config_error is not None:
        raise _config_error
    return configure()


def reset() -> None:
    """Forget the loaded overrides and every cached lookup (tests; after editing the config file)."""
    global _config, _config_error
    with _lock:
        _config = _config_error = None
        _resolved.clear()
        _fixed.clear()
        _unknown_logged.clear()


def _resolve(provider: str, model: str | None, requested: str | None) -> Rates | table.Entry | None:
    config = current_overrides()
    found: Rates | table.Entry | None = config.get(model) or config.get(requested)
    if found is None:
        for name in (model, requested):
            if name:
                hit = table.find(name, provider)
                if hit is not None:
                    found = table.Entry(*hit)
                    break
    _resolved[(provider, model, requested)] = found
    # Rates that do not change with the call's time (an override; nearly every table entry), or not
    # since a date, and that integers price exactly also go to `_fixed`, the per-call path.
    if type(found) is table.Entry:
        fixed, since = (found.fixed, 0) if found.fixed is not None else (found.latest, found.latest_from_ns)
    else:
        fixed, since = found, 0
    per_token = None if fixed is None else pico_tiers(fixed)
    if per_token is not None:
        _fixed[(provider, model, requested)] = (per_token, fixed.source, since)  # type: ignore[union-attr]
    return found


def rates_for(model: str, provider: str | None = None, *, started_ns: int = 0) -> Rates | None:
    """The rates that price ``model`` served by ``provider`` (tokentrail's name: ``openai``,
    ``gemini``, ``openrouter``, …; ``None`` or ``local`` to match by the model's name alone)."""
    key = (provider or "", model, None)
    entry = _resolved[key] if key in _resolved else _resolve(provider or "", model, None)
    if isinstance(entry, table.Entry):
        return entry.rates(started_ns)
    return entry


def breakdown(record: CallRecord) -> Breakdown | None:
    """The cost of a finished call per token kind; ``None`` when the model or a needed count is unknown.

    Acts after the response, off the caller's thread (an enricher). Uses the call's start time for
    prices that change by date or time of day.
    """
    rates_ = _rates_of(record)
    if rates_ is None:
        return None
    return cost(rates_, record.usage, cache_write_1h_tokens=_cache_write_1h(record.raw_usage, record.api))


def _rates_of(record: Any) -> Rates | None:
    return _rates(record.provider, record.model, record.requested_model, record.started_ns)


def _rates(provider: str, model: str | None, requested: str | None, started_ns: int) -> Rates | None:
    if model is None and requested is None:
        return None
    key = (provider, model, requested)
    entry = _resolved[key] if key in _resolved else _resolve(*key)
    rates_ = entry.rates(started_ns) if type(entry) is table.Entry else entry
    if rates_ is None:
        _log_unknown(provider, model or requested)
    return rates_  # type: ignore[return-value]


def price(record: CallRecord) -> Cost | None:
    """What a finished call cost, in USD, with the price version used; ``None``, never 0, when unknown.

    Unknown when no override or table entry prices the model, or a count the price needs is unknown.
    Acts after the response, off the caller's thread; a few µs a call (lookups cached per model).
    """
    return price_of(record.provider, record.model, record.requested_model, record.started_ns, record.usage,
                    record.raw_usage, record.api)  # fmt: skip


def price_of(
    provider: str, model: str | None, requested: str | None, started_ns: int, usage: Usage, raw_usage: Any, api: str
) -> Cost | None:
    """`price` from the record's parts, for the pipeline that prices a record before building it."""
    fixed = _fixed.get((provider, model, requested))
    if fixed is not None and started_ns >= fixed[2]:  # the common case: integers, ~4× cheaper than Decimal
        per_token = fixed[0].at(usage.input_tokens)
        hour = _cache_write_1h(raw_usage, api) if per_token[5] is not None and usage.cache_write_tokens else None
        pico = pico_total(per_token, usage, hour)
        if pico is not None:
            return Cost(pico=pico, price_version=fixed[1])
    rates_ = _rates(provider, model, requested, started_ns)
    if rates_ is None:
        return None
    total = amount(rates_, usage, cache_write_1h_tokens=_cache_write_1h(raw_usage, api))
    return None if total is None else Cost(decimal=total, price_version=rates_.source)


def _cache_write_1h(raw: Any, api: str) -> int | None:
    # Anthropic splits cache writes by lifetime in usage.cache_creation; 1-hour writes cost more.
    if type(raw) is dict and api == "anthropic.messages":
        split = raw.get("cache_creation")
        if type(split) is dict:
            value = split.get("ephemeral_1h_input_tokens")
            if type(value) is int and value >= 0:
                return value
    return None


def _log_unknown(provider: str, model: str | None) -> None:
    key = (provider, model)
    if key in _unknown_logged:
        return
    _unknown_logged.add(key)
    log.warning(
        "tokentrail: no price for model %r (provider %s); its calls have no cost. "
        'Price it under [prices."%s"] in tokentrail.toml (input_per_mtok, output_per_mtok).',
        model,
        provider,
        model,
    )
