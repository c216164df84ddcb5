"""Capture must never fail a call. tokentrail's writer thread prices the first call by importing
genai_prices, whose package imports httpx2; openai 2.x, which sends through httpx, still looks httpx2 up
in ``sys.modules`` (without the import lock) on every request and every parse. While the writer thread
is inside that import, a call on the program's thread finds a half-made module and fails with
``AttributeError: partially initialized module 'httpx2' has no attribute 'Timeout'``. Seen first as a
flaky instructor retry here (an SDK retry of a 429 lands in that window); this test holds the window
open on purpose (a slow import of httpx2 on a thread other than the main one). The fix: instrument()
imports what the writer will need on the caller's thread, so no import happens in the background."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokentrail.sim import Simulator

openai = pytest.importorskip("openai")
if not openai.__version__.startswith("2."):
    pytest.skip("openai 2.x only (3.x sends through httpx2 itself)", allow_module_level=True)
if importlib.util.find_spec("httpx2") is None:
    pytest.skip("needs httpx2 installed but not imported by the program", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import importlib.machinery, sys, threading

    started, release = threading.Event(), threading.Event()

    class SlowHttpx2(importlib.machinery.PathFinder):
        # The module is in sys.modules while it executes: keep it there, half made, until released.
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name != "httpx2" or threading.current_thread() is threading.main_thread():
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path, target)
            run = spec.loader.exec_module

            def exec_module(module):
                started.set()
                release.wait(10)
                run(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, SlowHttpx2)

    import openai, tokentrail

    tokentrail.instrument(sys.argv[2])  # imports what the writer will need, on this thread
    client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="sk-test", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    imported_in_background = started.wait(2)  # the writer picks the record up within milliseconds
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        print("second call ok; httpx2 imported by a background thread:", imported_in_background)
    finally:
        release.set()
    """
)


def test_a_call_made_while_the_writer_thread_loads_prices_succeeds(sim: Simulator, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, sim.url, str(tmp_path / "ledger.db")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "second call ok; httpx2 imported by a background thread: False" in result.stdout
