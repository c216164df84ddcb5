"""Fixtures for the framework adapters: capture on, the adapters installed, and a way to count attempts.

Each framework is optional (``pytest.importorskip`` in its module); these tests run where it is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tokentrail import integrations
from tokentrail.sim import Simulator

# Warnings that are the frameworks' own, not ours (filterwarnings = error): narrow, and only here.
FRAMEWORK_WARNINGS = (
    # crewai 1.15 reads its own deprecated Agent fields (allow_code_execution, function_calling_llm…).
    r"ignore::DeprecationWarning:crewai(\..*)?",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == Path(__file__).parent:
            for spec in FRAMEWORK_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture
def adapters(db: Path) -> Iterator[list[str]]:
    """Capture on (the ``db`` fixture) and every adapter installed; both undone afterwards."""
    names = integrations.install()
    try:
        yield names
    finally:
        integrations.uninstall()


@pytest.fixture
def attempts(sim: Simulator, db: Path) -> Callable[[], tuple[int, list[dict[str, Any]]]]:
    """``attempts()`` → (HTTP attempts the simulator served since the test began, the records stored)."""
    start = len(sim.served)
    return lambda: (len(sim.served) - start, recorded(db))


def names(records: list[dict[str, Any]]) -> list[tuple[str | None, str | None, str | None]]:
    """(agent, step, tool) of each record, oldest first."""
    return [(r["agent"], r["step"], r["tool"]) for r in records]
