"""The optional llama.cpp tier: a real inference server as an outside reference for the token counter.

``scripts/test-llamacpp`` builds ``.venv-llamacpp`` (llama-cpp-python compiles llama.cpp from source)
and runs this directory. Elsewhere every test here skips for want of ``llama_cpp``; this conftest
imports nothing from it, so collecting the directory costs nothing.

One server for the session, started as a subprocess on loopback: llama-cpp-python's OpenAI-compatible
server (``python -m llama_cpp.server``) with a config file that serves the same tiny random-weight
model (`tests.llamacpp.tiny_model`, written once per session) under two names:

- ``gpt-4o-mini``: the chat template in the GGUF file, GPT-4o's framing. tokentrail maps the name to
  o200k_base, which is this model's vocabulary, so its counts are ``counted``.
- ``tiny-chatml``: llama-cpp-python's built-in ``chatml`` format, a framing tokentrail does not assume
  for an unknown name; counted with o200k_base as a stand-in, so ``estimated``.

Greedy sampling (temperature 0) with a fixed seed makes the random model's output repeatable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHAT_MODEL = "gpt-4o-mini"
CHATML_MODEL = "tiny-chatml"
N_CTX = 2048
_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LlamaServer:
    base_url: str
    """``http://127.0.0.1:PORT/v1``, as the openai SDK takes it."""
    model_path: Path
    log_path: Path

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random-weight o200k model, written once per session (about 10 s: merges are recovered in
    pure Python from 200k ranks)."""
    from tests.llamacpp import tiny_model

    return tiny_model.write(tmp_path_factory.mktemp("llamacpp") / "tiny-o200k.gguf")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(base_url: str) -> bool:
    # urllib, not httpx: the readiness poll must never reach a ledger.
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-cpp-python's OpenAI-compatible server on an ephemeral loopback port, for the session."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] is not installed: this tier runs with scripts/test-llamacpp")
    work = tmp_path_factory.mktemp("llamacpp-server")
    port = _free_port()
    common = {
        "model": str(tiny_gguf),
        "n_ctx": N_CTX,
        "seed": 1234,
        "n_threads": 1,
        "n_threads_batch": 1,
        "verbose": False,
    }
    config = {
        "host": "127.0.0.1",
        "port": port,
        # Sequential tests; a new request must not cut a stream another test is still reading.
        "interrupt_requests": False,
        "models": [
            {**common, "model_alias": CHAT_MODEL},
            {**common, "model_alias": CHATML_MODEL, "chat_format": "chatml"},
        ],
    }
    config_path = work / "config.json"
    config_path.write_text(json.dumps(config))
    log_path = work / "server.log"
    # The server reads HOST and PORT from the environment ahead of its config; pin them.
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    env.pop("CONFIG_FILE", None)
    base_url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--config_file", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = LlamaServer(base_url=base_url, model_path=tiny_gguf, log_path=log_path)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _ready(base_url):
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server not ready after {_START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# --- measured differences, printed at the end of the run ---------------------------------------------

MEASURED: list[dict[str, object]] = []
"""One row per comparison: what was counted, tokentrail's figure, the server's, and the difference."""


def measure(what: str, case: str, ours: int, server: int, note: str = "") -> int:
    """Record one counter-vs-server comparison for the summary; returns ours - server."""
    MEASURED.append({"what": what, "case": case, "ours": ours, "server": server, "diff": ours - server, "note": note})
    return ours - server


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEASURED:
        return
    terminalreporter.section("tokentrail's counter against llama.cpp's reported usage")
    terminalreporter.write_line(f"{'what':<34} {'case':<28} {'ours':>6} {'server':>6} {'diff':>6}  note")
    for r in MEASURED:
        line = f"{r['what']!s:<34} {r['case']!s:<28} {r['ours']:>6} {r['server']:>6} {r['diff']:>+6}  {r['note']}"
        terminalreporter.write_line(line.rstrip())
