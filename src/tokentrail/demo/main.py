"""Runs the demo: simulator in-process, the agents, then the report."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import openai

import tokentrail
from tokentrail import report
from tokentrail.demo import agents
from tokentrail.report.text import render
from tokentrail.sim import Simulator
from tokentrail.sinks.sqlite import connect

TASK = "Compare three ways to cut the token spend of a customer-support agent."


def run_demo(db: Path) -> int:
    """Run the demo into ``db`` (replaced if it exists) and print the report; returns an exit status."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    with Simulator(latency_ms=5) as sim:
        base_url = sim.url + "/v1"
        tokentrail.instrument(db)
        client = openai.OpenAI(base_url=base_url, api_key="sk-demo", max_retries=2)
        aclient = openai.AsyncOpenAI(base_url=base_url, api_key="sk-demo", max_retries=2)
        with tokentrail.run("demo", task="support-costs") as session:
            steps = agents.plan(client, TASK)
            notes = agents.research(client, steps)
            angles = asyncio.run(agents.fan_out(aclient, ["latency", "caching", "routing"]))
            agents.judge(client, [notes, *angles[:2]])
            agents.write(client, base_url, notes)
        tokentrail.flush()
        served = len(sim.served)
    elapsed = time.perf_counter() - started

    db_conn = connect(db, readonly=True)
    filters = report.Filters(run="demo")
    measures = [name for name, _ in report.MEASURES]
    print(f"tokentrail demo: {served} HTTP requests served by the simulator, "
          f"{report.totals(db_conn, filters)['calls']} recorded, in {elapsed:.1f} s\n")  # fmt: skip
    for dims in (["agent", "model"], ["callsite"]):
        rows = report.summarize(db_conn, dims, filters)
        print(f"By {' / '.join(dims)}:")
        print(render(rows, [*dims, *measures], "table", total=report.totals(db_conn, filters)))
        print()
    summary = session.summary()
    print("run.summary() for trial logs:")
    print(json.dumps({k: summary[k] for k in ("total_calls", "input_tokens", "output_tokens", "reasoning_tokens",
                                              "total_tokens", "cost_usd", "calls_by_model")}, indent=2))  # fmt: skip
    print(f"\nledger: {db}\nexplore: tokentrail report --db {db} --by run,agent,tool,model"
          f"\n         tokentrail calls --db {db} --format jsonl")  # fmt: skip
    return 0 if report.totals(db_conn, filters)["calls"] == served else 1


if __name__ == "__main__":
    sys.exit(run_demo(Path(os.environ.get("TOKENTRAIL_DB", "tokentrail-demo.db"))))
