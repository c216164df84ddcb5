"""OpenAI wire format: chat completions, responses and embeddings, as bodies and SSE events.

Each endpoint function reads a decoded request and returns an `Answer`: a JSON body or a list of SSE
events ready to write, plus the token counts it reports. Shapes follow the OpenAI API reference and
the `openai` SDK's own models (`openai/types/chat/chat_completion_chunk.py`,
`openai/types/responses/response_*_event.py`); the tests parse everything with
`_strict_response_validation=True` so a missing required field fails there. One choice is always
returned (`n` is ignored), and sampling parameters change nothing.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from . import text
from .text import PromptCache

__all__ = ["Answer", "BadRequest", "chat_completions", "embeddings", "error_body", "responses"]

_FINGERPRINT = "fp_sim"
_TOOL_WORDS = ("tool", "lookup")


class BadRequest(Exception):
    """The request cannot be answered; becomes a 400 with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What to send for one request, and the token counts it carries."""

    model: str
    body: dict[str, Any] | None = None
    """The JSON body of a non-stream answer."""
    events: list[bytes] = field(default_factory=list[bytes])
    """SSE-framed events of a stream answer, in order; each is written and flushed on its own."""
    usage_event: int | None = None
    """Index of the event that carries usage, or None when no event does."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def stream(self) -> bool:
        return self.body is None


def error_body(message: str, type: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error body."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _sse(data: object, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# --- planning: what the model "says" ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tool:
    call_id: str
    name: str
    arguments: str
    deltas: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    model: str
    prompt_tokens: int
    cached_tokens: int
    text: str
    deltas: list[str]
    finish: str  # "stop" | "length" | "tool_calls"
    tool: _Tool | None
    reasoning_tokens: int
    output_tokens: int


def _model(req: dict[str, Any]) -> str:
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    return model


def _int_or_none(req: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = req.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"Invalid '{name}': expected an integer >= 1.", name)
        return value
    return None


def _as_tools(functions: object) -> list[dict[str, Any]]:
    """The deprecated ``functions`` as the ``tools`` they stand for: OpenAI bills their definitions alike."""
    if not isinstance(functions, list):
        return []
    return [{"type": "function", "function": f} for f in functions if isinstance(f, dict)]  # pyright: ignore


def _first_function(tools: object, chat: bool) -> tuple[str, object] | None:
    """Name and parameters of the first function tool (chat nests them under `function`)."""
    for tool in tools if isinstance(tools, list) else []:  # pyright: ignore[reportUnknownVariableType]
        if isinstance(tool, dict) and tool.get("type") == "function":  # pyright: ignore[reportUnknownMemberType]
            fn: Any = tool.get("function", {}) if chat else tool  # pyright: ignore[reportUnknownMemberType]
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):  # pyright: ignore[reportUnknownMemberType]
                return fn["name"], fn.get("parameters")  # pyright: ignore
    return None


def _plan(
    *,
    model: str,
    key: bytes,
    prompt: list[int],
    cache: PromptCache,
    max_tokens: int | None,
    effort: object,
    tool: tuple[str, object] | None,
) -> _Plan:
    cached = cache.lookup_and_store(model, prompt)
    reasoning = text.reasoning_tokens(model, effort)
    if tool is not None:
        name, parameters = tool
        arguments = text.tool_arguments(parameters, key)
        call = _Tool(
            call_id="call_" + text.request_key(key, "call").hex()[:24],
            name=name,
            arguments=arguments,
            deltas=text.split_tokens(key, text.encode(arguments, model), model),
        )
        # Approximation: a call's output tokens are its name plus arguments (the framing is hidden),
        # and max tokens never cut a call short.
        out = text.count_tokens(name, model) + text.count_tokens(arguments, model)
        return _Plan(
            model=model,
            prompt_tokens=len(prompt),
            cached_tokens=cached,
            text="",
            deltas=[],
            finish="tool_calls",
            tool=call,
            reasoning_tokens=reasoning,
            output_tokens=out + reasoning,
        )
    # Reasoning spends the max-token budget first, as on OpenAI (max_completion_tokens and
    # max_output_tokens include reasoning); a budget it exhausts leaves an empty, cut reply.
    budget = None
    if max_tokens is not None:
        reasoning = min(reasoning, max_tokens)
        budget = max_tokens - reasoning
    reply = text.reply(key, model, budget)
    return _Plan(
        model=model,
        prompt_tokens=len(prompt),
        cached_tokens=cached,
        text=reply.text,
        deltas=text.split_tokens(key, reply.ids, model),
        finish="length" if reply.truncated else "stop",
        tool=None,
        reasoning_tokens=reasoning,
        output_tokens=len(reply.ids) + reasoning,
    )


def _answer(plan: _Plan, **kwargs: Any) -> Answer:
    return Answer(
        model=plan.model,
        input_tokens=plan.prompt_tokens,
        output_tokens=plan.output_tokens,
        cached_tokens=plan.cached_tokens,
        reasoning_tokens=plan.reasoning_tokens,
        **kwargs,
    )


