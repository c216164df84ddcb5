"""Ollama's native API: `/api/chat`, `/api/generate`, `/api/embed` and the legacy `/api/embeddings`.

Shapes follow Ollama's API docs (https://docs.ollama.com/api, usage fields at
https://docs.ollama.com/api/usage) and the `ollama` SDK's models (`ollama/_types.py`). Chat and
generate stream by default (`"stream"` absent means true): `application/x-ndjson`, one JSON object a
line, the last with `"done": true`, `done_reason` and the metrics `total_duration`, `load_duration`,
`prompt_eval_count`, `prompt_eval_duration`, `eval_count`, `eval_duration` (nanoseconds; the
simulator's durations are made up from the counts). `"stream": false` answers one such object.

Prompt-cache quirk: Ollama's runner keeps the last prompt's KV cache, and when the same prompt arrives
again nothing is evaluated, so the final object leaves `prompt_eval_count` (and its duration) out
(ollama/ollama#2068 "`prompt_eval_count` disappears after repeated requests with same prompt", and
#3427; downstream guards such as SWE-agent/SWE-agent#44). Upstream fixed the count in mid-2024
(ollama/ollama#5371), but clients still meet servers that omit it, so the simulator keeps the quirk:
a repeat of an exact prompt (same model) omits both keys; `ServedCall.cached_tokens` is then the
whole prompt.

Token counts use the OpenAI chat rule on o200k_base as a stand-in for the model's own tokenizer and
chat template (3 hidden tokens per message and 3 priming the reply); `raw` generate prompts count as
plain text. Thinking (`think`) tokens are part of `eval_count`.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, cast

from . import text
from .openai import Answer, BadRequest
from .text import PrefixCache

__all__ = ["chat", "embed", "embeddings", "error_body", "generate"]

_TOOL_WORDS = ("tool", "lookup")
_ENCODING_MODEL = "o200k"
# Made-up timings, in nanoseconds: fixed load, per prompt token, per generated token.
_LOAD_NS = 12_000_000
_PROMPT_NS = 150_000
_EVAL_NS = 12_000_000


def error_body(status: int, message: str) -> dict[str, Any]:
    """Ollama's error body: `{"error": "message"}`."""
    return {"error": message}


def _model(req: dict[str, Any]) -> str:
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    return model


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _num_predict(req: dict[str, Any]) -> int | None:
    options = req.get("options")
    value = options.get("num_predict") if isinstance(options, dict) else None  # pyright: ignore
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _decode(ids: list[int]) -> str:
    return text.decode(ids, _ENCODING_MODEL)


def _frame(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _answer(
    *,
    req: dict[str, Any],
    model: str,
    prompt: list[int],
    cache: PrefixCache,
    key: bytes,
    field: str,
    tool: dict[str, Any] | None,
    usage: bool,
) -> Answer:
    """The reply to a chat (`field` "message") or generate (`field` "response") request."""
    hit = cache.contains("ollama\0" + model, [prompt])[0]
    cache.add("ollama\0" + model, [prompt])
    limit = _num_predict(req)
    think = req.get("think")
    thinking_ids: list[int] = []
    if think not in (None, False):
        thinking_ids = text.reply(text.request_key(key, "thinking"), _ENCODING_MODEL, limit).ids
    room = None if limit is None else max(0, limit - len(thinking_ids))

    tool_calls: list[dict[str, Any]] | None = None
    if tool is not None:
        arguments = text.tool_arguments(tool.get("parameters"), key)
        tool_calls = [{"function": {"name": tool["name"], "arguments": json.loads(arguments)}}]
        reply_ids: list[int] = []
        visible = len(text.encode(tool["name"], _ENCODING_MODEL)) + len(text.encode(arguments, _ENCODING_MODEL))
        done_reason = "stop"
    else:
        reply = text.reply(key, _ENCODING_MODEL, room)
        reply_ids = reply.ids
        visible = len(reply.ids)
        done_reason = "length" if reply.truncated else "stop"
    eval_count = len(thinking_ids) + visible

    def piece(content: str, thinking: str | None = None, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if field == "response":
            out: dict[str, Any] = {"response": content}
            if thinking is not None:
                out["thinking"] = thinking
            return out
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking is not None:
            message["thinking"] = thinking
        if calls is not None:
            message["tool_calls"] = calls
        return {"message": message}

    final: dict[str, Any] = {"done": True, "done_reason": done_reason}
    prompt_ns = 0 if hit else len(prompt) * _PROMPT_NS
    eval_ns = eval_count * _EVAL_NS
    final["total_duration"] = _LOAD_NS + prompt_ns + eval_ns + 1_000_000
    final["load_duration"] = _LOAD_NS
    if not hit:  # a cached prompt evaluates nothing and the runner omits both keys
        if usage:
            final["prompt_eval_count"] = len(prompt)
        final["prompt_eval_duration"] = prompt_ns
    if usage:
        final["eval_count"] = eval_count
    final["eval_duration"] = eval_ns
    counts = dict(
        model=model,
        input_tokens=len(prompt),
        output_tokens=eval_count,
        cached_tokens=len(prompt) if hit else 0,
        reasoning_tokens=len(thinking_ids),
    )
    thinking_text = _decode(thinking_ids) if thinking_ids else None
    if req.get("stream") is False:
        body = {
            "model": model,
            "created_at": _now(),
            **piece(_decode(reply_ids), thinking_text, tool_calls),
            **final,
        }
        return Answer(body=body, **counts)  # pyright: ignore[reportArgumentType]
    events: list[bytes] = []
    head = {"model": model}
    for ids in text.split_ids(text.request_key(key, "thinking"), thinking_ids):
        events.append(_frame({**head, "created_at": _now(), **piece("", _decode(ids)), "done": False}))
    if tool_calls is not None:
        events.append(_frame({**head, "created_at": _now(), **piece("", None, tool_calls), "done": False}))
    for ids in text.split_ids(key, reply_ids):
        events.append(_frame({**head, "created_at": _now(), **piece(_decode(ids)), "done": False}))
    events.append(_frame({**head, "created_at": _now(), **piece(""), **final}))
    usage_event = len(events) - 1 if usage else None
    return Answer(events=events, usage_event=usage_event, **counts)  # pyright: ignore[reportArgumentType]


def _first_function(tools: object) -> dict[str, Any] | None:
    for tool in tools if isinstance(tools, list) else []:  # pyright: ignore[reportUnknownVariableType]
        fn = tool.get("function") if isinstance(tool, dict) else None  # pyright: ignore
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):  # pyright: ignore
            return fn  # pyright: ignore[reportUnknownVariableType]
    return None


def chat(req: dict[str, Any], cache: PrefixCache, *, usage: bool = True) -> Answer:
    """Answer `POST /api/chat`."""
    model = _model(req)
    messages = req.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):  # pyright: ignore
        raise BadRequest("messages must be a list of objects")
    msgs: list[dict[str, Any]] = messages  # pyright: ignore[reportUnknownVariableType]
    tools = req.get("tools") or None
    last = msgs[-1] if msgs else {}
    wants_tool = last.get("role") == "user" and any(
        w in text.content_text(last.get("content")).lower() for w in _TOOL_WORDS
    )
    # Only string fields count (content, role, thinking, tool_name); images and tool_calls objects do not.
    counted = [{k: v for k, v in m.items() if isinstance(v, str)} for m in msgs]
    return _answer(
        req=req,
        model=model,
        prompt=text.chat_prompt(counted, tools, _ENCODING_MODEL),
        cache=cache,
        key=text.request_key("ollama", model, msgs, tools),
        field="message",
        tool=_first_function(tools) if wants_tool else None,
        usage=usage,
    )


