"""Costs per call: the shipped table, our fast arithmetic against genai-prices' own, published prices by hand."""

from __future__ import annotations

import json
import logging
import timeit
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import Usage as GUsage
from genai_prices.types import ModelPrice

from tokentrail import pricing
from tokentrail.pricing import table
from tokentrail.records import CallRecord, Cost
from tokentrail.usage import Usage

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # inside DeepSeek's full-price hours
NOON_NS = int(NOON.timestamp() * 1e9)

# A call with every kind: 120k input of which 50k cache reads (and 10k cache writes where the
# provider bills them), 20k output of which 8k reasoning.
USAGE = Usage(input_tokens=120_000, cache_read_tokens=50_000, output_tokens=20_000, reasoning_tokens=8_000)
USAGE_WRITES = Usage(
    input_tokens=120_000,
    cache_read_tokens=50_000,
    cache_write_tokens=10_000,
    output_tokens=20_000,
    reasoning_tokens=8_000,
)

# (tokentrail provider, api, model as the response names it): the top models of each provider.
TOP = [
    ("openai", "openai.chat", "gpt-4o-2024-08-06"),
    ("openai", "openai.chat", "gpt-4o-mini"),
    ("openai", "openai.responses", "gpt-4.1"),
    ("openai", "openai.responses", "o3"),
    ("openai", "openai.responses", "o4-mini"),
    ("openai", "openai.responses", "gpt-5"),
    ("anthropic", "anthropic.messages", "claude-sonnet-4-20250514"),
    ("anthropic", "anthropic.messages", "claude-opus-4-1-20250805"),
    ("anthropic", "anthropic.messages", "claude-haiku-4-5-20251001"),
    ("anthropic", "anthropic.messages", "claude-3-5-haiku-20241022"),
    ("gemini", "gemini.generate", "gemini-2.5-pro"),
    ("gemini", "gemini.generate", "gemini-2.5-flash"),
    ("gemini", "gemini.generate", "gemini-2.0-flash"),
    ("mistral", "openai.chat", "mistral-large-2411"),
    ("mistral", "openai.chat", "mistral-small-latest"),
    ("mistral", "openai.chat", "codestral-2501"),
    ("deepseek", "openai.chat", "deepseek-chat"),
    ("deepseek", "openai.chat", "deepseek-reasoner"),
    ("groq", "openai.chat", "llama-3.3-70b-versatile"),
    ("openrouter", "openai.chat", "openai/gpt-4o"),
    ("openrouter", "openai.chat", "anthropic/claude-sonnet-4"),
    ("local", "openai.chat", "gpt-4o-mini"),  # a local server or simulator: matched by name alone
]


def record(
    provider: str, model: str | None, usage: Usage, *, api: str = "openai.chat", started_ns: int = NOON_NS, **kw: object
) -> CallRecord:
    return CallRecord(
        id="x", api=api, provider=provider, host="api.example.com", endpoint="/v1/chat/completions",
        model=model, usage=usage, started_ns=started_ns, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def genai_total(provider: str | None, model: str, usage: Usage, **extra: int) -> Decimal:
    """genai-prices' own calculation. Its input_tokens INCLUDES cache reads and writes, as ours does."""
    pid = table.PROVIDER_IDS.get(provider) if provider else None
    gusage = GUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        **extra,
    )
    return genai_prices.calc_price(gusage, model_ref=model, provider_id=pid, genai_request_timestamp=NOON).total_price


@pytest.mark.parametrize(("provider", "api", "model"), TOP, ids=[f"{p}:{m}" for p, _, m in TOP])
def test_top_models_match_genai_prices(provider: str, api: str, model: str) -> None:
    usage = USAGE_WRITES if provider == "anthropic" else USAGE
    cost = pricing.price(record(provider, model, usage, api=api))
    assert cost is not None
    assert cost.amount == genai_total(provider if provider != "local" else None, model, usage)
    assert cost.amount > 0
    assert cost.currency == "USD"
    assert cost.price_version == f"genai-prices=={genai_prices.__version__}"


def per_mtok(tokens: int, usd: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd) / 1_000_000


def test_gpt_4o_at_openais_published_prices() -> None:
    # openai.com/api/pricing: $2.50 input, $1.25 cached input, $10.00 output per 1M tokens.
    want = per_mtok(70_000, "2.50") + per_mtok(50_000, "1.25") + per_mtok(20_000, "10.00")
    assert pricing.price(record("openai", "gpt-4o", USAGE)) == Cost(decimal=want, price_version=table.price_version())


def test_o4_mini_bills_reasoning_as_output() -> None:
    # $1.10 input, $0.275 cached input, $4.40 output; reasoning tokens are output tokens.
    usage = Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=3_000, reasoning_tokens=2_500)
    want = per_mtok(6_000, "1.10") + per_mtok(4_000, "0.275") + per_mtok(3_000, "4.40")
    parts = pricing.breakdown(record("openai", "o4-mini", usage))
    assert parts is not None
    assert parts.total == want
    assert parts.output == per_mtok(3_000, "4.40")
    assert parts.reasoning == 0