# --- chat completions -----------------------------------------------------------------------------


def _chat_usage(plan: _Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completions(req: dict[str, Any], cache: PromptCache, *, seq: int, usage: bool = True) -> Answer:
    """Answer `POST /v1/chat/completions`; `usage=False` leaves usage out entirely."""
    model = _model(req)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):  # pyright: ignore
        raise BadRequest("'messages' must be a non-empty array of objects.", "messages")
    msgs: list[dict[str, Any]] = messages  # pyright: ignore[reportUnknownVariableType]
    tools = req.get("tools") or _as_tools(req.get("functions")) or None
    last = msgs[-1]
    wants_tool = last.get("role") == "user" and any(
        w in text.content_text(last.get("content")).lower() for w in _TOOL_WORDS
    )
    key = text.request_key(model, msgs)
    plan = _plan(
        model=model,
        key=key,
        prompt=text.chat_prompt(msgs, tools, model),
        cache=cache,
        max_tokens=_int_or_none(req, "max_completion_tokens", "max_tokens"),
        effort=req.get("reasoning_effort"),
        tool=_first_function(tools, chat=True) if wants_tool else None,
    )
    cid = "chatcmpl-" + text.request_key(key, seq).hex()[:29]
    created = int(time.time())
    head = {"id": cid, "object": "chat.completion", "created": created, "model": model}
    if not req.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": None, "annotations": []}
        if plan.tool is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": plan.tool.call_id,
                    "type": "function",
                    "function": {"name": plan.tool.name, "arguments": plan.tool.arguments},
                }
            ]
        body: dict[str, Any] = {
            **head,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish}],
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
        if usage:
            body["usage"] = _chat_usage(plan)
        return _answer(plan, body=body)

    # Stream: when include_usage is set every chunk carries "usage": null and one extra chunk with
    # empty choices carries the usage before [DONE] (OpenAI ChatCompletionStreamOptions docs).
    options = req.get("stream_options")
    include_usage = usage and isinstance(options, dict) and bool(options.get("include_usage"))  # pyright: ignore
    head["object"] = "chat.completion.chunk"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            **head,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return _sse(body)

    events: list[bytes] = []
    if plan.tool is not None:
        first_call = {
            "index": 0,
            "id": plan.tool.call_id,
            "type": "function",
            "function": {"name": plan.tool.name, "arguments": ""},
        }
        events.append(chunk({"role": "assistant", "content": None, "tool_calls": [first_call], "refusal": None}))
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": d}}]}) for d in plan.tool.deltas]
    else:
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        events += [chunk({"content": d}) for d in plan.deltas]
    events.append(chunk({}, plan.finish))
    usage_event = None
    if include_usage:
        usage_event = len(events)
        events.append(
            _sse(
                {
                    **head,
                    "service_tier": "default",
                    "system_fingerprint": _FINGERPRINT,
                    "choices": [],
                    "usage": _chat_usage(plan),
                }
            )
        )
    events.append(_sse("[DONE]"))
    return _answer(plan, events=events, usage_event=usage_event)


# --- responses --------------------------------------------------------------------------------------


