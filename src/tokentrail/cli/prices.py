"""``tokentrail prices``: the prices in use, per million tokens of each kind, and where they come from."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tokentrail import pricing
from tokentrail.pricing import table
from tokentrail.pricing.rates import Rate, Rates, Tiered
from tokentrail.report.text import render

KINDS = (
    ("input", "plain (uncached) input"),
    ("cache_read", "input read from the prompt cache"),
    ("cache_write", "input written to the prompt cache"),
    ("output", "generated tokens"),
    ("reasoning", "reasoning / thinking tokens"),
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prices", help="the prices in use (USD per million tokens) and their source")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a model name; without it, a summary of the tables")
    p.add_argument(
        "--provider",
        "-p",
        metavar="NAME",
        help="who serves it, as tokentrail names providers (openai, anthropic, gemini, openrouter, …); "
        "default: matched by the model's name",
    )
    p.add_argument(
        "--prices",
        metavar="FILE",
        help="price overrides (default: $TOKENTRAIL_PRICES, else tokentrail.toml or pyproject.toml from here upward)",
    )
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    overrides = pricing.configure(args.prices)
    if args.model is None:
        return _summary(overrides, args.format)
    rates = pricing.rates_for(args.model, args.provider)
    if rates is None:
        where = f" served by {args.provider}" if args.provider else ""
        print(
            f"tokentrail: no price for {args.model!r}{where} in {table.price_version()} or the overrides",
            file=sys.stderr,
        )
        return 1
    if args.format == "json":
        print(json.dumps(_as_json(args.model, rates), indent=2))
        return 0
    matched = f"{rates.provider}/{rates.model}" if rates.provider else rates.model
    print(f"{args.model}: {matched}, from {rates.source}")
    print(render(_rows(rates), ("kind", "usd_per_mtok", "billed_as"), "table"))
    if rates.per_request is not None:
        print(f"plus {rates.per_request} USD per call")
    return 0


def _rows(rates: Rates) -> list[dict[str, Any]]:
    own = {"input": rates.input, "cache_read": rates.cache_read, "cache_write": rates.cache_write,
           "output": rates.output, "reasoning": rates.reasoning}  # fmt: skip
    effective = rates.effective()
    rows: list[dict[str, Any]] = []
    for kind, meaning in KINDS:
        rate = effective[kind]
        if own[kind] is not None:
            note = meaning
        elif kind in ("cache_read", "cache_write"):
            note = "as input (no separate rate)"
        elif kind == "reasoning":
            note = "as output (the provider bills reasoning as output)"
        else:
            note = "not priced"
        rows.append({"kind": kind, "usd_per_mtok": _text(rate), "billed_as": note})
    if rates.cache_write_1h is not None:
        rows.append(
            {"kind": "cache_write_1h", "usd_per_mtok": _text(rates.cache_write_1h), "billed_as": "1-hour cache writes"}
        )
    return rows


def _text(rate: Rate | None) -> str | None:
    return None if rate is None else str(rate)


def _json_rate(rate: Rate | None) -> Any:
    if rate is None:
        return None
    return rate.as_json() if isinstance(rate, Tiered) else str(rate)


def _as_json(model: str, rates: Rates) -> dict[str, Any]:
    effective = rates.effective()
    return {
        "model": model,
        "matched": {"provider": rates.provider, "model": rates.model},
        "source": rates.source,
        "usd_per_mtok": {kind: _json_rate(effective[kind]) for kind, _ in KINDS}
        | {"cache_write_1h": _json_rate(rates.cache_write_1h)},
        "usd_per_call": None if rates.per_request is None else str(rates.per_request),
    }


def _summary(overrides: pricing.Overrides, fmt: str) -> int:
    models, providers = table.model_count()
    names = sorted(r.model for r in overrides.rates.values())
    if fmt == "json":
        data = {
            "table": {"name": table.NAME, "version": table.version(), "price_version": table.price_version(),
                      "models": models, "providers": providers},
            "overrides": {"file": str(overrides.path) if overrides.path else None, "models": names},
        }  # fmt: skip
        print(json.dumps(data, indent=2))
        return 0
    print(f"table:     {table.price_version()}: {models:,} models from {providers} providers (bundled, offline)")
    if overrides.path is None:
        print('overrides: none (add [prices."MODEL"] to tokentrail.toml, or set TOKENTRAIL_PRICES)')
    else:
        listed = ", ".join(names) if names else "no models"
        print(f"overrides: {overrides.path}: {len(names)} model(s): {listed}")
    return 0
