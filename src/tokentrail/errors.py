"""Exceptions and warnings raised by tokentrail.

    TokentrailError
    ├── BudgetExceeded      raised before a request is sent, never after
    ├── ConfigError         a bad setting, named with where it came from
    └── StoreError          the ledger cannot be opened or read

    TokentrailWarning (UserWarning)
    ├── InstrumentationWarning   an internal error was caught; the application's call was untouched
    └── RecordsDroppedWarning    the record queue overflowed; the drop is counted in the ledger
"""

from __future__ import annotations


class TokentrailError(Exception):
    """Base class of every exception tokentrail raises on purpose."""


class BudgetExceeded(TokentrailError):
    """A budget would be exceeded; raised before any byte of the request is sent."""


class ConfigError(TokentrailError):
    """A setting is invalid."""


class StoreError(TokentrailError):
    """The ledger cannot be opened, migrated or read."""


class TokentrailWarning(UserWarning):
    """Base class of tokentrail's warnings."""


class InstrumentationWarning(TokentrailWarning):
    """tokentrail caught an error of its own; the application's call was not affected."""


class RecordsDroppedWarning(TokentrailWarning):
    """Records were dropped because the queue was full; their number is kept in the ledger."""
