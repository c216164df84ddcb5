"""The ledger's integer path (`pico_amount`) gives exactly what the `Decimal` path (`amount`) gives."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokentrail.pricing import rates_for
from tokentrail.pricing.rates import Rates, Tiered, amount, pico_amount
from tokentrail.usage import Usage

PICO = Decimal(10) ** 12
# USD per million tokens with up to six decimals: whole pico-dollars per token, as the table's are.
flat_rates = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
counts = st.none() | st.integers(min_value=0, max_value=2_000_000)


@st.composite
def tiered_rates(draw: st.DrawFn) -> Tiered:
    """A rate whose every token pays more past one or more prompt sizes (Gemini 2.5 Pro, Sonnet 4.5)."""
    starts = sorted(draw(st.sets(st.integers(min_value=0, max_value=2_000_000), min_size=1, max_size=3)))
    return Tiered(draw(flat_rates), tuple((start, draw(flat_rates)) for start in starts))


@st.composite
def rates_and_usage(draw: st.DrawFn) -> tuple[Rates, Usage, int | None]:
    rate = flat_rates | tiered_rates()
    rates = Rates(
        model="m",
        source="test",
        input=draw(rate),
        output=draw(st.none() | rate),
        cache_read=draw(st.none() | rate),
        cache_write=draw(st.none() | rate),
        cache_write_1h=draw(st.none() | rate),
        reasoning=draw(st.none() | rate),
    )
    usage = Usage(
        input_tokens=draw(counts),
        output_tokens=draw(counts),
        cache_read_tokens=draw(counts),
        cache_write_tokens=draw(counts),
        reasoning_tokens=draw(counts),
    )
    return rates, usage, draw(counts)


@given(rates_and_usage())
def test_the_integer_path_agrees_with_the_decimal_path(case: tuple[Rates, Usage, int | None]) -> None:
    rates, usage, hour = case  # hour: the 1-hour cache writes among the writes (Anthropic)
    expected = amount(rates, usage, cache_write_1h_tokens=hour)
    got = pico_amount(rates, usage, cache_write_1h_tokens=hour)
    if expected is None:
        assert got is None
    else:
        assert got is not None and Decimal(got) / PICO == expected


def test_a_tier_starts_after_its_start() -> None:
    # Past a start every token pays the tier's rate; at the start itself, the rate below it.
    rates = Rates(model="m", source="t", input=Tiered(Decimal(1), ((200_000, Decimal(2)),)), output=Decimal(0))
    for size, per_token in ((200_000, 1_000_000), (200_001, 2_000_000)):
        assert pico_amount(rates, Usage(input_tokens=size, output_tokens=0)) == size * per_token


def test_rates_integers_cannot_price_exactly_take_the_decimal_path() -> None:
    usage = Usage(input_tokens=1000, output_tokens=10)
    seven_places = Rates(model="m", source="t", input=Decimal("0.0000001"), output=Decimal(1))
    tier_of_seven = Rates(model="m", source="t", input=Tiered(Decimal(1), ((200_000, Decimal("1e-7")),)))
    fee = Rates(model="m", source="t", input=Decimal(1), output=Decimal(1), per_request=Decimal("0.01"))
    for rates in (seven_places, tier_of_seven, fee):
        assert pico_amount(rates, usage) is None
        assert amount(rates, usage) is not None


@pytest.mark.parametrize("size", [120_000, 250_000])  # below and past the long-context tier
def test_the_top_models_of_the_table_are_priced_in_integers(size: int) -> None:
    # test_price.py checks the Decimal path against genai-prices; this, the integer path against it,
    # Anthropic's 1-hour cache writes and the long-context tiers (Sonnet 4.5, Gemini 2.5 Pro) included.
    usage = Usage(input_tokens=size, output_tokens=20_000, cache_read_tokens=50_000, cache_write_tokens=30_000,
                  reasoning_tokens=8_000)  # fmt: skip
    models = [("gpt-4o-mini", "openai"), ("gpt-5", "openai"), ("o3", "openai"), ("gemini-2.5-flash", "gemini"),
              ("gemini-2.5-pro", "gemini"), ("claude-sonnet-4-6", "anthropic"), ("claude-sonnet-4-5", "anthropic"),
              ("claude-opus-4-1", "anthropic"), ("claude-haiku-4-5", "anthropic")]  # fmt: skip
    for model, provider in models:
        rates = rates_for(model, provider)
        assert rates is not None, model
        got = pico_amount(rates, usage, cache_write_1h_tokens=10_000)
        assert got is not None, model
        assert Decimal(got) / PICO == amount(rates, usage, cache_write_1h_tokens=10_000), model
