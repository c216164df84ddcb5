"""`CallRecord`: one HTTP attempt to an LLM API, as stored in the ledger."""

from __future__ import annotations

import itertools
import os
import random
import time
from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec

from tokentrail.usage import EMPTY, MISSING, Provenance, Usage


class CallStatus(StrEnum):
    """How the HTTP attempt ended."""

    OK = "ok"
    HTTP_ERROR = "http_error"
    """The server answered with a non-2xx status (``http_status`` has it)."""
    NETWORK_ERROR = "network_error"
    """The connection failed or broke, before or during the response."""
    CANCELLED = "cancelled"
    """The caller closed or abandoned the response before it ended."""


class Flag(StrEnum):
    """The vocabulary of `CallRecord.flags`."""

    TOTAL_MISMATCH = "total_mismatch"
    """The provider's total differs from input + output; the raw usage keeps the provider's figure."""
    INVALID_VALUE = "invalid_value"
    """A count was not a non-negative integer; it is kept raw and set to null."""
    PARTS_EXCEED_WHOLE = "parts_exceed_whole"
    """A cache or reasoning count is larger than the count it is part of."""
    HTTP_ERROR = "http_error"
    """The server answered with a non-2xx status."""
    STREAM_INCOMPLETE = "stream_incomplete"
    """The stream ended without its final event."""
    UNPARSED = "unparsed"
    """The body could not be read as the API family's format."""
    COUNT_FLOOR = "count_floor"
    """A count tokentrail made is a floor: the request had parts it cannot count (images, audio,
    server-side history) or the model's hidden reasoning is billed but not in the text."""
    COST_MISMATCH = "cost_mismatch"
    """Our cost and the provider-reported cost (OpenRouter, Perplexity) differ by more than 1%."""


class CallSite(msgspec.Struct, frozen=True, kw_only=True, gc=False, cache_hash=True):  # hashed per call (a ledger key)
    """The first stack frame outside tokentrail, the HTTP library and the LLM SDK."""

    module: str
    """Dotted module name, e.g. ``mem0.memory.main``."""
    function: str
    """Qualified function name, e.g. ``Memory.add``."""
    file: str
    """Path relative to its ``sys.path`` entry, e.g. ``mem0/memory/main.py``."""
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def qualname(self) -> str:
        """``module.function``: the function-level grouping key."""
        return f"{self.module}.{self.function}"


class Cost(msgspec.Struct, frozen=True, kw_only=True, eq=False, gc=False):
    """What a call cost, and with which price table: `amount` USD, given either as a `Decimal`
    (``decimal``) or as integer pico-dollars (``pico``), the pricer's exact integer path.

    From ``pico`` the `Decimal` is made only when `amount` is read: making it for every call cost
    ~2,700 instructions, for a figure the ledger stores and the live totals sum as the integer."""

    decimal: Decimal | None = None
    pico: int | None = None
    """The amount in integer pico-dollars (1e-12 USD), when it is exactly that; else ``None``."""
    currency: str = "USD"
    price_version: str | None = None

    @property
    def amount(self) -> Decimal:
        """The amount, exactly."""
        return self.decimal if self.decimal is not None else Decimal(self.pico) / PICO  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if type(other) is not Cost:
            return NotImplemented
        return (self.amount, self.currency, self.price_version) == (other.amount, other.currency, other.price_version)

    def __hash__(self) -> int:
        return hash((self.amount, self.currency, self.price_version))


PICO = Decimal(10) ** 12
"""Pico-dollars in a dollar."""


class CallRecord(msgspec.Struct, frozen=True, gc=False):
    """One HTTP attempt. Times are integer nanoseconds (wall clock for start, monotonic deltas).

    Build one with keywords. (The pipeline passes its fields by position, in this order: 35 keywords
    cost ~1 µs of matching per call. New fields go at the end.)"""

    # gc=False: not tracked by the cycle collector (thousands wait for the writer at a time). A record
    # refers only to values and to dicts that never refer back to it, so it is never in a cycle.

    id: str
    api: str
    """The API family, e.g. ``openai.chat``."""
    provider: str
    """Who served it, e.g. ``openai``, ``openrouter``, ``openai-compatible``."""
    host: str
    endpoint: str
    """The request path, without the query string."""
    requested_model: str | None = None
    model: str | None = None
    """The model the response names, else the requested one."""
    stream: bool = False
    status: CallStatus = CallStatus.OK
    http_status: int | None = None
    error: str | None = None
    """The exception type for network errors."""
    attempt: int = 1
    """1 for the first attempt; retries of the same request count up."""
    started_ns: int = 0
    latency_ns: int | None = None
    first_token_ns: int | None = None
    """Time from sending to the first streamed byte, for streams."""
    usage: Usage = EMPTY
    provenance: Provenance = MISSING
    raw_usage_json: str | None = None
    """The provider's usage object as received, as JSON text (as it arrived when a fast lane read it;
    else encoded from the parsed object), kept for re-derivation; `raw_usage` decodes it."""
    cost: Cost | None = None
    flags: frozenset[str] = frozenset()
    response_id: str | None = None
    call_site: CallSite | None = None
    scope_id: str | None = None
    scope_path: str | None = None
    """Scope names from the run down, joined by ``/``."""
    scope_id_path: str | None = None
    """Scope ids from the run down, joined by ``/``: the key of "everything under this scope"."""
    run_id: str | None = None
    run: str | None = None
    agent: str | None = None
    step: str | None = None
    tool: str | None = None
    pid: int = 0
    host_name: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    anatomy: dict[str, Any] | None = None
    """Where the prompt's tokens went (tool definitions, tool results, system, history, latest input;
    tools offered and called), when prompt anatomy is on and the request body was seen."""

    @property
    def raw_usage(self) -> Any:
        """The provider's usage object as received (decoded from `raw_usage_json` at each access)."""
        return None if self.raw_usage_json is None else _decode_json(self.raw_usage_json)

    @property
    def latency_ms(self) -> float | None:
        """Latency in milliseconds."""
        return None if self.latency_ns is None else self.latency_ns / 1e6


_decode_json = msgspec.json.Decoder().decode
_rand = random.Random()
_LOW_BITS = (1 << 64) - 1
_serial = itertools.count(_rand.getrandbits(64))


def new_id(at_ns: int | None = None) -> str:
    """A 32-hex-digit id that sorts by time (``at_ns``, wall-clock nanoseconds, else now), then by
    64 bits counted up from a random start per process (unique within the process; a serial costs
    a third of fresh random bits)."""
    # One int's 16 bytes as hex: the same digits as two formatted fields, at 0.2 µs instead of 0.5.
    ns = time.time_ns() if at_ns is None else at_ns
    return ((ns << 64) | (next(_serial) & _LOW_BITS)).to_bytes(16, "big").hex()


def _reseed() -> None:
    global _serial
    _rand.seed()
    _serial = itertools.count(_rand.getrandbits(64))


os.register_at_fork(after_in_child=_reseed)
