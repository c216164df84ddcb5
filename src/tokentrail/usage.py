"""Token counts as immutable values, and where each count came from.

The conventions are the same for every provider (ARCHITECTURE.md §2):

- ``input_tokens`` is every billed input token, cached or not; ``cache_read_tokens`` and
  ``cache_write_tokens`` are parts of it.
- ``output_tokens`` is every generated token; ``reasoning_tokens`` is a part of it.
- ``total_tokens`` is ``input_tokens + output_tokens``.
- An unknown count is ``None``, never 0.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Source(StrEnum):
    """Where a count came from, from most to least trustworthy."""

    REPORTED = "reported"
    """The provider said so."""
    COUNTED = "counted"
    """Counted by tokentrail with the model's own tokenizer."""
    ESTIMATED = "estimated"
    """Counted by tokentrail with another tokenizer (named in `Provenance.tokenizer`)."""
    PARTIAL = "partial"
    """The stream ended before the final usage arrived; the count is what was seen."""
    MISSING = "missing"
    """Nothing to report or count."""


_SOURCE_RANK = {s: i for i, s in enumerate(Source)}


def weakest(*sources: Source) -> Source:
    """The least trustworthy of ``sources`` (``MISSING`` if none are given)."""
    return max(sources, key=_SOURCE_RANK.__getitem__, default=Source.MISSING)


class Provenance(msgspec.Struct, frozen=True, kw_only=True, gc=False, cache_hash=True):  # a ledger key: hashed per call
    """Where the input and output counts of one call came from."""

    input: Source = Source.MISSING
    output: Source = Source.MISSING
    tokenizer: str | None = None
    """The tokenizer that counted, when a count is ``counted`` or ``estimated``."""

    @property
    def source(self) -> Source:
        """One word for the whole call: the weaker of the input and output sources."""
        return _WEAKER[self.input, self.output]


_WEAKER = {(a, b): weakest(a, b) for a in Source for b in Source}
REPORTED = Provenance(input=Source.REPORTED, output=Source.REPORTED)
MISSING = Provenance()


class Usage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The normalized token counts of one call. ``None`` means unknown."""

    input_tokens: int | None = None
    """Every billed input token, cached or not. Includes cache_read and cache_write."""
    output_tokens: int | None = None
    """Every generated token. Includes reasoning_tokens."""
    cache_read_tokens: int | None = None
    """Input tokens read from the provider's prompt cache (part of input_tokens)."""
    cache_write_tokens: int | None = None
    """Input tokens written to the provider's prompt cache (part of input_tokens)."""
    reasoning_tokens: int | None = None
    """Reasoning or thinking tokens (part of output_tokens)."""

    @property
    def total_tokens(self) -> int | None:
        """input + output, or ``None`` when either is unknown."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens

    @property
    def is_empty(self) -> bool:
        """True when no count at all is known."""
        return self.input_tokens is None and self.output_tokens is None

    def as_dict(self) -> dict[str, int | None]:
        """The five counts and the derived total, for JSON."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }


EMPTY = Usage()

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
)


class UsageTotals(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The sum over many calls.

    Counts are plain integers: a call whose count is unknown adds nothing to that count and is
    counted in ``calls_without_usage`` instead, so a total always says what it could not include.
    """

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    calls_without_usage: int = 0
    """Calls whose usage is unknown or incomplete: input or output missing, or a stream cut short
    (``partial``: its counts are a floor, not the bill)."""
    calls_estimated: int = 0
    """Calls with a count tokentrail counted or estimated rather than the provider reported."""

    @classmethod
    def of(cls, usage: Usage, provenance: Provenance = REPORTED) -> UsageTotals:
        """The totals of a single call."""
        return cls(**dict(zip(TOTAL_KEYS, totals_row(usage, provenance), strict=True)))

    def __add__(self, other: UsageTotals) -> UsageTotals:
        if not isinstance(other, UsageTotals):
            return NotImplemented
        return UsageTotals(**{k: getattr(self, k) + getattr(other, k) for k in TOTAL_KEYS})

    def as_dict(self) -> dict[str, int]:
        """Every field, for JSON."""
        return {k: getattr(self, k) for k in TOTAL_KEYS}


TOTAL_KEYS: tuple[str, ...] = UsageTotals.__struct_fields__
"""`UsageTotals`' fields in order: the columns of `totals_row`."""
_ESTIMATES = (Source.COUNTED, Source.ESTIMATED)


def totals_row(usage: Usage, provenance: Provenance) -> tuple[int, ...]:
    """One call's contribution to `UsageTotals`, as its fields in `TOTAL_KEYS` order.

    Counts are summed as known: an unknown count adds nothing and the call counts in
    ``calls_without_usage`` (also a stream cut short: its counts are a floor). Only known totals are
    summed, as the ledger's ``SUM(total_tokens)`` does, so live totals and reports agree.
    """
    inp, out = usage.input_tokens, usage.output_tokens
    source_in, source_out = provenance.input, provenance.output
    partial = source_in is Source.PARTIAL or source_out is Source.PARTIAL
    complete = inp is not None and out is not None and not partial
    return (
        1,
        inp or 0,
        out or 0,
        usage.cache_read_tokens or 0,
        usage.cache_write_tokens or 0,
        usage.reasoning_tokens or 0,
        inp + out if inp is not None and out is not None else 0,
        0 if complete else 1,
        1 if source_in in _ESTIMATES or source_out in _ESTIMATES else 0,
    )


ZERO = UsageTotals()