def test_claude_sonnet_4_cache_reads_and_writes_at_anthropics_published_prices() -> None:
    # platform.claude.com pricing: $3 input, $3.75 5-minute cache writes, $6 1-hour writes,
    # $0.30 cache hits, $15 output per MTok.
    want = per_mtok(60_000, "3") + per_mtok(50_000, "0.30") + per_mtok(10_000, "3.75") + per_mtok(20_000, "15")
    parts = pricing.breakdown(record("anthropic", "claude-sonnet-4-20250514", USAGE_WRITES, api="anthropic.messages"))
    assert parts is not None
    assert (parts.input, parts.cache_read, parts.cache_write, parts.output) == (
        per_mtok(60_000, "3"), per_mtok(50_000, "0.30"), per_mtok(10_000, "3.75"), per_mtok(20_000, "15"),
    )  # fmt: skip
    assert parts.total == want

    # Anthropic's raw usage tells 1-hour writes apart; they cost $6/MTok.
    raw = {"cache_creation": {"ephemeral_5m_input_tokens": 6_000, "ephemeral_1h_input_tokens": 4_000}}
    split = pricing.price(
        record("anthropic", "claude-sonnet-4-20250514", USAGE_WRITES, api="anthropic.messages",
               raw_usage_json=json.dumps(raw))  # fmt: skip
    )
    assert split is not None
    assert split.amount == want - per_mtok(4_000, "3.75") + per_mtok(4_000, "6")
    assert split.amount == genai_total(
        "anthropic", "claude-sonnet-4-20250514", USAGE_WRITES, cache_write_1h_tokens=4_000
    )


def test_gemini_2_5_pro_long_prompts_pay_the_higher_tier_on_every_token() -> None:
    # ai.google.dev pricing: ≤200k prompt: $1.25 input, $0.125 cached, $10 output (thinking included);
    # >200k prompt: $2.50, $0.25, $15.
    short = Usage(input_tokens=200_000, cache_read_tokens=50_000, output_tokens=10_000, reasoning_tokens=6_000)
    long = Usage(input_tokens=300_000, cache_read_tokens=100_000, output_tokens=10_000, reasoning_tokens=6_000)
    got_short = pricing.price(record("gemini", "gemini-2.5-pro", short, api="gemini.generate"))
    got_long = pricing.price(record("gemini", "gemini-2.5-pro", long, api="gemini.generate"))
    assert got_short is not None and got_long is not None
    assert got_short.amount == per_mtok(150_000, "1.25") + per_mtok(50_000, "0.125") + per_mtok(10_000, "10")
    assert got_long.amount == per_mtok(200_000, "2.50") + per_mtok(100_000, "0.25") + per_mtok(10_000, "15")


def test_mistral_large_2411_at_mistrals_published_prices() -> None:
    # Mistral Large 24.11: $2 input, $6 output per 1M tokens; no cache discount, so cache reads are input.
    want = per_mtok(120_000, "2") + per_mtok(20_000, "6")
    assert pricing.price(record("mistral", "mistral-large-2411", USAGE)) == Cost(
        decimal=want, price_version=table.price_version()
    )


def test_prices_that_change_with_the_time_of_the_call() -> None:
    # DeepSeek's table has off-peak prices (16:30–00:30 UTC): the call's start time decides.
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    night = int(datetime(2026, 11, 23, 20, 0, tzinfo=UTC).timestamp() * 1e9)
    peak = pricing.price(record("deepseek", "deepseek-chat", usage))
    off = pricing.price(record("deepseek", "deepseek-chat", usage, started_ns=night))
    assert peak is not None and off is not None
    assert peak.amount == Decimal("0.27") + Decimal("1.10")
    assert off.amount < peak.amount


@pytest.mark.parametrize("day", [datetime(2026, 3, 12, 23, 0, tzinfo=UTC), datetime(2026, 3, 13, 0, 0, tzinfo=UTC)])
def test_a_price_that_changed_on_a_date_applies_from_that_date(day: datetime) -> None:
    # claude-sonnet-4-6's long-context tier ended on 2026-03-13 (UTC): a 250k-token prompt costs
    # what genai-prices says on each side of the change, through the integer path after it.
    usage = Usage(input_tokens=250_000, output_tokens=2_000, cache_read_tokens=50_000)
    call = record("anthropic", "claude-sonnet-4-6", usage, api="anthropic.messages",
                  started_ns=int(day.timestamp()) * 10**9)  # fmt: skip
    pricing.price(call)  # the model's first call finds its rates
    got = pricing.price(call)
    theirs = GUsage(input_tokens=250_000, output_tokens=2_000, cache_read_tokens=50_000)
    want = genai_prices.calc_price(theirs, model_ref="claude-sonnet-4-6", provider_id="anthropic",
                                   genai_request_timestamp=day).total_price  # fmt: skip
    assert got is not None and got.amount == want
    assert (got.pico is not None) == (day.day == 13), "after the change: the integer path"


