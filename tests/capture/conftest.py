"""Fixtures shared by the capture tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tokentrail
from tokentrail.capture import inject


@pytest.fixture
def injecting(tmp_path: Path) -> Iterator[Path]:
    """Capture on, inject mode on, nothing learnt (no endpoint refused, no server's unasked usage)."""
    path = tmp_path / "ledger.db"
    tokentrail.flush()
    tokentrail.instrument(path, stream_usage="inject")
    inject._rejected.clear()
    inject._unasked.clear()
    try:
        yield path
    finally:
        tokentrail.uninstrument()
        inject.configure(None)
        inject._rejected.clear()
        inject._unasked.clear()