def generate(req: dict[str, Any], cache: PrefixCache, *, usage: bool = True) -> Answer:
    """Answer `POST /api/generate`; an empty prompt only loads the model (`done_reason` "load")."""
    model = _model(req)
    prompt = req.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    if not prompt:
        body = {"model": model, "created_at": _now(), "response": "", "done": True, "done_reason": "load"}
        if req.get("stream") is False:
            return Answer(model=model, body=body)
        return Answer(model=model, events=[_frame(body)])
    system = req.get("system")
    context = req.get("context")
    if req.get("raw"):
        ids = text.encode(prompt, _ENCODING_MODEL)
    else:
        msgs = ([{"role": "system", "content": system}] if isinstance(system, str) and system else []) + [
            {"role": "user", "content": prompt}
        ]
        ids = text.chat_prompt(msgs, None, _ENCODING_MODEL)
    if isinstance(context, list):  # the token ids of an earlier exchange, sent back to continue it
        ids = [int(t) for t in context if isinstance(t, int)] + ids  # pyright: ignore[reportUnknownVariableType]
    return _answer(
        req=req,
        model=model,
        prompt=ids,
        cache=cache,
        key=text.request_key("ollama-generate", model, system, prompt),
        field="response",
        tool=None,
        usage=usage,
    )


def _dims(req: dict[str, Any]) -> int:
    dims = req.get("dimensions")
    return dims if isinstance(dims, int) and not isinstance(dims, bool) and 1 <= dims <= 4096 else 8


def embed(req: dict[str, Any], *, usage: bool = True) -> Answer:
    """Answer `POST /api/embed`: `{"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}`."""
    model = _model(req)
    raw = req.get("input")
    items: list[object] = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []  # pyright: ignore
    if not items or not all(isinstance(x, str) for x in items):
        raise BadRequest("input must be a string or a list of strings")
    texts = cast(list[str], items)
    tokens = sum(text.count_tokens(x, _ENCODING_MODEL) for x in texts)
    body: dict[str, Any] = {
        "model": model,
        "embeddings": [text.embedding_vector(model, x, _dims(req)) for x in texts],
        "total_duration": _LOAD_NS + tokens * _PROMPT_NS,
        "load_duration": _LOAD_NS,
    }
    if usage:
        body["prompt_eval_count"] = tokens
    return Answer(model=model, body=body, input_tokens=tokens)


def embeddings(req: dict[str, Any]) -> Answer:
    """Answer the legacy `POST /api/embeddings`: `{"embedding": [...]}` and nothing else."""
    model = _model(req)
    prompt = req.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    tokens = text.count_tokens(prompt, _ENCODING_MODEL)
    return Answer(model=model, body={"embedding": text.embedding_vector(model, prompt, 8)}, input_tokens=tokens)
