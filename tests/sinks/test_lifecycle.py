"""Records survive process exit, SIGTERM and fork; many processes share one ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import tokentrail  # noqa: F401  (conftest's environment)
from tokentrail import report
from tokentrail.sinks.sqlite import connect

PROGRAM = textwrap.dedent(
    """
    import json, os, sys, time
    import httpx
    import tokentrail

    BODY = json.dumps({{"model": "gpt-4o-mini", "choices": [],
                       "usage": {{"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}}}).encode()
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=BODY)))

    def calls(n):
        for _ in range(n):
            client.post("http://llm.test/v1/chat/completions", json={{"model": "gpt-4o-mini", "messages": []}})

    tokentrail.instrument(sys.argv[1])
    {body}
    """
)


def run_program(tmp_path: Path, body: str, *, wait: bool = True) -> tuple[subprocess.Popen[str], Path]:
    db = tmp_path / "ledger.db"
    # A file of its own per program: rewriting one file while an earlier child still reads it made
    # that child run an empty program (rc 0, no records: 900 of 1,200 in test_processes_share_one_ledger).
    script = tmp_path / f"program{len(list(tmp_path.glob('program*.py')))}.py"
    script.write_text(PROGRAM.format(body=textwrap.dedent(body).strip()))
    env = {**os.environ, "TOKENTRAIL_STRICT": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(db)], env=env, stdout=subprocess.PIPE, text=True)
    if wait:
        proc.communicate(timeout=60)
    return proc, db


def count(db: Path) -> int:
    return int(report.totals(connect(db, readonly=True))["calls"])


def test_records_are_flushed_on_normal_exit(tmp_path: Path) -> None:
    proc, db = run_program(tmp_path, "calls(250)")
    assert proc.returncode == 0
    assert count(db) == 250


def test_records_are_flushed_on_sigterm(tmp_path: Path) -> None:
    proc, db = run_program(tmp_path, 'calls(120); print("ready", flush=True); time.sleep(60)', wait=False)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # the default disposition still acts after the flush
    assert count(db) == 120


def test_the_writer_survives_fork(tmp_path: Path) -> None:
    body = """
    calls(10)
    pid = os.fork()
    if pid == 0:
        calls(7)
        sys.exit(0)
    os.waitpid(pid, 0)
    calls(5)
    """
    proc, db = run_program(tmp_path, body)
    assert proc.returncode == 0
    rows = connect(db, readonly=True).execute("SELECT pid, COUNT(*) FROM calls GROUP BY pid").fetchall()
    assert sorted(n for _, n in rows) == [7, 15]


def test_processes_share_one_ledger(tmp_path: Path) -> None:
    procs = [run_program(tmp_path, "calls(300)", wait=False)[0] for _ in range(4)]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    assert count(tmp_path / "ledger.db") == 1200


def test_a_stream_still_held_at_exit_is_recorded(tmp_path: Path) -> None:
    # Sent and never read nor closed, still referenced when the program ends: the prompt was billed.
    body = """
    events = b'data: {"model": "gpt-4o-mini", "choices": [{"delta": {"content": "Hi"}}]}\\n\\n'
    streaming = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(events))))
    request = streaming.build_request("POST", "http://llm.test/v1/chat/completions",
                                      json={"model": "gpt-4o-mini", "messages": [], "stream": True})
    held = streaming.send(request, stream=True)
    """
    proc, db = run_program(tmp_path, body)
    assert proc.returncode == 0
    rows = connect(db, readonly=True).execute("SELECT status, stream, input_source FROM calls").fetchall()
    assert [tuple(r) for r in rows] == [("cancelled", 1, "counted")]


def test_sigterm_inside_a_flush_of_the_main_thread_ends_the_process_with_its_records(tmp_path: Path) -> None:
    # Pool.terminate() signals workers that are in their last flush; the handler runs inside it, on
    # the thread that holds the pipeline's locks. It used to wait for them forever.
    body = """
    import signal
    calls(30)
    tokentrail.subscribe(lambda record: os.kill(os.getpid(), signal.SIGTERM))  # during processing
    calls(1)
    tokentrail.flush()
    time.sleep(30)  # not reached: the signal ends the process once the flush is done
    """
    proc, db = run_program(tmp_path, body)
    assert proc.returncode == -signal.SIGTERM
    assert count(db) == 31
