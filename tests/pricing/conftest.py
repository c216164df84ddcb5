"""Every pricing test starts from a clean slate: no overrides file in reach, no cached lookups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tokentrail import pricing


@pytest.fixture(autouse=True)
def clean_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # no tokentrail.toml or pyproject.toml of the repo is found from here
    monkeypatch.delenv("TOKENTRAIL_PRICES", raising=False)
    pricing.reset()
    yield
    pricing.reset()
