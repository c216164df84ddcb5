"""Anthropic Messages wire format: `POST /v1/messages` (body or SSE) and `/v1/messages/count_tokens`.

Shapes follow the Messages API reference and the `anthropic` SDK's models (`types/message.py`,
`types/usage.py`, `types/raw_message_*_event.py`, `types/raw_content_block_*_event.py`); the tests parse
everything with `_strict_response_validation=True`. A stream is, per the streaming reference
(https://platform.claude.com/docs/en/build-with-claude/streaming): `message_start` (the message with
empty content and the input side of usage, `output_tokens` 1), then per content block
`content_block_start`, `content_block_delta`s and `content_block_stop` (one `ping` after the first
block starts), then `message_delta` (`stop_reason`, and `usage.output_tokens`, the final cumulative
count) and `message_stop`.

Token counts: Anthropic's tokenizer is not public, so the simulator counts with o200k_base as a
stand-in; its counts are its own truth, by this rule: tools count as the compact JSON of each
definition (without `cache_control`), a system prompt adds 3 hidden tokens plus its text, every
message adds 3 hidden tokens plus its blocks (text; tool_use name and JSON input; tool_result text;
thinking and image blocks count 0), and 3 hidden tokens prime the reply.

Prompt caching (https://platform.claude.com/docs/en/build-with-claude/prompt-caching): the prefix up to
each block marked `cache_control: {"type": "ephemeral"}` (or up to the last block when the request
sets a top-level `cache_control`, "automatic caching") is a breakpoint. A request reads the longest
prefix, ending at a block boundary up to 20 blocks before a breakpoint, that an earlier request wrote,
and writes the rest up to its last breakpoint. Prefixes shorter than the model's minimum are never
cached: 1024 tokens for Sonnet 4/4.5/4.6 and Opus 4/4.1, 2048 for Haiku 3 and 3.5, 4096 for Opus
4.5/4.6 and Haiku 4.5 (the table in the prompt-caching doc, as quoted in
anthropics/anthropic-sdk-python#1194); 1024 for models it does not name.
`usage.input_tokens` is the uncached remainder; the total input is the sum of the three fields.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any, cast

from . import text
from .openai import Answer, BadRequest
from .text import PrefixCache

__all__ = ["CacheAnswer", "cache_min_tokens", "count_tokens", "error_body", "messages"]

_TOOL_WORDS = ("tool", "lookup")
_LOOKBACK_BLOCKS = 20
_ENCODING_MODEL = "o200k"  # any name text.encoding_name_for maps to o200k_base

# Error types by status, from https://platform.claude.com/docs/en/api/errors.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheAnswer(Answer):
    """An Answer that also reports tokens written to the prompt cache."""

    cache_write_tokens: int | None = None


def error_body(status: int, message: str) -> dict[str, Any]:
    """An Anthropic-style error body: `{"type": "error", "error": {"type", "message"}, "request_id"}`."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    request_id = "req_" + text.request_key(time.monotonic_ns(), status).hex()[:24]
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def cache_min_tokens(model: str) -> int:
    """The shortest prefix Anthropic caches for `model`."""
    name = model.lower()
    if any(k in name for k in ("opus-4-5", "opus-4-6", "haiku-4-5")):
        return 4096
    if any(k in name for k in ("3-haiku", "3-5-haiku")):
        return 2048
    return 1024  # Sonnet and Opus 4/4.1, Sonnet 4.5/4.6, and any model the table does not name


def _encode(value: str) -> list[int]:
    return text.encode(value, _ENCODING_MODEL)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _blocks(value: object) -> list[object]:
    """A string content or system prompt as one block; a list as its blocks; anything else as none."""
    if isinstance(value, str):
        return [value]
    return list(cast(list[object], value)) if isinstance(value, list) else []


def _block_ids(block: object) -> list[int]:
    if isinstance(block, str):
        return _encode(block)
    if not isinstance(block, dict):
        return []
    b: dict[str, Any] = block  # pyright: ignore[reportUnknownVariableType]
    kind = b.get("type")
    if kind == "text" and isinstance(b.get("text"), str):
        return _encode(b["text"])
    if kind == "tool_use":
        return _encode(str(b.get("name", ""))) + _encode(_compact(b.get("input", {})))
    if kind == "tool_result":
        return [i for part in _blocks(b.get("content")) for i in _block_ids(part)]
    return []  # thinking blocks of earlier turns are stripped; images and documents are not counted


