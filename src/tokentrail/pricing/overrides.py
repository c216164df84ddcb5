"""Per-model prices from the user's config; they win over the shipped table.

In ``tokentrail.toml``::

    [prices."my-model"]
    input_per_mtok = 0.5          # USD per million plain input tokens (required)
    output_per_mtok = 1.5         # USD per million output tokens, reasoning included (required)
    cache_read_per_mtok = 0.05    # optional; default: the input rate
    cache_write_per_mtok = 0.625  # optional; default: the input rate

or the same under ``[tool.tokentrail.prices."my-model"]`` in ``pyproject.toml``. The file is
``$TOKENTRAIL_PRICES`` if set, else the first ``tokentrail.toml`` — or ``pyproject.toml`` with a
``[tool.tokentrail]`` table — found from the current directory upward (``tokentrail.toml`` first
within a directory). Model names match case-insensitively, the answered or the requested name.
Numbers may be written as strings (``"0.15"``) to keep them exact.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tokentrail.errors import ConfigError
from tokentrail.pricing.rates import Rates

ENV = "TOKENTRAIL_PRICES"
FIELDS = {
    "input_per_mtok": "input",
    "output_per_mtok": "output",
    "cache_read_per_mtok": "cache_read",
    "cache_write_per_mtok": "cache_write",
}
REQUIRED = ("input_per_mtok", "output_per_mtok")


@dataclass(frozen=True, slots=True)
class Overrides:
    """The overrides in force: from which file, and the rates of each model (keys lower-cased)."""

    path: Path | None = None
    rates: dict[str, Rates] = field(default_factory=dict[str, Rates])

    def get(self, model: str | None) -> Rates | None:
        return None if model is None or not self.rates else self.rates.get(model.lower())


NONE = Overrides()


def find(start: Path | None = None) -> Path | None:
    """The config file to read, by the rules in the module docstring; ``None`` if there is none."""
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "tokentrail.toml"
        if candidate.is_file():
            return candidate
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and "tokentrail" in _read(candidate).get("tool", {}):
            return candidate
    return None


def load(path: str | os.PathLike[str] | None = None) -> Overrides:
    """Read the overrides from ``path``, else from the file `find` picks.

    Raises:
        ConfigError: the file is missing, is not TOML, or a price is not a non-negative number;
            the message names the file and the key.
    """
    file = Path(path) if path is not None else find()
    if file is None:
        return NONE
    file = file.resolve()
    if not file.is_file():
        raise ConfigError(f"price overrides file not found: {file}")
    data = _read(file)
    if file.name == "pyproject.toml" or ("tool" in data and "prices" not in data):
        table: Any = data.get("tool", {}).get("tokentrail", {}).get("prices", {})
        where = "tool.tokentrail.prices"
    else:
        table = data.get("prices", {})
        where = "prices"
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{where}] must be a table of models")
    rates: dict[str, Rates] = {}
    for model, entry in table.items():
        rates[model.lower()] = _rates(file, f'{where}."{model}"', model, entry)
    return Overrides(file, rates)


def _read(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from exc


def _rates(file: Path, where: str, model: str, entry: Any) -> Rates:
    if not isinstance(entry, dict):
        raise ConfigError(f"{file}: [{where}] must be a table, e.g. input_per_mtok = 0.5, output_per_mtok = 1.5")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{file}: [{where}] unknown key {unknown[0]!r} (expected one of {', '.join(FIELDS)})")
    for key in REQUIRED:
        if key not in entry:
            raise ConfigError(f"{file}: [{where}] is missing {key}")
    values = {FIELDS[key]: _decimal(file, f"{where}.{key}", value) for key, value in entry.items()}
    return Rates(
        model=model,
        source=f"override:{file}",
        input=values["input"],
        output=values["output"],
        cache_read=values.get("cache_read"),
        cache_write=values.get("cache_write"),
    )


def _decimal(file: Path, key: str, value: Any) -> Decimal:
    number: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, float) and math.isfinite(value):
        number = Decimal(repr(value))  # 0.15 → Decimal("0.15"), not the binary float's expansion
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = None
    if number is None or not number.is_finite() or number < 0:
        raise ConfigError(f"{file}: {key} must be a non-negative number of USD per million tokens, not {value!r}")
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        # Costs are kept, and summed, as whole pico-dollars: a millionth of a dollar per million
        # tokens is one pico-dollar a token, the finest rate whose every cost is exact.
        raise ConfigError(f"{file}: {key} has more than 6 decimal places ({value!r}); USD per million tokens "
                          "are priced to the millionth of a dollar")  # fmt: skip
    return number
