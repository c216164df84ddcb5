"""`tokentrail prices` and `tokentrail reprice` as real subprocesses, and pricing with no network at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from tokentrail import cli
from tokentrail.cli import prices as prices_command
from tokentrail.cli import reprice as reprice_command
from tokentrail.records import CallRecord, Cost
from tokentrail.sinks.sqlite import CALL_COLUMNS, call_row, connect
from tokentrail.usage import Usage

# The real top-level `tokentrail` entry point, with the pricing commands added if the CLI does not
# list them yet: the same parser, handlers, error handling and exit codes as `python -m tokentrail`.
RUNNER = textwrap.dedent(
    """
    import sys
    from tokentrail import cli
    from tokentrail.cli import prices, reprice
    cli.COMMANDS = (*cli.COMMANDS, *(m for m in (prices, reprice) if m not in cli.COMMANDS))
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def tokentrail(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TOKENTRAIL_PRICES"} | (env or {})
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=environ
    )


def in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (cheaper than a subprocess, for the variations)."""
    commands = (prices_command, reprice_command)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, *(m for m in commands if m not in cli.COMMANDS)))
    status = cli.main(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_prices_of_one_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    done = tokentrail("prices", "gpt-4o", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "openai/gpt-4o, from genai-prices==" in out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[3:]}
    assert lines == {"input": "2.5", "cache_read": "1.25", "cache_write": "2.5", "output": "10", "reasoning": "10"}

    status, out, _ = in_process(capsys, monkeypatch, "prices", "gemini-2.5-pro", "-p", "gemini", "--format", "json")
    data = json.loads(out)
    assert status == 0
    assert data["matched"] == {"provider": "google", "model": "gemini-2.5-pro"}
    assert data["usd_per_mtok"]["input"] == {"base": "1.25", "tiers": [{"over_input_tokens": 200000, "rate": "2.5"}]}

    status, _, err = in_process(capsys, monkeypatch, "prices", "no-such-model")
    assert status == 1
    assert "no price for 'no-such-model'" in err


def test_prices_summary_names_the_table_and_the_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tokentrail.toml").write_text('[prices."my-model"]\ninput_per_mtok = 0.5\noutput_per_mtok = 1.5\n')
    done = tokentrail("prices", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["table"]["name"] == "genai-prices" and data["table"]["models"] > 2000
    assert data["overrides"] == {"file": str(tmp_path / "tokentrail.toml"), "models": ["my-model"]}

    _, out, _ = in_process(capsys, monkeypatch, "prices", "my-model")
    assert f"from override:{tmp_path / 'tokentrail.toml'}" in out

    (tmp_path / "tokentrail.toml").write_text('[prices."my-model"]\ninput_per_mtok = -0.5\noutput_per_mtok = 1\n')
    status, _, err = in_process(capsys, monkeypatch, "prices")
    assert status == 2
    assert 'tokentrail.toml: prices."my-model".input_per_mtok must be a non-negative number' in err


def call(id: str, model: str, provider: str = "openai", run: str = "r1", **kw: object) -> CallRecord:
    return CallRecord(
        id=id, api="openai.chat", provider=provider, host="h", endpoint="/v1/chat/completions", model=model,
        run=run, run_id=f"id-{run}", started_ns=1_795_000_000_000_000_000,
        usage=Usage(input_tokens=1_000_000, cache_read_tokens=400_000, output_tokens=100_000), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_reprice_recomputes_stored_costs_in_one_go(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "ledger.db"
    db = connect(ledger)
    rows = [
        call("a", "gpt-4o", cost=Cost(decimal=Decimal("0.1"), price_version="genai-prices==0.0.1")),
        call("b", "my-model", provider="local"),  # unknown until the overrides file prices it
        call("c", "mystery-model", provider="local"),  # unknown either way
        call("d", "openai/gpt-4o", provider="openrouter", raw_usage_json='{"cost":9.99}'),
        call("e", "gpt-4o", run="r2", cost=Cost(decimal=Decimal("0.1"), price_version="old")),
    ]
    db.executemany(
        f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})",
        [call_row(r) for r in rows],
    )
    db.close()
    prices = tmp_path / "prices.toml"
    prices.write_text('[prices."my-model"]\ninput_per_mtok = 1\noutput_per_mtok = 2\n')

    done = tokentrail("reprice", "--db", str(ledger), "--run", "r1", "--prices", str(prices), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # gpt-4o: 0.6M × 2.5 + 0.4M × 1.25 + 0.1M × 10 = 3; my-model: 1 + 0.2; OpenRouter gpt-4o: 3.
    assert "repriced 4 call(s) in run r1: 3 changed" in done.stdout
    assert "total: $7.200000 (was $0.100000)" in done.stdout
    assert "1 call(s) have no price" in done.stdout

    db = connect(ledger, readonly=True)
    stored = {r["id"]: (r["cost_usd"], r["price_version"], r["flags"]) for r in db.execute("SELECT * FROM calls")}
    version = stored["a"][1]
    assert version is not None and version.startswith("genai-prices==") and version != "genai-prices==0.0.1"
    assert Decimal(stored["a"][0]) == 3
    assert stored["b"] == ("1.2", f"override:{prices}", "")
    assert stored["c"] == (None, None, "")
    assert Decimal(stored["d"][0]) == 3 and stored["d"][2] == "cost_mismatch"
    assert stored["e"] == ("0.1", "old", "")  # another run: untouched

    status, out, _ = in_process(capsys, monkeypatch, "reprice", "--db", str(ledger), "--prices", str(prices))
    assert status == 0
    assert "repriced 5 call(s): 1 changed" in out  # only run r2's stale call is left to change

    status, _, err = in_process(capsys, monkeypatch, "reprice", "--db", str(tmp_path / "none.db"))
    assert status == 2 and "no tokentrail ledger" in err
    assert not (tmp_path / "none.db").exists()


OFFLINE = textwrap.dedent(
    """
    import socket, threading
    def refuse(*args, **kwargs):
        raise RuntimeError(f"network use: {args!r}")
    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.create_connection = socket.getaddrinfo = refuse

    from tokentrail import pricing
    from tokentrail.pricing import table
    from tokentrail.records import CallRecord
    from tokentrail.usage import Usage
    usage = Usage(input_tokens=100, output_tokens=10)
    priced = 0
    ours = {pid: name for name, pid in table.PROVIDER_IDS.items()}
    for provider in table.snapshot().providers:
        for model in provider.models[:10]:
            for name in (ours.get(provider.id, "local"), "local"):  # by provider, and by name alone
                record = CallRecord(
                    id="x", api="openai.chat", provider=name, host="h", endpoint="/", model=model.id, usage=usage
                )
                priced += pricing.price(record) is not None
    import genai_prices.update_prices as updater
    assert updater._shared_updater.ref_count == 0 and updater._shared_updater.thread is None
    assert not [t for t in threading.enumerate() if "genai" in t.name]
    print(priced)
    """
)


def test_pricing_never_touches_the_network(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", OFFLINE], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 200
