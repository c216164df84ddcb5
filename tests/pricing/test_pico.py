"""The ledger's integer path (`pico_amount`) gives exactly what the `Decimal` path (`amount`) gives."""

from __future__ import annotations

from decimal import Decimal

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
def rates_and_usage(draw: st.DrawFn) -> tuple[Rates, Usage]:
    rates = Rates(
        model="m",
        source="test",
        input=draw(flat_rates),
        output=draw(st.none() | flat_rates),
        cache_read=draw(st.none() | flat_rates),
        cache_write=draw(st.none() | flat_rates),
        reasoning=draw(st.none() | flat_rates),
    )
    usage = Usage(
        input_tokens=draw(counts),
        output_tokens=draw(counts),
        cache_read_tokens=draw(counts),
        cache_write_tokens=draw(counts),
        reasoning_tokens=draw(counts),
    )
    return rates, usage


@given(rates_and_usage())
def test_the_integer_path_agrees_with_the_decimal_path(case: tuple[Rates, Usage]) -> None:
    rates, usage = case
    expected = amount(rates, usage)
    got = pico_amount(rates, usage)
    if expected is None:
        assert got is None
    else:
        assert got is not None and Decimal(got) / PICO == expected


def test_rates_integers_cannot_price_exactly_take_the_decimal_path() -> None:
    usage = Usage(input_tokens=1000, output_tokens=10)
    seven_places = Rates(model="m", source="t", input=Decimal("0.0000001"), output=Decimal(1))
    tiered = Rates(model="m", source="t", input=Tiered(Decimal(1), ((200_000, Decimal(2)),)), output=Decimal(1))
    fee = Rates(model="m", source="t", input=Decimal(1), output=Decimal(1), per_request=Decimal("0.01"))
    for rates in (seven_places, tiered, fee):
        assert pico_amount(rates, usage) is None
        assert amount(rates, usage) is not None


def test_the_top_models_of_the_table_are_priced_in_integers() -> None:
    # Anthropic's models price 1-hour cache writes apart (and Sonnet's long context in tiers): they
    # take the Decimal path, which test_price.py checks against genai-prices.
    usage = Usage(input_tokens=120_000, output_tokens=20_000, cache_read_tokens=50_000, reasoning_tokens=8_000)
    models = [("gpt-4o-mini", "openai"), ("gpt-5", "openai"), ("gemini-2.5-flash", "gemini"), ("o3", "openai")]
    for model, provider in models:
        rates = rates_for(model, provider)
        assert rates is not None, model
        got = pico_amount(rates, usage)
        assert got is not None, model
        assert Decimal(got) / PICO == amount(rates, usage), model
