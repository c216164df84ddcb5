"""The price enricher on a CallRecord, and the provider-reported cost check."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tokentrail.enrich.price import COST_MISMATCH, price_record, reported_cost
from tokentrail.pricing import table
from tokentrail.records import CallRecord, Cost, Flag
from tokentrail.usage import Usage

USAGE = Usage(input_tokens=1_000, cache_read_tokens=400, output_tokens=200, reasoning_tokens=50)
# gpt-4o: 600 × 2.5 + 400 × 1.25 + 200 × 10 per million tokens
GPT_4O = Decimal("0.004")


def openai_call(usage: Usage = USAGE, **kw: object) -> CallRecord:
    return CallRecord(
        id="x", api="openai.chat", provider="openai", host="api.openai.com", endpoint="/v1/chat/completions",
        model="gpt-4o", usage=usage, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def openrouter_call(raw_usage: object, model: str = "openai/gpt-4o") -> CallRecord:
    return CallRecord(
        id="x", api="openai.chat", provider="openrouter", host="openrouter.ai", endpoint="/api/v1/chat/completions",
        model=model, usage=USAGE, raw_usage_json=json.dumps(raw_usage),
    )  # fmt: skip


def test_the_enricher_sets_the_cost() -> None:
    before = openai_call(flags=frozenset({Flag.TOTAL_MISMATCH}))
    after = price_record(before, None)
    assert after.cost == Cost(decimal=GPT_4O, price_version=table.price_version())
    assert after.flags == before.flags
    assert after.usage is before.usage and after.id == before.id
    assert before.cost is None  # records are immutable: a new one is returned


def test_unknown_stays_none() -> None:
    unknown = CallRecord(
        id="x", api="openai.chat", provider="local", host="127.0.0.1", endpoint="/v1/chat/completions",
        model="llama3.2:1b", usage=USAGE,
    )  # fmt: skip
    assert price_record(unknown, None) is unknown
    assert price_record(openai_call(usage=Usage()), None).cost is None


def test_openrouter_cost_that_agrees_is_kept_raw_without_a_flag() -> None:
    record = price_record(openrouter_call({"prompt_tokens": 1000, "cost": 0.00401}), None)
    assert record.cost is not None and record.cost.amount == GPT_4O
    assert COST_MISMATCH not in record.flags
    assert record.raw_usage["cost"] == 0.00401  # the provider's figure stays beside ours


def test_openrouter_cost_that_differs_by_more_than_1_percent_is_flagged() -> None:
    record = price_record(openrouter_call({"cost": 0.0050}), None)
    assert record.cost is not None and record.cost.amount == GPT_4O
    assert COST_MISMATCH in record.flags


def test_a_reported_cost_prices_a_model_the_table_does_not_know() -> None:
    record = price_record(openrouter_call({"cost": 0.0123}, model="someone/new-model-9b"), None)
    assert record.cost == Cost(decimal=Decimal("0.0123"), price_version="reported:openrouter")
    assert COST_MISMATCH not in record.flags


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"cost": 0.5}, Decimal("0.5")),
        ({"cost": 0}, Decimal(0)),
        ({"cost": "0.25"}, Decimal("0.25")),
        ({"cost": {"total_cost": 0.006, "input_tokens_cost": 0.001}}, Decimal("0.006")),  # Perplexity
        ({"cost": -1}, None),
        ({"cost": True}, None),
        ({"cost": float("nan")}, None),
        ({"cost": "free"}, None),
        ({"prompt_tokens": 3}, None),
        (None, None),
        ("cost", None),
    ],
)
def test_reported_cost_is_validated(raw: object, want: Decimal | None) -> None:
    assert reported_cost(raw) == want
