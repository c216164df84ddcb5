"""Observing HTTP exchanges, one module per HTTP library. `install()` / `uninstall()` are idempotent."""

from __future__ import annotations

from tokentrail.capture import httpx as _httpx


def install() -> list[str]:
    """Hook every supported HTTP library that is importable; returns the names hooked."""
    return _httpx.install()


def uninstall() -> None:
    """Restore every hooked library, where our hook is still the one in place."""
    _httpx.uninstall()
