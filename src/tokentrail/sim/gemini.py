"""Gemini wire format: generateContent, streamGenerateContent, embeddings, countTokens and cachedContents.

Served under the Gemini API paths (`/v1beta/models/{model}:{method}`) and the Vertex AI paths
(`/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`). Shapes follow the
`GenerateContentResponse` reference (https://ai.google.dev/api/generate-content) and google-genai's
own types: `candidates[].content.parts`, `finishReason`, and `usageMetadata` with `promptTokenCount`,
`candidatesTokenCount`, `totalTokenCount`, `thoughtsTokenCount`, `cachedContentTokenCount` and
`promptTokensDetails: [{"modality": "TEXT", "tokenCount"}]` (names as in the UsageMetadata reference).

Streams: with `?alt=sse` (what google-genai asks for) each chunk is an SSE `data:` event; without it
the body is one JSON array written element by element. Every chunk carries cumulative usageMetadata:
`promptTokenCount` on each, `candidatesTokenCount` growing; the last chunk has the `finishReason`.

Token counts: Gemini's tokenizer is not the simulator's; it counts with o200k_base as a stand-in,
its own truth: the text of every part of the system instruction and contents, functionCall and
functionResponse parts as name plus compact JSON, and tools as their compact JSON; no hidden tokens.
`promptTokenCount` includes cached content (`cachedContentTokenCount`), as on the real API; thinking
tokens (`thoughtsTokenCount`) are apart from `candidatesTokenCount` and both add to the total.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from typing import Any, cast

from . import text
from .anthropic import CacheAnswer
from .openai import Answer, BadRequest

__all__ = [
    "CacheStore",
    "batch_embed_contents",
    "count_tokens",
    "create_cache",
    "embed_content",
    "error_body",
    "generate_content",
]

_TOOL_WORDS = ("tool", "lookup")
_ENCODING_MODEL = "o200k"
_DEFAULT_THOUGHTS = 64
_ALWAYS_THINKS = ("gemini-2.5-pro",)

# google.rpc status names by HTTP status (https://ai.google.dev/gemini-api/docs/troubleshooting).
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    """A Google API error body: `{"error": {"code", "message", "status"}}` (429s add a RetryInfo)."""
    name = _STATUS_NAMES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if status == 429:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]
    return {"error": error}


def _get(obj: object, name: str) -> Any:
    """`obj[name]` by its lowerCamel name or its snake_case one: proto JSON accepts both, and
    google-genai sends some nested configs (thinkingConfig's fields) in snake_case."""
    if not isinstance(obj, dict):
        return None
    d: dict[str, Any] = obj  # pyright: ignore[reportUnknownVariableType]
    if name in d:
        return d[name]
    return d.get(re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), name))


def _encode(value: str) -> list[int]:
    return text.encode(value, _ENCODING_MODEL)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _parts_tokens(content: object) -> int:
    if isinstance(content, str):
        return len(_encode(content))
    parts = content.get("parts") if isinstance(content, dict) else None  # pyright: ignore
    n = 0
    for part in parts if isinstance(parts, list) else []:  # pyright: ignore[reportUnknownVariableType]
        if not isinstance(part, dict):
            continue
        p: dict[str, Any] = part  # pyright: ignore[reportUnknownVariableType]
        if isinstance(p.get("text"), str) and not p.get("thought"):
            n += len(_encode(p["text"]))
        for kind, payload in (("functionCall", "args"), ("functionResponse", "response")):
            call = _get(p, kind)
            if isinstance(call, dict):
                n += len(_encode(str(call.get("name", "")))) + len(_encode(_compact(call.get(payload, {}))))  # pyright: ignore
    return n


def _contents_tokens(contents: object) -> int:
    if isinstance(contents, list):
        return sum(_parts_tokens(c) for c in cast(list[object], contents))
    return _parts_tokens(contents)


def _request_tokens(req: dict[str, Any]) -> int:
    n = _contents_tokens(req.get("contents"))
    if _get(req, "systemInstruction") is not None:
        n += _parts_tokens(_get(req, "systemInstruction"))
    if req.get("tools"):
        n += len(_encode(_compact(req["tools"])))
    return n


def _details(n: int) -> list[dict[str, Any]]:
    return [{"modality": "TEXT", "tokenCount": n}]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CacheStore:
    """Explicit context caches made with `POST cachedContents`: name -> (model, token count)."""

    def __init__(self) -> None:
        self._caches: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def put(self, name: str, model: str, tokens: int) -> None:
        with self._lock:
            self._caches[name] = (model, tokens)

    def tokens(self, name: str) -> int:
        """Tokens of a cache; a name the simulator never made stands for 1024-4095 tokens (from its hash)."""
        with self._lock:
            found = self._caches.get(name)
        if found is not None:
            return found[1]
        return 1024 + int.from_bytes(text.request_key("cachedContent", name)[:2], "big") % 3072