@dataclass(frozen=True, slots=True, kw_only=True)
class _Prompt:
    ids: list[int]
    boundaries: list[int]
    """Prefix length at the end of every tool, system block and content block, in order."""
    breakpoints: list[tuple[int, int, str]]
    """(index into boundaries, prefix length, ttl) of each cache breakpoint, in order."""


def _prompt(req: dict[str, Any]) -> _Prompt:
    ids: list[int] = []
    boundaries: list[int] = []
    breakpoints: list[tuple[int, int, str]] = []

    def close(block: object) -> None:
        boundaries.append(len(ids))
        control = block.get("cache_control") if isinstance(block, dict) else None  # pyright: ignore
        if isinstance(control, dict):
            ttl = control.get("ttl")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            breakpoints.append((len(boundaries) - 1, len(ids), "1h" if ttl == "1h" else "5m"))

    for tool in _blocks(req.get("tools")):
        if isinstance(tool, dict):
            fields = cast(dict[str, Any], tool)
            ids += _encode(_compact({k: v for k, v in fields.items() if k != "cache_control"}))
            close(fields)
    system = req.get("system")
    if system:
        ids += text.hidden(text.MESSAGE_OVERHEAD)
        for block in _blocks(system):
            ids += _block_ids(block)
            close(block)
    for message in req["messages"]:
        ids += text.hidden(text.MESSAGE_OVERHEAD)
        for block in _blocks(message.get("content")):
            ids += _block_ids(block)
            close(block)
    control = req.get("cache_control")
    if isinstance(control, dict) and boundaries:  # automatic caching: a breakpoint on the last block
        ttl = control.get("ttl")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        breakpoints.append((len(boundaries) - 1, boundaries[-1], "1h" if ttl == "1h" else "5m"))
    ids += text.hidden(text.PRIMING)
    return _Prompt(ids=ids, boundaries=boundaries, breakpoints=breakpoints)


def _use_cache(cache: PrefixCache, model: str, prompt: _Prompt) -> tuple[int, int, str]:
    """Tokens read from and written to the cache, and the ttl of the write."""
    minimum = cache_min_tokens(model)
    marks = [(i, n, ttl) for i, n, ttl in prompt.breakpoints if n >= minimum]
    if not marks:
        return 0, 0, "5m"
    scope = "anthropic\0" + model
    candidates = sorted(
        {n for i, _, _ in marks for n in prompt.boundaries[max(0, i - _LOOKBACK_BLOCKS) : i + 1] if n >= minimum}
    )
    hits = cache.contains(scope, [prompt.ids[:n] for n in candidates])
    read = max((n for n, hit in zip(candidates, hits, strict=True) if hit), default=0)
    cache.add(scope, [prompt.ids[:n] for _, n, _ in marks])
    _, last, ttl = marks[-1]
    return read, max(0, last - read), ttl


def _validate(req: dict[str, Any], *, need_max_tokens: bool) -> str:
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    msgs = req.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):  # pyright: ignore
        raise BadRequest("messages: at least one message is required")
    if need_max_tokens:
        limit = req.get("max_tokens")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadRequest("max_tokens: Field required (an integer >= 1)")
    return model


def count_tokens(req: dict[str, Any]) -> Answer:
    """Answer `POST /v1/messages/count_tokens` with `{"input_tokens": N}` (no caching, nothing billed)."""
    model = _validate(req, need_max_tokens=False)
    total = len(_prompt(req).ids)
    return Answer(model=model, body={"input_tokens": total}, input_tokens=total)


def _first_tool(tools: object) -> dict[str, Any] | None:
    for tool in tools if isinstance(tools, list) else []:  # pyright: ignore[reportUnknownVariableType]
        # Client tools have no type or "custom"; server tools (web_search_2025..., bash_...) are skipped.
        if isinstance(tool, dict) and isinstance(tool.get("name"), str) and tool.get("type") in (None, "custom"):  # pyright: ignore
            return tool  # pyright: ignore[reportUnknownVariableType]
    return None


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {_compact(data)}\n\n".encode()


