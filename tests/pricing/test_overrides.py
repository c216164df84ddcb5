"""Per-model prices from tokentrail.toml, pyproject.toml or $TOKENTRAIL_PRICES; bad config is a ConfigError."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from tokentrail import pricing
from tokentrail.errors import ConfigError
from tokentrail.records import CallRecord
from tokentrail.usage import Usage

USAGE = Usage(input_tokens=1_000_000, cache_read_tokens=200_000, output_tokens=100_000)

TOKENTRAIL_TOML = """
[prices."my-model"]
input_per_mtok = 0.5
output_per_mtok = 1.5
cache_read_per_mtok = "0.05"

[prices."GPT-4o"]
input_per_mtok = 1
output_per_mtok = 4
"""


def call(model: str, provider: str = "local", requested: str | None = None) -> CallRecord:
    return CallRecord(
        id="x", api="openai.chat", provider=provider, host="127.0.0.1", endpoint="/v1/chat/completions",
        model=model, requested_model=requested, usage=USAGE,
    )  # fmt: skip


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_tokentrail_toml_prices_a_model_the_table_does_not_know(tmp_path: Path) -> None:
    file = write(tmp_path / "tokentrail.toml", TOKENTRAIL_TOML)
    cost = pricing.price(call("my-model"))
    assert cost is not None
    # 800k plain input at 0.5, 200k cache reads at 0.05, 100k output at 1.5.
    assert cost.amount == Decimal("0.4") + Decimal("0.01") + Decimal("0.15")
    assert cost.price_version == f"override:{file}"


def test_an_override_wins_over_the_table_and_matches_any_case(tmp_path: Path) -> None:
    write(tmp_path / "tokentrail.toml", TOKENTRAIL_TOML)
    cost = pricing.price(call("gpt-4o", provider="openai"))
    assert cost is not None
    assert cost.amount == Decimal("1") + Decimal("0.4")  # no cache rate given: cache reads cost input
    assert cost.price_version is not None and cost.price_version.startswith("override:")
    # The requested name counts too (the answer names a dated snapshot).
    dated = pricing.price(call("gpt-4o-2024-08-06", provider="openai", requested="gpt-4o"))
    assert dated == cost


def test_pyproject_toml_found_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write(
        tmp_path / "pyproject.toml",
        """
        [project]
        name = "app"

        [tool.tokentrail.prices."my-model"]
        input_per_mtok = 2
        output_per_mtok = 8
        """,
    )
    (tmp_path / "src" / "app").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "app")
    cost = pricing.price(call("my-model"))
    assert cost is not None
    assert cost.amount == Decimal("2") + Decimal("0.8")
    assert cost.price_version == f"override:{file}"


def test_a_pyproject_without_our_table_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "tokentrail.toml", TOKENTRAIL_TOML)
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "pyproject.toml", '[project]\nname = "x"\n')
    monkeypatch.chdir(tmp_path / "sub")
    assert pricing.current_overrides().path == tmp_path / "tokentrail.toml"


def test_tokentrail_prices_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "tokentrail.toml", TOKENTRAIL_TOML)  # in reach, but the variable wins
    other = write(tmp_path / "elsewhere.toml", '[prices."my-model"]\ninput_per_mtok = 3\noutput_per_mtok = 3\n')
    monkeypatch.setenv("TOKENTRAIL_PRICES", str(other))
    cost = pricing.price(call("my-model"))
    assert cost is not None and cost.amount == Decimal("3") + Decimal("0.3")
    assert cost.price_version == f"override:{other}"


def test_configure_with_an_explicit_file(tmp_path: Path) -> None:
    file = write(tmp_path / "p.toml", '[prices."m"]\ninput_per_mtok = 1\noutput_per_mtok = 0\n')
    loaded = pricing.configure(file)
    assert loaded.path == file and set(loaded.rates) == {"m"}
    assert pricing.price(call("m")) is not None
    assert pricing.configure(None).path is None  # nothing in reach of the working directory


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[prices."m"]\ninput_per_mtok = -1\noutput_per_mtok = 1\n', 'prices."m".input_per_mtok'),
        ('[prices."m"]\ninput_per_mtok = "cheap"\noutput_per_mtok = 1\n', 'prices."m".input_per_mtok'),
        ('[prices."m"]\ninput_per_mtok = true\noutput_per_mtok = 1\n', 'prices."m".input_per_mtok'),
        ('[prices."m"]\ninput_per_mtok = nan\noutput_per_mtok = 1\n', 'prices."m".input_per_mtok'),
        ('[prices."m"]\ninput_per_mtok = 1\n', 'prices."m"] is missing output_per_mtok'),
        ('[prices."m"]\ninput_per_mtok = 1\noutput_per_mtok = 1\ninput_per_tok = 1\n', "'input_per_tok'"),
        ("[prices]\nm = 1\n", 'prices."m"] must be a table'),
        ("prices = 3\n", "[prices] must be a table"),
        ("[prices\n", "not valid TOML"),
        ('[prices."m"]\ninput_per_mtok = "0.1234567"\noutput_per_mtok = 1\n', "more than 6 decimal places"),
    ],
)
def test_bad_config_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "tokentrail.toml", text)
    with pytest.raises(ConfigError) as raised:
        pricing.configure()
    assert str(file) in str(raised.value)
    assert message in str(raised.value)


def test_bad_pyproject_key_is_named_with_its_tool_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.tokentrail.prices."m"]\ninput_per_mtok = -2\noutput_per_mtok = 1\n')
    with pytest.raises(ConfigError, match=r'tool\.tokentrail\.prices\."m"\.input_per_mtok'):
        pricing.configure()


def test_a_missing_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTRAIL_PRICES", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        pricing.configure()
    pricing.reset()
    with pytest.raises(ConfigError):  # the first priced call loads lazily and fails the same way
        pricing.price(call("my-model"))
    (tmp_path / "nope.toml").write_text('[prices."my-model"]\ninput_per_mtok = 1\noutput_per_mtok = 1\n')
    with pytest.raises(ConfigError):  # and keeps failing, without reading the file per call
        pricing.price(call("my-model"))
    assert pricing.configure().path == tmp_path / "nope.toml"  # until configured again


def test_a_rate_to_the_millionth_of_a_dollar_prices_every_call_exactly(tmp_path: Path) -> None:
    # A millionth of a dollar per million tokens is a pico-dollar a token: the finest rate accepted.
    write(tmp_path / "p.toml", '[prices."m"]\ninput_per_mtok = "0.123456"\noutput_per_mtok = "1.0000000"\n')
    pricing.configure(tmp_path / "p.toml")
    cost = pricing.price(call("m"))
    assert cost is not None and (cost.amount * 10**12) % 1 == 0