def _model_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("model is required")
    return value.rsplit("/models/", 1)[-1].removeprefix("models/")


def create_cache(req: dict[str, Any], store: CacheStore, *, seq: int, usage: bool = True) -> Answer:
    """Answer `POST cachedContents`: store the content's token count under a new name.

    Logged as input and cache-write tokens: creating a cache bills its tokens once (then storage time).
    """
    model = _model_name(req.get("model"))
    tokens = _request_tokens(req)
    name = "cachedContents/" + text.request_key("cache", seq, req).hex()[:12]
    store.put(name, model, tokens)
    now = datetime.datetime.now(datetime.UTC)
    ttl = req.get("ttl")
    seconds = (
        float(ttl[:-1])
        if isinstance(ttl, str) and ttl.endswith("s") and ttl[:-1].replace(".", "").isdigit()
        else 3600.0
    )
    body: dict[str, Any] = {
        "name": name,
        "model": "models/" + model,
        "createTime": _now(),
        "updateTime": _now(),
        "expireTime": (now + datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z"),
    }
    if isinstance(_get(req, "displayName"), str):
        body["displayName"] = _get(req, "displayName")
    if usage:
        body["usageMetadata"] = {"totalTokenCount": tokens}
    return CacheAnswer(model=model, body=body, input_tokens=tokens, cache_write_tokens=tokens)


def _thoughts(model: str, config: dict[str, Any]) -> int:
    thinking = _get(config, "thinkingConfig")
    budget = _get(thinking, "thinkingBudget")
    level = _get(thinking, "thinkingLevel")
    if isinstance(budget, int) and not isinstance(budget, bool):
        if budget > 0:
            return min(budget, _DEFAULT_THOUGHTS)
        if budget == -1:  # dynamic thinking
            return _DEFAULT_THOUGHTS
    if level is not None or model.startswith(_ALWAYS_THINKS):
        return _DEFAULT_THOUGHTS
    return 0


def _wants_tool(contents: object) -> bool:
    if not isinstance(contents, list) or not contents or not isinstance(contents[-1], dict):
        return False
    last: dict[str, Any] = contents[-1]  # pyright: ignore[reportUnknownVariableType]
    if last.get("role", "user") != "user":
        return False
    return any(w in text.content_text(last.get("parts")).lower() for w in _TOOL_WORDS)


def _first_function(tools: object) -> dict[str, Any] | None:
    for tool in cast(list[object], tools) if isinstance(tools, list) else []:
        decls = _get(tool, "functionDeclarations")
        for decl in decls if isinstance(decls, list) else []:  # pyright: ignore[reportUnknownVariableType]
            if isinstance(decl, dict) and isinstance(decl.get("name"), str):  # pyright: ignore
                return decl  # pyright: ignore[reportUnknownVariableType]
    return None


def generate_content(
    req: dict[str, Any], store: CacheStore, *, model: str, stream: bool, sse: bool, seq: int, usage: bool = True
) -> Answer:
    """Answer `:generateContent` or `:streamGenerateContent` (`sse`: framed as SSE, else a JSON array)."""
    contents: object = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("contents is not specified")
    config: dict[str, Any] = _get(req, "generationConfig") or {}
    cached_name = _get(req, "cachedContent")
    cached = store.tokens(cached_name) if isinstance(cached_name, str) and cached_name else 0
    prompt = _request_tokens(req) + cached
    thoughts = _thoughts(model, config)
    limit = _get(config, "maxOutputTokens")
    budget = None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        thoughts = min(thoughts, limit)  # thinking spends maxOutputTokens first
        budget = limit - thoughts
    key = text.request_key("gemini", model, _get(req, "systemInstruction"), contents, req.get("tools"))
    function = _first_function(req.get("tools")) if _wants_tool(contents) else None

    if function is not None:
        arguments = text.tool_arguments(function.get("parameters") or _get(function, "parametersJsonSchema"), key)
        parts: list[list[dict[str, Any]]] = [
            [{"functionCall": {"name": function["name"], "args": json.loads(arguments)}}]
        ]
        counts = [len(_encode(function["name"])) + len(_encode(arguments))]  # approximation, as for OpenAI
        finish = "STOP"
    else:
        reply = text.reply(key, _ENCODING_MODEL, budget)
        pieces = text.split_ids(key, reply.ids) if stream else [reply.ids]
        parts = [[{"text": text.decode(p, _ENCODING_MODEL)}] for p in pieces] or [[{"text": ""}]]
        counts = [len(p) for p in pieces] or [0]
        finish = "MAX_TOKENS" if reply.truncated else "STOP"
    candidates_total = sum(counts)
    response_id = text.request_key(key, seq).hex()[:22]

    def usage_metadata(candidates: int) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + thoughts,
            "promptTokensDetails": _details(prompt),
        }
        if thoughts:
            meta["thoughtsTokenCount"] = thoughts
        if cached:
            meta["cachedContentTokenCount"] = cached
            meta["cacheTokensDetails"] = _details(cached)
        return meta

    def chunk(chunk_parts: list[dict[str, Any]], candidates: int, last: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": chunk_parts, "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = finish
        body: dict[str, Any] = {"candidates": [candidate]}
        if usage:
            body["usageMetadata"] = usage_metadata(candidates)
        body["modelVersion"] = model
        body["responseId"] = response_id
        return body

    answer = dict(
        model=model,
        input_tokens=prompt,
        output_tokens=candidates_total + thoughts,
        cached_tokens=cached,
        reasoning_tokens=thoughts,
    )
    if not stream:
        return Answer(body=chunk(parts[0], candidates_total, last=True), **answer)  # pyright: ignore[reportArgumentType]
    bodies: list[dict[str, Any]] = []
    running = 0
    for i, (chunk_parts, n) in enumerate(zip(parts, counts, strict=True)):
        running += n
        bodies.append(chunk(chunk_parts, running, last=i == len(parts) - 1))
    if sse:
        events = [f"data: {_compact(b)}\r\n\r\n".encode() for b in bodies]
    else:  # a JSON array, one element per write, as the API sends without alt=sse
        events = [
            (("[" if i == 0 else "\r\n,") + json.dumps(b, indent=2, ensure_ascii=False)).encode()
            for i, b in enumerate(bodies)
        ]
        events.append(b"\r\n]")
    return Answer(events=events, usage_event=len(bodies) - 1 if usage else None, **answer)  # pyright: ignore[reportArgumentType]


def _embedding(model: str, content: object, dims: object) -> tuple[list[float], int]:
    size = dims if isinstance(dims, int) and not isinstance(dims, bool) and 1 <= dims <= 4096 else 8
    return text.embedding_vector(model, content, size), _parts_tokens(content)


def _embed_usage(tokens: int) -> dict[str, Any]:
    return {"promptTokenCount": tokens, "totalTokenCount": tokens, "promptTokensDetails": _details(tokens)}


def embed_content(req: dict[str, Any], *, model: str, usage: bool = True) -> Answer:
    """Answer `:embedContent`: `{"embedding": {"values"}}` plus usageMetadata."""
    if not isinstance(req.get("content"), dict):
        raise BadRequest("content is not specified")
    values, tokens = _embedding(model, req["content"], _get(req, "outputDimensionality"))
    body: dict[str, Any] = {"embedding": {"values": values}}
    if usage:
        body["usageMetadata"] = _embed_usage(tokens)
    return Answer(model=model, body=body, input_tokens=tokens)


def batch_embed_contents(req: dict[str, Any], *, model: str, usage: bool = True) -> Answer:
    """Answer `:batchEmbedContents` (what google-genai's embed_content calls on the Gemini API)."""
    requests = req.get("requests")
    if not isinstance(requests, list) or not requests or not all(isinstance(r, dict) for r in requests):  # pyright: ignore
        raise BadRequest("requests must be a non-empty list")
    embeddings: list[dict[str, Any]] = []
    total = 0
    for item in cast(list[dict[str, Any]], requests):
        values, tokens = _embedding(model, _get(item, "content"), _get(item, "outputDimensionality"))
        embeddings.append({"values": values})
        total += tokens
    body: dict[str, Any] = {"embeddings": embeddings}
    if usage:
        body["usageMetadata"] = _embed_usage(total)
    return Answer(model=model, body=body, input_tokens=total)


def count_tokens(req: dict[str, Any], store: CacheStore, *, model: str) -> Answer:
    """Answer `:countTokens` with `{"totalTokens", "promptTokensDetails"}` (nothing billed)."""
    inner = _get(req, "generateContentRequest")
    source: dict[str, Any] = inner if isinstance(inner, dict) else req  # pyright: ignore[reportUnknownVariableType]
    cached_name = _get(source, "cachedContent")
    cached = store.tokens(cached_name) if isinstance(cached_name, str) and cached_name else 0
    total = _request_tokens(source) + cached
    body: dict[str, Any] = {"totalTokens": total, "promptTokensDetails": _details(total)}
    if cached:
        body["cachedContentTokenCount"] = cached
    return Answer(model=model, body=body, input_tokens=total)