def _responses_usage(plan: _Plan) -> dict[str, Any]:
    return {
        "input_tokens": plan.prompt_tokens,
        # openai 3.x's InputTokensDetails requires cache_write_tokens; OpenAI does not write caches
        # on request, so it is always 0 here.
        "input_tokens_details": {"cached_tokens": plan.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
    }


def _last_user_text(input: object) -> str | None:
    if isinstance(input, str):
        return input
    if isinstance(input, list) and input and isinstance(input[-1], dict):
        item: dict[str, Any] = input[-1]  # pyright: ignore[reportUnknownVariableType]
        if item.get("role") == "user":
            return text.content_text(item.get("content"))
    return None


def responses(req: dict[str, Any], cache: PromptCache, *, seq: int, usage: bool = True) -> Answer:
    """Answer `POST /v1/responses`; `usage=False` leaves usage out of the final response object."""
    model = _model(req)
    input = req.get("input")
    if not isinstance(input, (str, list)):
        raise BadRequest("'input' must be a string or an array of input items.", "input")
    instructions = req.get("instructions")
    tools = req.get("tools") or None
    reasoning_cfg = req.get("reasoning")
    effort = reasoning_cfg.get("effort") if isinstance(reasoning_cfg, dict) else None  # pyright: ignore
    user_text = _last_user_text(input)  # pyright: ignore[reportUnknownArgumentType]
    wants_tool = user_text is not None and any(w in user_text.lower() for w in _TOOL_WORDS)
    key = text.request_key(model, instructions, input)
    max_output = _int_or_none(req, "max_output_tokens")
    plan = _plan(
        model=model,
        key=key,
        prompt=text.responses_prompt(instructions, input, tools, model),
        cache=cache,
        max_tokens=max_output,
        effort=effort,
        tool=_first_function(tools, chat=False) if wants_tool else None,
    )
    ident = text.request_key(key, seq).hex()
    created = int(time.time())
    status = "incomplete" if plan.finish == "length" else "completed"

    output: list[dict[str, Any]] = []
    if plan.reasoning_tokens:  # reasoning models list a (summary-less) reasoning item first
        output.append({"id": "rs_" + ident[:48], "type": "reasoning", "summary": []})
    if plan.tool is not None:
        output.append(
            {
                "id": "fc_" + ident[:48],
                "type": "function_call",
                "status": "completed",
                "arguments": plan.tool.arguments,
                "call_id": plan.tool.call_id,
                "name": plan.tool.name,
            }
        )
    elif plan.text:
        output.append(
            {
                "id": "msg_" + ident[:48],
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}],
            }
        )

    def response(state: str, items: list[dict[str, Any]], final: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": "resp_" + ident[:50],
            "object": "response",
            "created_at": created,
            "status": state,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if state == "incomplete" else None,
            "instructions": instructions,
            "max_output_tokens": max_output,
            "max_tool_calls": None,
            "model": model,
            "output": items,
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "previous_response_id": req.get("previous_response_id"),
            "prompt_cache_key": None,
            "reasoning": {"effort": effort, "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": req.get("store", True),
            "temperature": req.get("temperature", 1.0),
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": req.get("tool_choice", "auto"),
            "tools": tools or [],
            "top_logprobs": 0,
            "top_p": req.get("top_p", 1.0),
            "truncation": "disabled",
            "user": None,
            "metadata": req.get("metadata") or {},
        }
        if final:
            obj["completed_at"] = created if state == "completed" else None
            if usage:
                obj["usage"] = _responses_usage(plan)
        else:
            obj["usage"] = None
        return obj

    if not req.get("stream"):
        return _answer(plan, body=response(status, output, final=True))

    # Event order and fields per the Responses streaming reference and the SDK's
    # types/responses/response_*_event.py; sequence_number counts from 0 across the whole stream.
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [], final=False)},
        {"type": "response.in_progress", "response": response("in_progress", [], final=False)},
    ]
    for index, item in enumerate(output):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "content": []},
                }
            )
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            events.append({"type": "response.content_part.added", **where, "content_index": 0, "part": part})
            events += [
                {"type": "response.output_text.delta", **where, "content_index": 0, "delta": d, "logprobs": []}
                for d in plan.deltas
            ]
            events.append(
                {"type": "response.output_text.done", **where, "content_index": 0, "text": plan.text, "logprobs": []}
            )
            events.append(
                {"type": "response.content_part.done", **where, "content_index": 0, "part": {**part, "text": plan.text}}
            )
        elif item["type"] == "function_call" and plan.tool is not None:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "arguments": ""},
                }
            )
            events += [
                {"type": "response.function_call_arguments.delta", **where, "delta": d} for d in plan.tool.deltas
            ]
            events.append({"type": "response.function_call_arguments.done", **where, "arguments": plan.tool.arguments})
        else:
            events.append({"type": "response.output_item.added", "output_index": index, "item": item})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": f"response.{status}", "response": response(status, output, final=True)})
    framed = [_sse({**ev, "sequence_number": n}, event=ev["type"]) for n, ev in enumerate(events)]
    return _answer(plan, events=framed, usage_event=len(framed) - 1 if usage else None)


# --- embeddings -------------------------------------------------------------------------------------


def _is_token_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)  # pyright: ignore


def embeddings(req: dict[str, Any], *, usage: bool = True) -> Answer:
    """Answer `POST /v1/embeddings` with small deterministic unit vectors."""
    model = _model(req)
    raw = req.get("input")
    items: list[str | list[int]]
    if isinstance(raw, str):
        items = [raw]
    elif _is_token_list(raw) and raw:
        items = [raw]  # pyright: ignore[reportAssignmentType]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) or _is_token_list(x) for x in raw):  # pyright: ignore
        items = raw  # pyright: ignore[reportAssignmentType]
    else:
        raise BadRequest("'input' must be a string, an array of strings, or token arrays.", "input")
    dims = req.get("dimensions")
    if dims is None:
        dims = 8
    elif isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise BadRequest("'dimensions' must be an integer between 1 and 4096.", "dimensions")
    fmt = req.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")

    tokens = sum(text.count_tokens(x, model) if isinstance(x, str) else len(x) for x in items)
    data: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        vector = text.embedding_vector(model, item, dims)
        # The SDK asks for base64 by default: little-endian float32, as OpenAI sends it.
        encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode() if fmt == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if usage:
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return Answer(
        model=model, body=body, input_tokens=tokens, output_tokens=None, cached_tokens=None, reasoning_tokens=None
    )
