"""The rates of one model, per million tokens of each kind, and what a call's usage costs under them.

Kinds follow the `Usage` conventions: ``input_tokens`` includes the cache reads and writes, so the
plain input billed at the input rate is ``input - cache_read - cache_write``; ``output_tokens``
includes the reasoning tokens.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, overload

from tokentrail.usage import Usage

MTOK = Decimal(1_000_000)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tiered:
    """A rate that depends on the prompt's size.

    Past a tier's ``start`` (input tokens, cache included) *every* token of the call pays the tier's
    rate, not only the tokens above it: the "cliff" Google bills for Gemini 2.5 Pro over 200k tokens
    and Anthropic for long-context Sonnet.
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]
    """``(start, rate)`` pairs in ascending order of ``start``."""

    def at(self, input_tokens: int) -> Decimal:
        """The rate for a call with ``input_tokens`` input tokens."""
        rate = self.base
        for start, tier_rate in self.tiers:
            if input_tokens <= start:
                break
            rate = tier_rate
        return rate

    def __str__(self) -> str:
        over = "; ".join(f"{rate} over {start:,} input tokens" for start, rate in self.tiers)
        return f"{self.base}; {over}"

    def as_json(self) -> dict[str, Any]:
        return {
            "base": str(self.base),
            "tiers": [{"over_input_tokens": start, "rate": str(rate)} for start, rate in self.tiers],
        }


