#!/usr/bin/env python
"""How fast is this machine on the goals' scale? The raw openai SDK call, no tracker.

BENCHMARKING.md states its reference points for "this machine kind", where openai 2.54's
``chat.completions.create`` over ``httpx.MockTransport`` cost ~800–1,000 µs of CPU. This prints the
same call's process CPU here (after a warm-up, 7 blocks of 300 calls): divide by ~900 µs to see how
much faster or slower than the goals' machine today's µs are. Run it with openai 2.x installed (e.g.
``.venv-openai2/bin/python benchmarks/calibrate.py``) to compare like with like.

    python benchmarks/calibrate.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx
import openai

sys.path.insert(0, str(Path(__file__).parent))
import overhead

BLOCKS, CALLS = 7, 300


def main() -> int:
    body, _, _, _ = overhead._handlers(httpx)
    client = openai.OpenAI(base_url=overhead.BASE_URL, api_key="sk-bench", max_retries=0,
                           http_client=httpx.Client(transport=httpx.MockTransport(body)))  # fmt: skip
    create = client.chat.completions.create
    for _ in range(CALLS):
        create(model=overhead.MODEL, messages=overhead.MESSAGES)
    blocks = []
    for _ in range(BLOCKS):
        started = time.process_time()
        for _ in range(CALLS):
            create(model=overhead.MODEL, messages=overhead.MESSAGES)
        blocks.append((time.process_time() - started) / CALLS * 1e6)
    median = statistics.median(blocks)
    spread = f"{min(blocks):,.0f} … {max(blocks):,.0f}; {BLOCKS} blocks of {CALLS}"
    print(f"openai {openai.__version__}, httpx {httpx.__version__}: raw create over MockTransport, "
          f"median {median:,.0f} µs of CPU ({spread})")  # fmt: skip
    print(f"≈ {median / 900:.2f}× the time on the goals' machine kind (~800–1,000 µs there)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
