"""Shared fixtures: the simulator on loopback, a fresh ledger per test, and the network guard."""

from __future__ import annotations

import gc
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tokentrail's guard re-raises its own errors under this flag, so our bugs fail our tests.
os.environ["TOKENTRAIL_STRICT"] = "1"
os.environ.pop("TOKENTRAIL_DB", None)
os.environ.pop("TOKENTRAIL_RUN", None)

import tokentrail
from tokentrail import _guard, report
from tokentrail.sim import Simulator
from tokentrail.sinks.sqlite import connect

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    # Like pydantic-ai's ALLOW_MODEL_REQUESTS = False: no test may reach a real API.
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = host == "localhost"
        if not ok:
            raise RuntimeError(f"tests must not connect outside loopback (tried {address!r})")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def sim() -> Iterator[Simulator]:
    """One simulator for the whole session, on an ephemeral loopback port."""
    with Simulator() as server:
        yield server


_errors_seen = 0


def _collect_after_faults() -> None:
    """Collect garbage once after a test that made tokentrail fail. The error's traceback was logged
    with ``exc_info``, and pytest's log capture kept it until that test ended: the responses its frames
    held were freed only into reference cycles, which the collector finalises at a random later time,
    recording what they left unfinished in whichever ledger is open then. (A full collection costs
    ~0.15 s here, too much for every test.)"""
    global _errors_seen
    errors = sum(_guard.error_counts().values())
    if errors != _errors_seen:
        _errors_seen = errors
        gc.collect()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    """A fresh ledger with capture on (instrumented twice: installing must be idempotent)."""
    path = tmp_path / "ledger.db"
    _collect_after_faults()
    # Records an earlier test left queued go to no ledger rather than into this one. (A stream an
    # earlier test abandoned may still be finalised later by the collector: tests that assert an
    # exact count use a run of their own.)
    tokentrail.flush()
    tokentrail.instrument(path)
    tokentrail.instrument(path)
    try:
        yield path
    finally:
        tokentrail.uninstrument()


def recorded(path: Path, **filters: Any) -> list[dict[str, Any]]:
    """Every call in the ledger, after a flush, in the shape of `tokentrail calls --format jsonl`."""
    tokentrail.flush()
    return report.calls(connect(path, readonly=True), report.Filters(**filters))
