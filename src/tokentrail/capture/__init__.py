"""Observing HTTP exchanges, one module per HTTP library. `install()` / `uninstall()` are idempotent.

A library is hooked when it is imported: at once if it already is, else by a post-import hook, so
`instrument()` imports nothing the program does not use (aiohttp alone costs ~180 ms to import) and
`tokentrail run` can instrument before the program has imported anything.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import wrapt

from tokentrail._guard import guard
from tokentrail.capture import aiohttp as _aiohttp
from tokentrail.capture import botocore as _botocore
from tokentrail.capture import httpx as _httpx
from tokentrail.capture import requests as _requests

_LIBRARIES: dict[str, tuple[Callable[[], list[str]], Callable[[], None]]] = {
    "httpx": (_httpx.install, _httpx.uninstall),
    "httpx2": (_httpx.install, _httpx.uninstall),
    "requests": (_requests.install, _requests.uninstall),
    "aiohttp": (_aiohttp.install, _aiohttp.uninstall),
    "botocore": (_botocore.install, _botocore.uninstall),
}
_enabled = False
_registered: set[str] = set()


def _on_import(name: str) -> Callable[[object], None]:
    def hook(module: object) -> None:
        if _enabled:
            with guard("capture.install"):
                _LIBRARIES[name][0]()

    return hook


def install() -> list[str]:
    """Hook every supported HTTP library now imported, and each of the others when it is imported.

    Returns the names hooked now.
    """
    global _enabled
    _enabled = True
    hooked: list[str] = []
    for name, (install_one, _) in _LIBRARIES.items():
        if name in sys.modules:
            hooked += [n for n in install_one() if n not in hooked]
        elif name not in _registered:
            _registered.add(name)
            wrapt.register_post_import_hook(_on_import(name), name)
    return hooked


def uninstall() -> None:
    """Restore every hooked library, where our hook is still the one in place."""
    global _enabled
    _enabled = False
    for _, uninstall_one in _LIBRARIES.values():
        uninstall_one()
