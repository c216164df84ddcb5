"""docs/support.json's merge across CI legs, and scripts/support_table.py's table and --check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.sdk.conftest import ROOT, merge


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("support_table", ROOT / "scripts" / "support_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


support_table = _script()
A = "tests/sdk/test_anthropic.py::test_create_sync"
B = "tests/sdk/test_litellm.py::test_openai_shaped"


def entry(
    provider: str, *features: str, sdk: str = "anthropic", version: str = "2.12.0", **extra: Any
) -> dict[str, Any]:
    return {
        "provider": provider,
        "features": list(features),
        "sdk": sdk,
        "sdk_version": version,
        "http": ["httpx2"],
        "records": [["ok", "reported", False]],
        "known": ["input_tokens", "output_tokens", "total_tokens"],
        **extra,
    }


def test_merge_keeps_the_other_leg_and_drops_failures_and_deleted_tests() -> None:
    previous = {
        "tests": {
            A: {"openai-2": entry("Anthropic", "non-stream")},
            B: {"openai-2": entry("OpenAI via litellm", "non-stream", sdk="litellm")},
            "tests/sdk/test_gone.py::test_x": {"openai-2": entry("Gone", "stream")},
            "tests/sdk/test_anthropic.py::test_renamed": {"openai-2": entry("Anthropic", "stream")},
        }
    }
    collected = {"tests/sdk/test_anthropic.py": {A}}  # litellm's module was skipped in this leg
    merged = merge(previous, {A: entry("Anthropic", "non-stream")}, collected, set(), "openai-3")
    assert list(merged["tests"]) == [A, B]
    assert set(merged["tests"][A]) == {"openai-2", "openai-3"} and set(merged["tests"][B]) == {"openai-2"}

    failed = merge(merged, {}, collected, {A}, "openai-3")
    assert set(failed["tests"][A]) == {"openai-2"}
    assert merge(failed, {}, collected, {A}, "openai-2")["tests"].keys() == {B}


def test_render_cells_labels_and_notes() -> None:
    data = {
        "tests": {
            A: {
                "openai-2": entry("Anthropic", "non-stream", "reasoning", http=["httpx2"]),
                "openai-3": entry("Anthropic", "non-stream", http=["httpx2"]),
            },
            "tests/sdk/test_openai.py::test_chat": {
                "openai-2": entry("OpenAI", "stream", sdk="openai", version="2.54.0", http=["httpx"]),
                "openai-3": entry(
                    "OpenAI",
                    "stream",
                    sdk="openai",
                    version="3.54.0",
                    records=[["network_error", "partial", True], ["ok", "reported", True]],
                ),
            },
            "tests/sdk/test_zz.py::test_z": {"openai-3": entry("Zeta", "cache", sdk="zz", version="1.0", http=[])},
        }
    }
    lines = support_table.render(data).splitlines()
    rows = [line for line in lines if line.startswith("| ") and "Provider" not in line]
    assert rows == [
        "| OpenAI — `openai` 3.54.0 (httpx2) / 2.54.0 (httpx) | – | ✓ reported | – | – | – "
        "| reported; cut stream: partial |",
        "| Anthropic — `anthropic` 2.12.0 (httpx2) | ✓ reported | – | – | ✓ reported (inside output) | – | reported |",
        "| Zeta — `zz` 1.0 | – | – | ✓ reported (no cache count) | – | – | reported |",
    ]


def test_check_and_rewrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {"tests": {A: {"openai-3": entry("Anthropic", "non-stream")}}}
    (tmp_path / "support.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{support_table.START}\nstale\n{support_table.END}\n\nrest\n")
    args = ["--json", str(tmp_path / "support.json"), "--readme", str(readme)]
    assert support_table.main([*args, "--check"]) == 1
    assert support_table.main(args) == 0
    text = readme.read_text()
    assert "stale" not in text and "| Anthropic — `anthropic` 2.12.0 (httpx2) | ✓ reported |" in text
    assert text.startswith("# x\n\n") and text.endswith(f"{support_table.END}\n\nrest\n")
    assert support_table.main([*args, "--check"]) == 0
    capsys.readouterr()


def test_the_readme_block_is_up_to_date() -> None:
    assert support_table.main(["--check"]) == 0, "run python scripts/support_table.py"