Rate = Decimal | Tiered
"""USD per million tokens, flat or tiered by prompt size."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rates:
    """What one model costs, in USD per million tokens of each kind, and where the numbers come from."""

    model: str
    """The price table's id for the model (or the override's key)."""
    source: str
    """Stored as the call's ``price_version``: ``genai-prices==0.2.3`` or ``override:/path/tokentrail.toml``."""
    provider: str | None = None
    """The price table's provider id (``openai``, ``google``, …); ``None`` for an override."""
    input: Rate
    """Plain (uncached) input tokens."""
    output: Rate | None = None
    """Output tokens; ``None`` when the table lists no output price (e.g. embedding models)."""
    cache_read: Rate | None = None
    """Input tokens read from the prompt cache; ``None``: billed as plain input."""
    cache_write: Rate | None = None
    """Input tokens written to the prompt cache (Anthropic's default 5-minute writes); ``None``: as input."""
    cache_write_1h: Rate | None = None
    """Anthropic's 1-hour cache writes, when the raw usage tells them apart; ``None``: as ``cache_write``."""
    reasoning: Rate | None = None
    """``None`` for nearly every model: OpenAI, Anthropic, Gemini and DeepSeek bill reasoning (thinking)
    tokens as output tokens, at the output rate. Set only where a provider lists a separate rate."""
    per_request: Decimal | None = None
    """A flat fee per call, in USD (a few search models charge one)."""

    def effective(self) -> dict[str, Rate | None]:
        """The rate each kind is billed at, with the fallbacks applied (cache as input, reasoning as output)."""
        return {
            "input": self.input,
            "cache_read": self.cache_read if self.cache_read is not None else self.input,
            "cache_write": self.cache_write if self.cache_write is not None else self.input,
            "output": self.output,
            "reasoning": self.reasoning if self.reasoning is not None else self.output,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Breakdown:
    """The cost of one call per token kind, in USD. The parts add up to ``total``."""

    input: Decimal
    """Plain (uncached) input tokens."""
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal
    """Output tokens, reasoning included (billed as output by OpenAI, Anthropic, Gemini, DeepSeek)."""
    reasoning: Decimal
    """Only for the rare model with a separate reasoning rate; otherwise 0 and counted in ``output``."""
    request: Decimal
    """A flat per-call fee, if the model has one."""
    total: Decimal
    rates: Rates


@overload
def _at(rate: Rate | None, input_tokens: int, default: Decimal) -> Decimal: ...
@overload
def _at(rate: Rate | None, input_tokens: int, default: None = None) -> Decimal | None: ...
def _at(rate: Rate | None, input_tokens: int, default: Decimal | None = None) -> Decimal | None:
    # `default` stands for a missing rate; a rate of 0 (a free kind) is a rate, not a missing one.
    if rate is None:
        return default
    if type(rate) is Decimal:
        return rate
    return rate.at(input_tokens)  # type: ignore[union-attr]


def cost(rates: Rates, usage: Usage, *, cache_write_1h_tokens: int | None = None) -> Breakdown | None:
    """The cost of ``usage`` under ``rates``, per token kind; ``None`` when it cannot be known.

    Unknown when the input count is unknown, or the output count is unknown and the model prices
    output, or the cache parts exceed the input they are part of. A cache or reasoning count that is
    unknown is taken as none: providers omit them when they are zero (Gemini leaves out
    ``cachedContentTokenCount``, older OpenAI-compatible servers ``prompt_tokens_details``).
    Never returns 0 for something it does not know.
    """
    parts = _scaled(rates, usage, cache_write_1h_tokens)
    if parts is None:
        return None
    c_in, c_read, c_write, c_out, c_reason = (p / MTOK for p in parts)
    c_req = rates.per_request or _ZERO
    return Breakdown(
        input=c_in,
        cache_read=c_read,
        cache_write=c_write,
        output=c_out,
        reasoning=c_reason,
        request=c_req,
        total=c_in + c_read + c_write + c_out + c_reason + c_req,
        rates=rates,
    )


def pico_amount(rates: Rates, usage: Usage, *, cache_write_1h_tokens: int | None = None) -> int | None:
    """`amount` in integer pico-dollars, for rates that integers price exactly (rates with at most six
    decimals per million tokens, i.e. whole pico-dollars per token: every rate the shipped table
    holds; flat or tiered); ``None`` when they cannot, or when `amount` would be ``None``. The
    ledger's per-call path: integer arithmetic, no `Decimal` until the stored text."""
    tiers = pico_tiers(rates)
    if tiers is None:
        return None
    return pico_total(tiers.at(usage.input_tokens), usage, cache_write_1h_tokens)


PicoRates = tuple[int, int, int, "int | None", "int | None", "int | None"]
"""Pico-dollars per token of (input, cache read, cache write, output, reasoning, 1-hour cache write)."""


class PicoTiers(tuple[tuple[int, ...], tuple[PicoRates, ...]]):
    """`PicoRates` by prompt size: (the input sizes where a tier starts, sorted; the rates up to the
    first start, then past each). One entry, no starts, for flat rates."""

    __slots__ = ()

    def at(self, input_tokens: int | None) -> PicoRates:
        """The rates of a call with ``input_tokens`` (past a start, every token pays that tier's rate)."""
        starts, by_tier = self
        if not starts or input_tokens is None:
            return by_tier[0]
        return by_tier[bisect_left(starts, input_tokens)]


def pico_tiers(rates: Rates) -> PicoTiers | None:
    """``rates`` as `PicoTiers`, or ``None`` when integers cannot price them exactly (once per object)."""
    known = _pico.get(id(rates))
    if known is None or known[0] is not rates:
        known = _pico[id(rates)] = (rates, _pico_tiers(rates))
    return known[1]


def pico_total(per_token: PicoRates, usage: Usage, cache_write_1h_tokens: int | None = None) -> int | None:
    """What ``usage`` costs at ``per_token``, in pico-dollars; ``None`` when a count it needs is unknown.
    ``cache_write_1h_tokens``: how many of the cache writes were 1-hour writes (Anthropic)."""
    inp, out = usage.input_tokens, usage.output_tokens
    p_in, p_read, p_write, p_out, p_reason, p_write_1h = per_token
    if inp is None or (out is None and p_out is not None):
        return None
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    plain = inp - read - write
    if plain < 0:
        return None
    total = p_in * plain + p_read * read
    if write:
        hour = min(cache_write_1h_tokens or 0, write) if p_write_1h is not None else 0
        total += p_write * (write - hour)
        if hour:
            total += p_write_1h * hour  # type: ignore[operator]
    if out and p_out is not None:
        reasoning = min(usage.reasoning_tokens or 0, out) if p_reason is not None else 0
        total += p_out * (out - reasoning)
        if reasoning:
            total += p_reason * reasoning  # type: ignore[operator]
    return total


_pico: dict[int, tuple[Rates, PicoTiers | None]] = {}
"""`_pico_tiers` per `Rates` object (by id, the object kept with it: rates are few and long-lived)."""


def _pico_tiers(rates: Rates) -> PicoTiers | None:
    """`PicoTiers` of ``rates``, or ``None`` when the model has a per-request fee or a rate is not a
    whole number of pico-dollars per token."""
    if rates.per_request is not None:
        return None
    kinds = (rates.input, rates.cache_read, rates.cache_write, rates.output, rates.reasoning, rates.cache_write_1h)
    starts = sorted({start for rate in kinds if type(rate) is Tiered for start, _ in rate.tiers})
    by_tier = []
    for size in (0, *(start + 1 for start in starts)):  # a prompt size inside each tier
        flat = _pico_flat([_at(rate, size) for rate in kinds])
        if flat is None:
            return None
        by_tier.append(flat)
    return PicoTiers((tuple(starts), tuple(by_tier)))


def _pico_flat(kinds: list[Decimal | None]) -> PicoRates | None:
    """(input, cache read, cache write, output, reasoning, 1-hour cache write) per million tokens in
    pico-dollars per token, the fallbacks of `_scaled` applied; ``None`` if one is not whole."""
    per_token: list[int | None] = []
    for rate in kinds:
        if rate is None:
            per_token.append(None)
            continue
        pico = rate * MTOK  # USD per million tokens × 10⁶ = pico-dollars per token
        if pico != pico.to_integral_value():
            return None
        per_token.append(int(pico))
    p_in, p_read, p_write, p_out, p_reason, p_write_1h = per_token
    assert p_in is not None
    p_write = p_in if p_write is None else p_write
    return p_in, p_in if p_read is None else p_read, p_write, p_out, p_reason, p_write_1h


def amount(rates: Rates, usage: Usage, *, cache_write_1h_tokens: int | None = None) -> Decimal | None:
    """`cost`'s total alone, computed with one division: the per-call path of the ledger."""
    parts = _scaled(rates, usage, cache_write_1h_tokens)
    if parts is None:
        return None
    s_in, s_read, s_write, s_out, s_reason = parts
    total = (s_in + s_read + s_write + s_out + s_reason) / MTOK
    return total + rates.per_request if rates.per_request is not None else total


def _scaled(
    rates: Rates, usage: Usage, cache_write_1h_tokens: int | None
) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal] | None:
    """Tokens × rate of each kind (input, cache read, cache write, output, reasoning): USD × 10⁶."""
    inp = usage.input_tokens
    out = usage.output_tokens
    if inp is None or (out is None and rates.output is not None):
        return None
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    plain = inp - read - write
    if plain < 0:
        return None

    rate_in = _at(rates.input, inp, _ZERO)
    s_in = rate_in * plain
    s_read = _at(rates.cache_read, inp, rate_in) * read if read else _ZERO
    s_write = _ZERO
    if write:
        rate_write = _at(rates.cache_write, inp, rate_in)
        hour = min(cache_write_1h_tokens or 0, write) if rates.cache_write_1h is not None else 0
        s_write = rate_write * (write - hour)
        if hour:
            s_write += _at(rates.cache_write_1h, inp, rate_write) * hour

    s_out = s_reason = _ZERO
    if out and rates.output is not None:
        rate_out = _at(rates.output, inp, _ZERO)
        reasoning = min(usage.reasoning_tokens or 0, out) if rates.reasoning is not None else 0
        s_out = rate_out * (out - reasoning)
        if reasoning:
            s_reason = _at(rates.reasoning, inp, rate_out) * reasoning
    return s_in, s_read, s_write, s_out, s_reason