def messages(req: dict[str, Any], cache: PrefixCache, *, seq: int, usage: bool = True) -> CacheAnswer:
    """Answer `POST /v1/messages`; `usage=False` leaves usage out of the body and every event."""
    model = _validate(req, need_max_tokens=True)
    max_tokens: int = req["max_tokens"]
    msgs: list[dict[str, Any]] = req["messages"]
    prompt = _prompt(req)
    read, write, ttl = _use_cache(cache, model, prompt)
    total = len(prompt.ids)
    key = text.request_key("anthropic", model, req.get("system"), msgs, req.get("tools"))

    blocks: list[dict[str, Any]] = []
    thinking_ids: list[int] = []
    thinking = req.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):  # pyright: ignore
        budget = thinking.get("budget_tokens")  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        budget = budget if isinstance(budget, int) and budget > 0 else max_tokens
        thought = text.reply(text.request_key(key, "thinking"), _ENCODING_MODEL, min(budget, max_tokens))
        thinking_ids = thought.ids
        signature = base64.b64encode(text.request_key(key, "signature") * 3).decode()
        blocks.append({"type": "thinking", "thinking": thought.text, "signature": signature})
    room = max_tokens - len(thinking_ids)

    last = msgs[-1]
    tool = _first_tool(req.get("tools"))
    wants_tool = last.get("role") == "user" and any(
        w in text.content_text(last.get("content")).lower() for w in _TOOL_WORDS
    )
    deltas: list[str] = []
    if tool is not None and wants_tool:
        arguments = text.tool_arguments(tool.get("input_schema"), key)
        blocks.append(
            {
                "type": "tool_use",
                "id": "toolu_" + text.request_key(key, seq, "tool").hex()[:24],
                "name": tool["name"],
                "input": json.loads(arguments),
            }
        )
        deltas = text.split_tokens(key, _encode(arguments), _ENCODING_MODEL)
        # Approximation, as for OpenAI: a call costs its name and JSON input; max_tokens never cuts it.
        visible = len(_encode(tool["name"])) + len(_encode(arguments))
        stop = "tool_use"
    else:
        reply = text.reply(key, _ENCODING_MODEL, room)
        blocks.append({"type": "text", "text": reply.text})
        deltas = text.split_tokens(key, reply.ids, _ENCODING_MODEL)
        visible = len(reply.ids)
        stop = "max_tokens" if reply.truncated else "end_turn"
    output = len(thinking_ids) + visible

    def usage_obj(out: int) -> dict[str, Any]:
        return {
            "input_tokens": total - read - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": write if ttl == "5m" else 0,
                "ephemeral_1h_input_tokens": write if ttl == "1h" else 0,
            },
            "output_tokens": out,
            "service_tier": "standard",
        }

    message: dict[str, Any] = {
        "id": "msg_" + text.request_key(key, seq).hex()[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
    }
    counts = dict(
        model=model,
        input_tokens=total,
        output_tokens=output,
        cached_tokens=read,
        reasoning_tokens=len(thinking_ids),
        cache_write_tokens=write,
    )
    if not req.get("stream"):
        return CacheAnswer(body={**message, **({"usage": usage_obj(output)} if usage else {})}, **counts)  # pyright: ignore

    start: dict[str, Any] = {**message, "content": [], "stop_reason": None}
    if usage:
        start["usage"] = usage_obj(1)
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks):
        if block["type"] == "thinking":
            first: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            pieces = [
                {"type": "thinking_delta", "thinking": d} for d in text.split_tokens(key, thinking_ids, _ENCODING_MODEL)
            ] + [{"type": "signature_delta", "signature": block["signature"]}]
        elif block["type"] == "tool_use":
            first = {**block, "input": {}}
            pieces = [{"type": "input_json_delta", "partial_json": d} for d in ["", *deltas]]
        else:
            first = {"type": "text", "text": ""}
            pieces = [{"type": "text_delta", "text": d} for d in deltas]
        events.append(
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": first})
        )
        if index == 0:
            events.append(_sse("ping", {"type": "ping"}))
        events += [
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": p}) for p in pieces
        ]
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    final: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}}
    if usage:
        final["usage"] = {"output_tokens": output}
    usage_event = len(events) if usage else None
    events.append(_sse("message_delta", final))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return CacheAnswer(events=events, usage_event=usage_event, **counts)  # pyright: ignore[reportArgumentType]
