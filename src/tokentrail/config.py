"""Settings: from arguments, then ``TOKENTRAIL_*`` environment variables, then defaults."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "tokentrail.db"


def db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The ledger file: the argument, else ``$TOKENTRAIL_DB``, else ``./tokentrail.db``."""
    if db is not None:
        return Path(db)
    return Path(os.environ.get("TOKENTRAIL_DB") or DEFAULT_DB)