def test_every_per_token_price_in_the_table_matches_genai_prices() -> None:
    """Our cached arithmetic against genai-prices' calculation, for every model it prices per token."""
    from genai_prices.types import Usage as U

    usages = [
        U(input_tokens=120_000, cache_read_tokens=50_000, cache_write_tokens=10_000, output_tokens=20_000),
        U(input_tokens=300_000, cache_read_tokens=20_000, output_tokens=1_000, output_reasoning_tokens=400),
    ]
    ours_usages = [
        Usage(input_tokens=120_000, cache_read_tokens=50_000, cache_write_tokens=10_000, output_tokens=20_000),
        Usage(input_tokens=300_000, cache_read_tokens=20_000, output_tokens=1_000, reasoning_tokens=400),
    ]
    checked = 0
    for provider in table.snapshot().providers:
        for model in provider.models:
            price = model.get_prices(NOON)
            assert isinstance(price, ModelPrice)
            rates = table.to_rates(price, model, provider)
            if rates is None:
                continue  # priced per character, page or audio hour: not a token price
            for theirs, ours in zip(usages, ours_usages, strict=True):
                want = price.calc_price(theirs)["total_price"]
                got = pricing.cost(rates, ours)
                assert got is not None and got.total == want, (provider.id, model.id)
            checked += 1
    assert checked > 2_000


def test_unknown_model_is_none_never_zero_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    unknown = record("local", "my-finetune-7b", USAGE)
    with caplog.at_level(logging.WARNING, logger="tokentrail"):
        assert pricing.price(unknown) is None
        assert pricing.price(unknown) is None
        assert pricing.breakdown(unknown) is None
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "my-finetune-7b" in caplog.records[0].getMessage()
    assert pricing.price(record("openai", None, USAGE)) is None
    # A known provider is not priced from another provider's table.
    assert pricing.price(record("openai", "claude-sonnet-4-20250514", USAGE)) is None


@pytest.mark.parametrize(
    "usage",
    [
        Usage(),
        Usage(output_tokens=10),
        Usage(input_tokens=10),  # output unknown, and gpt-4o prices output
        Usage(input_tokens=10, cache_read_tokens=20, output_tokens=5),  # parts exceed the whole
    ],
)
def test_missing_counts_give_none(usage: Usage) -> None:
    assert pricing.price(record("openai", "gpt-4o", usage)) is None


def test_absent_parts_are_none_of_the_whole() -> None:
    # Gemini omits cachedContentTokenCount when nothing was cached: all input is plain input.
    usage = Usage(input_tokens=1_000, output_tokens=100)
    cost = pricing.price(record("gemini", "gemini-2.0-flash", usage, api="gemini.generate"))
    assert cost is not None
    assert cost.amount == per_mtok(1_000, "0.10") + per_mtok(100, "0.40")


def test_embeddings_need_no_output_count() -> None:
    cost = pricing.price(record("openai", "text-embedding-3-small", Usage(input_tokens=1_000_000)))
    assert cost is not None and cost.amount == Decimal("0.02")


def test_rates_for_the_cli() -> None:
    rates = pricing.rates_for("gpt-4o")
    assert rates is not None
    assert (rates.provider, rates.model, rates.input, rates.cache_read, rates.output) == (
        "openai", "gpt-4o", Decimal("2.5"), Decimal("1.25"), Decimal("10"),
    )  # fmt: skip
    assert rates.effective()["reasoning"] == Decimal("10")
    assert pricing.rates_for("gpt-4o", "anthropic") is None
    assert pricing.rates_for("no-such-model") is None


def test_an_application_updating_genai_prices_does_not_change_ours() -> None:
    from genai_prices import data_snapshot

    before = pricing.price(record("openai", "gpt-4o", USAGE))
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot(providers=[], from_auto_update=True))
    try:
        pricing.reset()
        assert pricing.price(record("openai", "gpt-4o", USAGE)) == before
    finally:
        data_snapshot.set_custom_snapshot(None)


def test_per_call_cost_is_a_few_microseconds() -> None:
    call = record("openai", "gpt-4o-2024-08-06", USAGE)
    pricing.price(call)
    n = 20_000
    per_call = min(timeit.repeat(lambda: pricing.price(call), number=n, repeat=3)) / n
    assert per_call < 50e-6, f"{per_call * 1e6:.1f} µs per call"


@pytest.mark.parametrize(
    ("provider", "model"), [("gemini", "gemma-3"), ("openrouter", "deepseek/deepseek-r1:free")]
)
def test_a_model_the_table_lists_as_free_costs_zero_not_unknown(provider: str, model: str) -> None:
    # genai-prices writes "free" as an empty price set; calc_price prices it at 0.
    cost = pricing.price(record(provider, model, USAGE))
    assert cost is not None and cost.amount == 0 == genai_total(provider, model, USAGE)


def test_a_model_priced_by_another_unit_stays_unpriced() -> None:
    assert pricing.price(record("openai", "whisper-1", USAGE)) is None  # per audio minute, not per token
