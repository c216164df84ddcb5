"""The enricher in the real pipeline: the openai SDK against the simulator, priced into the ledger and scopes."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

import tokentrail
from tokentrail.enrich.price import price_record
from tokentrail.pricing import table
from tokentrail.sim import Simulator
from tokentrail.sinks import pipeline
from tokentrail.sinks.sqlite import connect


@pytest.fixture
def priced() -> Iterator[None]:
    """The price enricher registered as `instrument()` will register it (if it is not already)."""
    added = price_record not in pipeline._enrichers
    pipeline.add_enricher(price_record)
    yield
    if added:
        pipeline._enrichers.remove(price_record)


def test_calls_reach_the_ledger_and_the_scopes_priced(db: Path, sim: Simulator, priced: None) -> None:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0) as client:
        with tokentrail.run("priced") as run:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
            client.chat.completions.create(model="my-local-model", messages=[{"role": "user", "content": "hi"}])
    tokentrail.flush()
    rows = connect(db, readonly=True).execute("SELECT * FROM calls ORDER BY started_ns").fetchall()
    known, unknown = rows
    # The simulator is on loopback ("local"): gpt-4o-mini is matched by name, at OpenAI's $0.15 / $0.60.
    want = (Decimal(known["input_tokens"]) * Decimal("0.15") + Decimal(known["output_tokens"]) * Decimal("0.60")) / (
        10**6
    )
    assert Decimal(known["cost_usd"]) == want > 0
    assert known["price_version"] == table.price_version()
    assert unknown["cost_usd"] is None and unknown["price_version"] is None
    assert run.cost == want  # the live total says what it could price; the unknown call adds nothing
