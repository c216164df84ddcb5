"""The shipped price table: genai-prices' bundled data, read offline, never updated at run time.

genai-prices (pydantic) keeps per-provider, per-model prices with cache, tier and date rules, and
ships them as Python data in its wheel, so the table a call was priced with is named exactly by the
package version (`VERSION`). Its optional updater (`genai_prices.UpdatePrices`) fetches newer data
over HTTP into a process-wide snapshot; we never start it, and we read the bundled data through a
snapshot of our own, so an application that does start it cannot change our prices behind the
version we record.

Lookups and rate conversions are cached per (provider, model): computing genai-prices' own
``calc_price`` costs ~200 µs a call, the cached path a few µs.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tokentrail.pricing.rates import Rate, Rates, Tiered

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Provider

NAME = "genai-prices"

# tokentrail's provider names (`tokentrail.wire.provider`) → genai-prices provider ids. Providers
# not listed (``local``, ``openai-compatible``, …) are matched by the model's name alone.
PROVIDER_IDS = {
    "openai": "openai",
    "azure": "azure",  # falls back to OpenAI's, Anthropic's, DeepSeek's… prices in the table
    "anthropic": "anthropic",
    "gemini": "google",
    "google": "google",
    "vertex": "google",  # also prices Claude on Vertex (the table's fallback to anthropic)
    "mistral": "mistral",
    "deepseek": "deepseek",
    "groq": "groq",
    "openrouter": "openrouter",
    "together": "together",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
    "xai": "x-ai",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "bedrock": "aws",
}


@functools.cache
def version() -> str:
    """The installed genai-prices version, e.g. ``0.2.3``."""
    import importlib.metadata  # ~20 ms: not at import time of the enricher

    return importlib.metadata.version(NAME)


def price_version() -> str:
    """What a call priced from the table stores as its ``price_version``: ``genai-prices==0.2.3``."""
    return f"{NAME}=={version()}"


@functools.cache
def snapshot() -> DataSnapshot:
    """Our own snapshot of the bundled data (imported on first use: ~0.3 s, off the caller's thread)."""
    from genai_prices.data import providers
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=providers, from_auto_update=False)


def find(model: str, provider: str | None) -> tuple[Provider, ModelInfo] | None:
    """The table's provider and model for a call, or ``None``.

    A known provider is searched alone (with the table's own fallbacks, e.g. Azure → OpenAI): a price
    from another provider would be wrong. An unknown one (a local server, a gateway) is matched by
    the model's name, then by a ``provider/model`` prefix as LiteLLM-style gateways name models.
    """
    data = snapshot()
    ref = model.removeprefix("models/")  # Gemini's REST paths name models "models/gemini-…"
    pid = PROVIDER_IDS.get(provider) if provider is not None else None
    try:
        return data.find_provider_model(ref, None, pid, None)
    except LookupError:
        pass
    if pid is None and "/" in ref:
        try:
            return data.find_provider_model(ref, None, "litellm", None)
        except LookupError:
            pass
    if pid is None:
        # The table guesses a provider from model-name patterns that miss some first-party models
        # (text-embedding-3-small on a local OpenAI-compatible server): ask the model makers in turn.
        for maker in _MAKERS:
            try:
                return data.find_provider_model(ref, None, maker, None)
            except LookupError:
                continue
    return None


_MAKERS = ("openai", "anthropic", "google", "mistral", "deepseek", "cohere", "x-ai")


def model_count() -> tuple[int, int]:
    """(models, providers) in the table."""
    providers = snapshot().providers
    return sum(len(p.models) for p in providers), len(providers)


def _rate(value: Any) -> Rate | None:
    from genai_prices.types import TieredPrices

    if value is None:
        return None
    if isinstance(value, TieredPrices):
        return Tiered(value.base, tuple(sorted((t.start, t.price) for t in value.tiers)))
    assert isinstance(value, Decimal)  # genai-prices keeps every price as a Decimal
    return value


_FREE = Decimal(0)


def to_rates(price: ModelPrice, model: ModelInfo, provider: Provider) -> Rates | None:
    """Our `Rates` for one of the table's price sets; ``None`` when it is not priced per token
    (per character, per audio hour, per page). An empty set is the table's word for free (179
    models, e.g. ``gemma-3``, OpenRouter's ``…:free``): every token at 0, as ``calc_price`` prices it."""
    # The attributes set are the price keys present; reading __dict__ skips ModelPrice.__getattr__.
    prices: dict[str, Any] = price.__dict__
    rate_in, rate_out = _rate(prices.get("input_mtok")), _rate(prices.get("output_mtok"))
    if rate_in is None:
        if any(value is not None for value in prices.values()):
            return None
        rate_in = rate_out = _FREE
    per_k = prices.get("requests_kcount")
    return Rates(
        model=model.id,
        provider=provider.id,
        source=price_version(),
        input=rate_in,
        output=rate_out,
        cache_read=_rate(prices.get("cache_read_mtok")),
        cache_write=_rate(prices.get("cache_write_mtok")),
        cache_write_1h=_rate(prices.get("cache_write_1h_mtok")),
        reasoning=_rate(prices.get("output_reasoning_mtok")),
        per_request=None if per_k is None else per_k / 1000,
    )


class Entry:
    """One (provider, model) resolved against the table; rates by call time when prices change with it."""

    __slots__ = ("_by_price", "fixed", "latest", "latest_from_ns", "model", "provider")

    def __init__(self, provider: Provider, model: ModelInfo) -> None:
        from genai_prices.types import ModelPrice, StartDateConstraint

        self.provider = provider
        self.model = model
        self.fixed: Rates | None = None
        """The rates, when they do not depend on the date or time of the call (nearly always)."""
        self.latest: Rates | None = None
        """For prices that changed on a date: the rates since the last change, in force from
        `latest_from_ns` (wall-clock ns) on. (The table's last conditional price wins when it applies.)"""
        self.latest_from_ns = 0
        self._by_price: dict[int, tuple[ModelPrice, Rates | None]] = {}
        prices = model.prices
        if isinstance(prices, ModelPrice):
            self.fixed = to_rates(prices, model, provider)
        elif prices and type(prices[-1].constraint) is StartDateConstraint:
            day = prices[-1].constraint.start_date  # a UTC date, as genai-prices compares it
            self.latest = to_rates(prices[-1].prices, model, provider)
            self.latest_from_ns = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 10**9

    def rates(self, started_ns: int = 0) -> Rates | None:
        """The rates in force when the call started (``started_ns``: wall-clock ns; 0 for now)."""
        if self.fixed is not None or not isinstance(self.model.prices, list):
            return self.fixed
        if self.latest is not None and (started_ns or time.time_ns()) >= self.latest_from_ns:
            return self.latest
        # Conditional prices: price changes from a date on, or DeepSeek's off-peak hours.
        at = datetime.fromtimestamp(started_ns / 1e9, UTC) if started_ns else datetime.now(UTC)
        price = self.model.get_prices(at)
        hit = self._by_price.get(id(price))
        if hit is None or hit[0] is not price:
            hit = (price, to_rates(price, self.model, self.provider))  # keeps `price` alive: its id stays unique
            self._by_price[id(price)] = hit
        return hit[1]
