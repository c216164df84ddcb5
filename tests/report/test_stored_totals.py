"""`Scope.stored_usage()` (`report.subtree_totals` over the ledger) equals the live `Scope.usage`, every
field: ``calls_estimated`` read 0 from the ledger, whatever the calls' provenance."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import openai
import pytest

import tokentrail
from tokentrail import report
from tokentrail.records import CallRecord
from tokentrail.sim import Simulator
from tokentrail.sinks.sqlite import SqliteSink, connect
from tokentrail.usage import Provenance, Source, Usage, UsageTotals


def test_stored_totals_equal_the_live_ones(db: Path, sim: Simulator) -> None:
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    with tokentrail.run("stored") as run:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # reported
        # Streams that asked for no usage: counted with gpt-4o-mini's own tokenizer, and estimated
        # for deepseek-chat (another model's tokenizer).
        for model in ("gpt-4o-mini", "deepseek-chat"):
            for _ in client.chat.completions.create(model=model, messages=messages, stream=True):
                pass
        with pytest.raises(openai.InternalServerError):  # no usage at all
            client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, extra_headers={"X-Sim-Fault": "500"}
            )
    stored = run.stored_usage()
    assert (stored.calls, stored.calls_estimated, stored.calls_without_usage) == (4, 2, 1)
    assert stored == run.usage


def test_every_provenance_is_summed_as_the_live_totals_sum_it(tmp_path: Path) -> None:
    # One call per (input, output) source; a count is known unless its source is missing.
    sources = list(itertools.product(Source, Source))
    records = [
        CallRecord(
            id=f"call-{i}", api="openai.chat", provider="openai", host="h", endpoint="/v1/chat/completions",
            scope_id_path=f"r/{i}", provenance=Provenance(input=inp, output=out),
            usage=Usage(input_tokens=None if inp is Source.MISSING else 10,
                        output_tokens=None if out is Source.MISSING else 1),
        )
        for i, (inp, out) in enumerate(sources)
    ]  # fmt: skip
    sink = SqliteSink(tmp_path / "sources.db")
    sink.write(records, [], 0)
    sink.close()
    live = sum((UsageTotals.of(r.usage, r.provenance) for r in records), UsageTotals())
    assert live.calls_estimated > 0
    assert report.subtree_totals(connect(tmp_path / "sources.db", readonly=True), "r") == live
