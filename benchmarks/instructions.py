#!/usr/bin/env python
"""CPU instructions tokentrail adds to one call, counted by valgrind (callgrind): a figure that does
not move with the machine's load or clock, for comparing two commits on different days.

Each row runs in one process under ``valgrind --tool=callgrind --dump-before=getppid``: every
``os.getppid()`` call of the script makes callgrind write the count since the last one, so each
phase is counted by itself. The writer thread is parked; after a warm-up (imports, caches, the
ledger's tables, the scopes announced), the phases of N calls are:

- ``off``: the raw call, capture off;
- ``caller``: capture on, the records left queued (what the caller's thread pays);
- ``process``: ``pipeline.process_pending()`` over those N records (built, priced, counted in totals);
- ``write``: ``pipeline.write_ready()`` (one SQLite batch, one commit).

Instructions are not time: a cache miss or a
system call costs more than its count says; quote the µs figures of ``overhead.py`` as the measure,
these to see what a change took off. On the machines of docs/performance.md, ~8,500 instructions of
this mix took 1 µs on a day the raw call of row 5 cost 54 µs.

    python benchmarks/instructions.py                  # rows 5 and 6, N = 2,000 (~4 min a row)
    python benchmarks/instructions.py --rows 5,6,7,8 --n 1000
    python benchmarks/instructions.py --rows 5s,6s        # BENCHMARKING.md's sketch, the bar to beat
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def child(row_key: str, n: int, db: str) -> None:
    """Run the phases of a row with n calls each, a count dumped at each ``os.getppid()``. For
    BENCHMARKING.md's sketch (rows 5s, 6s) its drain (parse and SQLite) is "process", "write" is empty."""
    sys.path.insert(0, str(Path(__file__).parent))
    import _sketch
    import httpx2
    import overhead

    import tokentrail
    from tokentrail.sinks import pipeline

    bench = overhead.Bench(argparse.Namespace(), Path(db))
    bench.rows_by_key = {r.key: r for r in overhead.all_rows()}
    row = bench.rows_by_key[row_key]
    run = row.make(bench)  # row 9's simulator runs in a child process, which callgrind does not count
    if row.peer == "sketch":
        _sketch.INTERVAL_S = 3600.0  # its writer waits an hour too
        sketch = _sketch.SketchToggle(httpx2, db + ".sketch")
        on, off, flush = sketch.on, sketch.off, sketch.flush
        process, write = sketch.flush, lambda: None
    else:
        pipeline.interval = 3600.0  # the writer waits an hour: processing and writing run here, when told
        on, off, flush = (lambda: tokentrail.instrument(db)), tokentrail.uninstrument, tokentrail.flush
        process, write = pipeline.process_pending, pipeline.write_ready
    on()
    run(max(200, n // 5))
    flush()
    off()
    run(50)
    os.getppid()
    run(n)  # off
    os.getppid()
    on()
    run(50)
    flush()
    os.getppid()
    run(n)  # caller
    os.getppid()
    process()
    os.getppid()
    write()
    os.getppid()
    os._exit(0)  # without the exit-time flush


def per_call(row: str, n: int) -> dict[str, float]:
    """Instructions per call of each phase."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--dump-before=getppid", f"--callgrind-out-file={out}",
               sys.executable, __file__, "--child", row, str(n), str(Path(tmp) / "ledger.db")]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True)
        if Path(f"{out}.7").exists():  # something else called getppid(): the phases are not where we think
            raise RuntimeError("callgrind wrote more dumps than the script asked for")
        counts = {}
        for dump in range(1, 7):
            match = re.search(rb"^(?:summary|totals): (\d+)", Path(f"{out}.{dump}").read_bytes(), re.M)
            if match is None:
                raise RuntimeError(f"no instruction total in callgrind's dump {dump} of {cmd}")
            counts[dump] = int(match[1])
    # dump 2: off; 3: instrument() and a warm-up (not counted); 4: caller; 5: process; 6: write
    return {"off": counts[2] / n, "caller": counts[4] / n, "process": counts[5] / n, "write": counts[6] / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="5,6", help="overhead.py rows, e.g. 5,6,7,8 (default 5,6)")
    parser.add_argument("--n", type=int, default=2000, help="calls per phase (default 2,000)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    print(f"instructions per call (callgrind Ir, N = {args.n} calls a phase)")
    print()
    print("| row | raw call | caller's thread | process_pending | write_ready | added in all |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in args.rows.split(","):
        phases = per_call(row, args.n)
        caller = phases["caller"] - phases["off"]
        cells = [
            phases["off"],
            caller,
            phases["process"],
            phases["write"],
            caller + phases["process"] + phases["write"],
        ]
        print(f"| {row} | " + " | ".join(f"{c / 1000:,.1f}k" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
