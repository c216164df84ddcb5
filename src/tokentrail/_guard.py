"""Keep tokentrail's own failures away from the application's calls (STYLE.md §5).

`guard(site)` swallows any `Exception` raised inside it except `BudgetExceeded`, counts it per site
and warns once per site. With ``TOKENTRAIL_STRICT=1`` (set by tokentrail's own test suite) it re-raises,
so our bugs fail our tests rather than hiding; users' own test suites keep the safe behaviour.
`suppress()` marks tokentrail's own HTTP traffic so the capture hooks let it pass unrecorded.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator

from tokentrail.errors import BudgetExceeded, InstrumentationWarning

log = logging.getLogger("tokentrail")

_errors: Counter[str] = Counter()
_lock = threading.Lock()
SUPPRESSED: contextvars.ContextVar[bool] = contextvars.ContextVar("tokentrail_suppressed", default=False)


def _strict() -> bool:
    # Logfire re-raises under pytest; we key it on an explicit variable instead, so a user's own
    # pytest run never sees tokentrail's errors in their calls.
    return os.environ.get("TOKENTRAIL_STRICT", "") not in ("", "0", "false")


class guard:
    """Run tokentrail's own bookkeeping; never let its errors reach the application.

    A class rather than a generator-based context manager: it sits on the capture hot path, where
    ``@contextmanager`` costs over a microsecond per use.
    """

    __slots__ = ("site",)

    def __init__(self, site: str) -> None:
        self.site = site

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, BudgetExceeded):
            return False
        report(self.site, exc)
        return not _strict()


def failed(site: str, exc: Exception) -> None:
    """`guard`'s handling, for hot paths that use a bare ``try``/``except Exception``: count and
    warn, and re-raise in strict mode. ``BudgetExceeded`` always propagates."""
    if isinstance(exc, BudgetExceeded):
        raise exc
    report(site, exc)
    if _strict():
        raise exc


def report(site: str, exc: BaseException) -> None:
    """Count an internal error and warn once per site."""
    with _lock:
        _errors[site] += 1
        first = _errors[site] == 1
    if first:
        log.warning("tokentrail internal error at %s: %r (your call was not affected)", site, exc, exc_info=exc)
        with contextlib.suppress(Exception):
            warnings.warn(
                f"tokentrail caught an internal error at {site}: {exc!r}. "
                "Your code still runs; this call may be missing from the ledger.",
                InstrumentationWarning,
                stacklevel=3,
            )


def error_counts() -> dict[str, int]:
    """Internal errors caught so far, by site."""
    with _lock:
        return dict(_errors)


def reset_error_counts() -> None:
    """Forget the counted errors (for tests)."""
    with _lock:
        _errors.clear()


@contextlib.contextmanager
def suppress() -> Iterator[None]:
    """HTTP sent inside this block is tokentrail's own and is not recorded."""
    token = SUPPRESSED.set(True)
    try:
        yield
    finally:
        SUPPRESSED.reset(token)


def suppressed() -> bool:
    """True inside `suppress()`."""
    return SUPPRESSED.get()
