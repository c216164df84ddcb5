"""``tokentrail sim``: the local LLM simulator (OpenAI wire format, real token counts, faults)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sim", help="run the local LLM simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before each answer")
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered with 500 (0–1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from tokentrail.sim import serve

    serve(args.host, args.port, latency_ms=args.latency_ms, fail_rate=args.fail_rate, seed=args.seed)
    return 0
