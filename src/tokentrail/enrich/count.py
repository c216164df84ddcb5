"""Count tokens where the provider reported none: input from the request body, output from the text.

Runs after the response, off the caller's thread: the pipeline calls `count_request` when a call's
usage has no input count (streams without ``include_usage``, vLLM and local servers, cut streams) and
`count_text` on the generated text when it has no output count. The result names its tokenizer and
says whether it is the model's own (provenance ``counted``) or a stand-in (``estimated``).

How a prompt is counted, per API family. The hidden tokens are documented approximations, the same
rules `tokentrail.sim` reports with, so the simulator's reported counts are the reference in tests:

- ``openai.chat`` follows the OpenAI cookbook's ``num_tokens_from_messages`` ("How to count tokens
  with tiktoken", openai/openai-cookbook ``examples/How_to_count_tokens_with_tiktoken.ipynb``): 3
  tokens per message plus the tokens of every string field (role, content, name, tool_call_id), 1 more
  per ``name``, and 3 priming the reply. Content may be a string or a list of parts, whose ``text``
  counts. An assistant's ``tool_calls`` count their function names and arguments. Llama 3 and Qwen
  models (vLLM, Ollama) use their chat formats' framing instead: Llama 3 adds 4 per message
  (``<|start_header_id|>``, ``<|end_header_id|>``, ``\\n\\n``, ``<|eot_id|>``) and 5 for
  ``<|begin_of_text|>`` and the reply's header; ChatML (Qwen) adds 4 per message (``<|im_start|>``,
  ``\\n``, ``<|im_end|>``, ``\\n``) and 3 priming; both count role, content and tool calls only.
- ``openai.responses``: ``instructions`` as a system message, a string ``input`` as a user message;
  message items count role and content, other items 3 plus every string field but type, id and status.
- ``openai.embeddings`` / ``openai.completions``: the text of every input (token-id inputs count
  their length); no hidden tokens.
- ``anthropic.messages``: 3 for a system prompt plus its text, 3 per message plus its blocks (text;
  tool_use name and JSON input; tool_result content), 3 priming. Claude's tokenizer is not public:
  always ``estimated`` with o200k_base.
- ``gemini.generate``: the text of every part (thoughts excluded), function calls and responses as name
  plus JSON, the system instruction; no hidden tokens. Gemini's tokenizer is not public: ``estimated``.
- ``ollama.chat`` / ``ollama.generate``: the chat rule above in the model's chat format; a raw
  generate prompt counts as plain text, and ``context`` ids by their number.
- ``cohere.chat`` (v2) as ``openai.chat``, documents as JSON; ``cohere.chat.v1``: preamble, history,
  message, tool results as JSON. Cohere's tokenizer is not available offline: ``estimated``.

Tool definitions count as the compact JSON of the definitions as sent. Real providers render tools
differently (OpenAI into a hidden TypeScript-like preamble, see the cookbook's ``num_tokens_for_tools``;
Anthropic adds a tool-use system prompt of a few hundred tokens), so counts of tool-heavy prompts are
approximate. Images, audio and files are not counted; nor is server-side state (``previous_response_id``,
Gemini ``cachedContent``). When a body has such parts the count is a floor and ``complete`` is False.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, cast

from tokentrail import _guard
from tokentrail.usage import Source

from . import tokenizers
from .tokenizers import Tokenizer

__all__ = ["APIS", "PARTS", "Analysis", "Counted", "analyze", "count_request", "count_text"]

PARTS = ("tool_definitions", "tool_results", "system", "history", "latest_input")
"""Where a prompt's tokens go (see `tokentrail.enrich.anatomy`); hidden priming tokens go nowhere."""

UNKNOWN_TOOL = "(unknown)"
"""The name of a tool result whose call is not in the request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Counted:
    """Tokens counted by tokentrail, and with what."""

    tokens: int
    tokenizer: str
    """The encoding that counted, e.g. "o200k_base"."""
    exact: bool
    """True when the tokenizer is the model's own (provenance ``counted``), else ``estimated``."""
    complete: bool = True
    """False when the count is a floor: the body had parts it leaves out (images, audio, files,
    server-side history), or the model's output includes reasoning its text does not show."""

    @property
    def source(self) -> Source:
        """The provenance of this count."""
        return Source.COUNTED if self.exact else Source.ESTIMATED


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    """A request body walked once: its total input tokens and where they went."""

    tokenizer: Tokenizer
    input_tokens: int
    complete: bool
    parts: Mapping[str, int]
    """Tokens per part of `PARTS`; they add up to at most `input_tokens` (priming is in no part)."""
    tools_offered: tuple[str, ...]
    tools_called: tuple[str, ...]
    tool_definitions: tuple[tuple[str, str], ...]
    """(name, compact JSON) of each tool definition, counted one by one only when asked."""
    tool_results_by_name: Mapping[str, int]


# --- chat formats ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Frame:
    per_message: int
    per_name: int
    priming: int
    every_string: bool
    """Count every string field of a message (the cookbook rule), else role and content only."""


_FRAMES = {
    "openai": _Frame(per_message=3, per_name=1, priming=3, every_string=True),
    "llama3": _Frame(per_message=4, per_name=0, priming=5, every_string=False),
    "chatml": _Frame(per_message=4, per_name=0, priming=3, every_string=False),
}
_OPENAI = _FRAMES["openai"]


# --- the tally ---------------------------------------------------------------------------------------


class _Tally:
    """Running counts while a body is walked; every string is counted on its own, as the simulator does."""

    __slots__ = ("called", "complete", "count", "defs", "offered", "parts", "results", "total")

    def __init__(self, tok: Tokenizer) -> None:
        self.count: Callable[[str], int] = tok.count
        self.total = 0
        self.complete = True
        self.parts = dict.fromkeys(PARTS, 0)
        self.offered: list[str] = []
        self.called: list[str] = []
        self.defs: list[tuple[str, str]] = []
        self.results: dict[str, int] = {}

    def add(self, part: str | None, n: int) -> None:
        self.total += n
        if part is not None:
            self.parts[part] += n

    def text(self, value: object) -> int:
        return self.count(value) if isinstance(value, str) and value else 0

    def result(self, name: object, n: int) -> None:
        key = name if isinstance(name, str) and name else UNKNOWN_TOOL
        self.results[key] = self.results.get(key, 0) + n


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _dict(value: object) -> dict[str, Any] | None:
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


def _list(value: object) -> list[Any]:
    return cast(list[Any], value) if isinstance(value, list) else []


def _content_text(content: object, t: _Tally, *, documents: bool = False) -> str:
    """A string content, or the joined ``text`` of its parts (as the simulator joins them)."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for part in _list(content):
        p = _dict(part)
        if p is None:
            continue
        text = p.get("text")
        if isinstance(text, str):
            texts.append(text)
        elif documents and p.get("type") == "document":  # Cohere tool results
            texts.append(_compact(p.get("document")))
        elif p.get("type") not in ("text", "input_text", "output_text", "refusal"):
            t.complete = False  # an image, audio or file part: not counted
    return "".join(texts)


def _tool_defs(t: _Tally, tools: object, name_of: Callable[[dict[str, Any]], object]) -> None:
    """Offered tools: the compact JSON of the whole list counts (as the simulator counts it)."""
    if not tools:
        return
    t.add("tool_definitions", t.text(_compact(tools)))
    for tool in _list(tools):
        d = _dict(tool)
        if d is None:
            continue
        name = name_of(d)
        name = name if isinstance(name, str) and name else UNKNOWN_TOOL
        t.offered.append(name)
        t.defs.append((name, _compact(d)))


def _as_tools(functions: object) -> list[dict[str, Any]]:
    """The deprecated ``functions`` as the ``tools`` they stand for: OpenAI bills their definitions alike."""
    return [{"type": "function", "function": f} for f in _list(functions) if isinstance(f, dict)]


def _openai_tool_name(tool: dict[str, Any]) -> object:
    for key in ("function", "custom"):  # chat nests function tools; responses keeps them flat
        inner = _dict(tool.get(key))
        if inner is not None and isinstance(inner.get("name"), str):
            return inner["name"]
    return tool.get("name") or tool.get("type")


def _last_index(items: list[Any], is_user_turn: Callable[[dict[str, Any]], bool]) -> int:
    for i in range(len(items) - 1, -1, -1):
        d = _dict(items[i])
        if d is not None and is_user_turn(d):
            return i
    return -1


# --- OpenAI chat (also vLLM, Ollama's native chat, Cohere v2) -----------------------------------------


def _calls(t: _Tally, calls: object, ids: dict[str, str]) -> int:
    """Tool calls of an assistant turn: each function's name and arguments."""
    n = 0
    for call in _list(calls):
        c = _dict(call)
        fn = _dict(c.get("function")) if c is not None else None
        if c is None or fn is None:
            continue
        name = fn.get("name")
        args = fn.get("arguments")
        n += t.text(name) + t.text(args if isinstance(args, str) else _compact(args) if args else "")
        if isinstance(name, str):
            t.called.append(name)
            if isinstance(c.get("id"), str):
                ids[c["id"]] = name
    return n


def _message(t: _Tally, m: dict[str, Any], frame: _Frame, ids: dict[str, str], *, documents: bool = False) -> int:
    n = frame.per_message
    for key, value in m.items():
        if key == "content":
            n += t.text(_content_text(value, t, documents=documents))
        elif key == "tool_calls":
            n += _calls(t, value, ids)
        elif key == "function_call" and isinstance(value, dict):  # the legacy single call
            n += _calls(t, [{"function": value}], ids)
        elif key == "images" and value:
            t.complete = False
        elif isinstance(value, str) and (frame.every_string or key == "role"):
            n += t.text(value)
            if key == "name":
                n += frame.per_name
    return n


def _chat(t: _Tally, req: dict[str, Any], frame: _Frame, *, documents: bool = False) -> bool:
    messages = req.get("messages")
    if not isinstance(messages, list):
        return False
    msgs = cast(list[Any], messages)
    _tool_defs(t, req.get("tools") or _as_tools(req.get("functions")), _openai_tool_name)
    latest = _last_index(msgs, lambda m: m.get("role") == "user")
    ids: dict[str, str] = {}
    for i, item in enumerate(msgs):
        m = _dict(item)
        if m is None:
            continue
        role = m.get("role")
        n = _message(t, m, frame, ids, documents=documents)
        if role in ("system", "developer"):
            t.add("system", n)
        elif role in ("tool", "function"):
            t.add("tool_results", n)
            call_id = m.get("tool_call_id")
            name = m.get("name") or m.get("tool_name") or (ids.get(call_id) if isinstance(call_id, str) else None)
            t.result(name, n)
        else:
            t.add("latest_input" if i == latest else "history", n)
    for doc in _list(req.get("documents")):  # Cohere v2 grounding documents
        t.add("latest_input", t.text(doc if isinstance(doc, str) else _compact(doc)))
    t.add(None, frame.priming)
    return True


# --- OpenAI Responses ----------------------------------------------------------------------------------

_ITEM_SKIP = frozenset({"type", "id", "status"})


def _responses(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    input_ = req.get("input")
    if not isinstance(input_, (str, list)):
        return False
    _tool_defs(t, req.get("tools"), _openai_tool_name)
    if req.get("previous_response_id") or req.get("conversation"):
        t.complete = False  # the earlier turns live on the server
    ids: dict[str, str] = {}
    instructions = req.get("instructions")
    if isinstance(instructions, str):
        t.add("system", _message(t, {"role": "system", "content": instructions}, frame, ids))
    if isinstance(input_, str):
        t.add("latest_input", _message(t, {"role": "user", "content": input_}, frame, ids))
        t.add(None, frame.priming)
        return True
    items = cast(list[Any], input_)
    latest = _last_index(items, lambda d: d.get("role") == "user")
    item_frame = replace(frame, every_string=True)  # non-message items count every string field
    for i, item in enumerate(items):
        d = _dict(item)
        if d is None:
            continue
        if "role" in d:
            role = d["role"]
            n = _message(t, {"role": role, "content": d.get("content")}, frame, ids)
            part = "system" if role in ("system", "developer") else "latest_input" if i == latest else "history"
            t.add(part, n)
            continue
        kind = d.get("type")
        if kind == "reasoning":
            # Reasoning items carry an encrypted blob whose length says nothing about its tokens.
            t.complete = False
            summaries = (_dict(s) for s in _list(d.get("summary")))
            t.add("history", frame.per_message + sum(t.text(s.get("text")) for s in summaries if s is not None))
            continue
        if kind == "item_reference":
            t.complete = False
            continue
        fields = {k: v for k, v in d.items() if k not in _ITEM_SKIP}
        if isinstance(fields.get("output"), list):  # a function_call_output given as content parts
            fields["output"] = _content_text(fields["output"], t)
        n = _message(t, fields, item_frame, ids)
        if kind in ("function_call_output", "custom_tool_call_output"):
            t.add("tool_results", n)
            call_id = d.get("call_id")
            t.result(ids.get(call_id) if isinstance(call_id, str) else None, n)
        else:
            if kind in ("function_call", "custom_tool_call") and isinstance(d.get("name"), str):
                t.called.append(d["name"])
                if isinstance(d.get("call_id"), str):
                    ids[d["call_id"]] = d["name"]
            t.add("history", n)
    t.add(None, frame.priming)
    return True


# --- plain text inputs ----------------------------------------------------------------------------------


def _is_ids(value: object) -> bool:
    return isinstance(value, list) and all(type(x) is int for x in cast(list[Any], value))


def _texts(t: _Tally, value: object) -> bool:
    """A string, a list of strings, token ids, or lists of token ids (embeddings, completions)."""
    if isinstance(value, str):
        t.add("latest_input", t.text(value))
    elif _is_ids(value):
        t.add("latest_input", len(cast(list[Any], value)))
    elif isinstance(value, list):
        for item in cast(list[Any], value):
            if isinstance(item, str):
                t.add("latest_input", t.text(item))
            elif _is_ids(item):
                t.add("latest_input", len(item))
            else:
                t.complete = False
    else:
        return False
    return True


def _embeddings(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    return _texts(t, req.get("input"))


def _completions(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    if not _texts(t, req.get("prompt")):
        return False
    t.add("latest_input", t.text(req.get("suffix")))
    return True


# --- Anthropic Messages ----------------------------------------------------------------------------------

_UNCOUNTED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # earlier turns' thinking is stripped


def _blocks(value: object) -> list[Any]:
    return [value] if isinstance(value, str) else _list(value)


def _anthropic_block(t: _Tally, block: object, part: str, ids: dict[str, str]) -> None:
    if isinstance(block, str):
        t.add(part, t.text(block))
        return
    b = _dict(block)
    if b is None:
        return
    kind = b.get("type")
    if kind == "text" and isinstance(b.get("text"), str):
        t.add(part, t.text(b["text"]))
    elif kind == "tool_use":
        name = b.get("name", "")
        t.add(part, t.text(str(name)) + t.text(_compact(b.get("input", {}))))
        if isinstance(name, str):
            t.called.append(name)
            if isinstance(b.get("id"), str):
                ids[b["id"]] = name
    elif kind == "tool_result":
        before = t.parts["tool_results"]
        for inner in _blocks(b.get("content")):
            if not _is_type(inner, "tool_result"):  # results do not nest; never count one twice
                _anthropic_block(t, inner, "tool_results", ids)
        use_id = b.get("tool_use_id")
        t.result(ids.get(use_id) if isinstance(use_id, str) else None, t.parts["tool_results"] - before)
    elif not (isinstance(kind, str) and kind in _UNCOUNTED_BLOCKS):  # unknown or malformed
        t.complete = False  # images, documents, server tool results: not counted


def _is_type(block: object, kind: str) -> bool:
    d = _dict(block)
    return d is not None and d.get("type") == kind


def _only_tool_results(content: object) -> bool:
    blocks = _blocks(content)
    return bool(blocks) and all(_is_type(b, "tool_result") for b in blocks)


def _anthropic(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    messages = req.get("messages")
    if not isinstance(messages, list):
        return False
    msgs = cast(list[Any], messages)
    for tool in _list(req.get("tools")):  # each definition on its own, without cache_control
        d = _dict(tool)
        if d is None:
            continue
        text = _compact({k: v for k, v in d.items() if k != "cache_control"})
        name = d.get("name") or d.get("type")
        name = name if isinstance(name, str) else UNKNOWN_TOOL
        t.add("tool_definitions", t.text(text))
        t.offered.append(name)
        t.defs.append((name, text))
    ids: dict[str, str] = {}
    system = req.get("system")
    if system:
        t.add("system", _OPENAI.per_message)
        for block in _blocks(system):
            _anthropic_block(t, block, "system", ids)
    latest = _last_index(msgs, lambda m: m.get("role") == "user" and not _only_tool_results(m.get("content")))
    for i, item in enumerate(msgs):
        m = _dict(item)
        if m is None:
            continue
        content = m.get("content")
        part = "latest_input" if i == latest else "tool_results" if _only_tool_results(content) else "history"
        t.add(part, _OPENAI.per_message)
        blocks = _blocks(content)
        for block in blocks:
            _anthropic_block(t, block, part, ids)
        if part == "tool_results":  # the message's framing goes with its first result's tool
            use_id = blocks[0].get("tool_use_id")
            t.result(ids.get(use_id) if isinstance(use_id, str) else None, _OPENAI.per_message)
    t.add(None, _OPENAI.priming)
    return True


# --- Gemini ------------------------------------------------------------------------------------------------


def _camel(d: dict[str, Any], name: str, snake: str) -> Any:
    # Proto JSON accepts lowerCamel and snake_case field names; google-genai sends both.
    return d[name] if name in d else d.get(snake)


def _gemini_parts(t: _Tally, content: object, part: str) -> None:
    if isinstance(content, str):
        t.add(part, t.text(content))
        return
    c = _dict(content)
    for p in _list(c.get("parts")) if c is not None else []:
        d = _dict(p)
        if d is None:
            continue
        if isinstance(d.get("text"), str):
            if not d.get("thought"):
                t.add(part, t.text(d["text"]))
        elif not any(k in d for k in ("functionCall", "function_call", "functionResponse", "function_response")):
            t.complete = False  # inline data, files, code execution: not counted
        call = _dict(_camel(d, "functionCall", "function_call"))
        if call is not None:
            name = call.get("name", "")
            t.add(part, t.text(str(name)) + t.text(_compact(call.get("args", {}))))
            if isinstance(name, str):
                t.called.append(name)
        response = _dict(_camel(d, "functionResponse", "function_response"))
        if response is not None:
            name = response.get("name", "")
            n = t.text(str(name)) + t.text(_compact(response.get("response", {})))
            t.add("tool_results", n)
            t.result(name, n)


def _gemini_tool_names(t: _Tally, tools: object) -> None:
    for tool in _list(tools):
        d = _dict(tool)
        if d is None:
            continue
        decls = _camel(d, "functionDeclarations", "function_declarations")
        for decl in _list(decls):
            f = _dict(decl)
            if f is not None:
                name = f.get("name")
                name = name if isinstance(name, str) and name else UNKNOWN_TOOL
                t.offered.append(name)
                t.defs.append((name, _compact(f)))
        for key, value in d.items():  # built-in tools: googleSearch, codeExecution, urlContext...
            if key not in ("functionDeclarations", "function_declarations"):
                t.offered.append(key)
                t.defs.append((key, _compact({key: value})))


def _gemini_user_turn(c: dict[str, Any]) -> bool:
    if c.get("role", "user") != "user":
        return False
    parts = (_dict(p) for p in _list(c.get("parts")))
    return any(p is not None and isinstance(p.get("text"), str) for p in parts)


def _gemini(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    contents = req.get("contents")
    if contents is None:
        return False
    system = _camel(req, "systemInstruction", "system_instruction")
    if system is not None:
        _gemini_parts(t, system, "system")
    tools = req.get("tools")
    if tools:
        t.add("tool_definitions", t.text(_compact(tools)))
        _gemini_tool_names(t, tools)
    if _camel(req, "cachedContent", "cached_content"):
        t.complete = False  # the cached part of the prompt is on the server
    items = cast(list[Any], contents) if isinstance(contents, list) else [contents]
    latest = _last_index(items, _gemini_user_turn)
    for i, content in enumerate(items):
        if isinstance(content, str):  # a bare string is the user's turn
            _gemini_parts(t, content, "latest_input" if i == len(items) - 1 else "history")
        else:
            _gemini_parts(t, content, "latest_input" if i == latest else "history")
    return True


# --- Ollama ------------------------------------------------------------------------------------------------


def _ollama_chat(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    return _chat(t, req, frame)


def _ollama_generate(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    prompt = req.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        return False
    if req.get("images"):
        t.complete = False
    if not prompt:  # an empty prompt only loads the model: nothing is evaluated
        return True
    context = req.get("context")
    if isinstance(context, list):  # token ids of an earlier exchange, sent back to continue it
        t.add("history", sum(1 for x in cast(list[Any], context) if type(x) is int))
    if req.get("raw"):
        t.add("latest_input", t.text(prompt))
        return True
    system = req.get("system")
    if isinstance(system, str) and system:
        t.add("system", _message(t, {"role": "system", "content": system}, frame, {}))
    t.add("latest_input", _message(t, {"role": "user", "content": prompt}, frame, {}))
    t.add(None, frame.priming)
    return True


# --- Cohere ------------------------------------------------------------------------------------------------


def _cohere_v2(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    return _chat(t, req, frame, documents=True)


def _cohere_v1(t: _Tally, req: dict[str, Any], frame: _Frame) -> bool:
    message = req.get("message")
    if not isinstance(message, str):
        return False
    _tool_defs(t, req.get("tools"), lambda d: d.get("name"))
    preamble = req.get("preamble")
    if isinstance(preamble, str) and preamble:
        t.add("system", frame.per_message + t.text(preamble))
    for turn in _list(req.get("chat_history")):
        d = _dict(turn)
        if d is None:
            continue
        role = d.get("role")
        n = frame.per_message + t.text(role) + t.text(d.get("message"))
        for call in _list(d.get("tool_calls")):
            c = _dict(call)
            if c is not None and isinstance(c.get("name"), str):
                n += t.text(c["name"]) + t.text(_compact(c.get("parameters", {})))
                t.called.append(c["name"])
        results = _cohere_results(t, d.get("tool_results"))
        if role == "TOOL" or results:
            t.add("tool_results", n + sum(r for _, r in results))
            for name, r in results:
                t.result(name, r)
        else:
            t.add("system" if role == "SYSTEM" else "history", n)
    t.add("latest_input", frame.per_message + t.text(message))
    for name, r in _cohere_results(t, req.get("tool_results")):
        t.add("tool_results", r)
        t.result(name, r)
    for doc in _list(req.get("documents")):
        t.add("latest_input", t.text(doc if isinstance(doc, str) else _compact(doc)))
    t.add(None, frame.priming)
    return True


def _cohere_results(t: _Tally, results: object) -> list[tuple[object, int]]:
    """(tool name, tokens) of each v1 tool result: the call's name and parameters, and the outputs."""
    out: list[tuple[object, int]] = []
    for result in _list(results):
        r = _dict(result)
        if r is None:
            continue
        call = _dict(r.get("call")) or {}
        name = call.get("name")
        out.append(
            (name, t.text(name) + t.text(_compact(call.get("parameters", {}))) + t.text(_compact(r.get("outputs", []))))
        )
    return out


# --- entry points -----------------------------------------------------------------------------------------

_WALKERS: dict[str, Callable[[_Tally, dict[str, Any], _Frame], bool]] = {
    "openai.chat": lambda t, req, frame: _chat(t, req, frame),
    "openai.completions": _completions,
    "openai.responses": _responses,
    "openai.embeddings": _embeddings,
    "anthropic.messages": _anthropic,
    "gemini.generate": _gemini,
    "ollama.chat": _ollama_chat,
    "ollama.generate": _ollama_generate,
    "cohere.chat": _cohere_v2,
    "cohere.chat.v1": _cohere_v1,
}
APIS = frozenset(_WALKERS)
"""The API families whose request bodies can be counted."""

_ANALYSES: OrderedDict[tuple[str, str | None, bytes], Analysis | None] = OrderedDict()
_ANALYSES_MAX = 16  # count_request then anatomy on the same body walk it once
_analyses_lock = threading.Lock()


def _decode(body: bytes | bytearray | memoryview | str) -> dict[str, Any] | None:
    try:
        text = body if isinstance(body, str) else bytes(body).decode("utf-8")
        value = json.loads(text)
    except (ValueError, TypeError, RecursionError):  # not JSON, not UTF-8 (gzip), nested too deep
        return None
    return _dict(value)


def analyze(api: str, body: bytes | bytearray | memoryview | str, model: str | None) -> Analysis | None:
    """Walk a request body once: its input tokens, and where they went. None when it cannot be read.

    Results for the last few bodies are kept, so `count_request` and `anatomy` on the same body cost
    one walk. Never raises on bad input.
    """
    walker = _WALKERS.get(api) if isinstance(api, str) else None
    if walker is None or not isinstance(body, (bytes, bytearray, memoryview, str)):
        return None
    raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else bytes(body)
    key = (api, model if isinstance(model, str) else None, raw)
    with _analyses_lock:
        if key in _ANALYSES:
            _ANALYSES.move_to_end(key)
            return _ANALYSES[key]
    result = _walk(walker, raw, key[1])
    with _analyses_lock:
        _ANALYSES[key] = result
        while len(_ANALYSES) > _ANALYSES_MAX:
            _ANALYSES.popitem(last=False)
    return result


def _walk(walker: Callable[[_Tally, dict[str, Any], _Frame], bool], raw: bytes, model: str | None) -> Analysis | None:
    req = _decode(raw)
    if req is None:
        return None
    if model is None and isinstance(req.get("model"), str):
        model = req["model"]
    try:
        tok = tokenizers.for_model(model)
        t = _Tally(tok)
        frame = _FRAMES[tokenizers.chat_format(model)]
        if not walker(t, req, frame):
            return None
    except RecursionError:  # a pathological nesting that json accepted and json.dumps did not
        return None
    except Exception as exc:  # our bug: fails tokentrail's tests (strict mode), never the user's call
        _guard.failed("enrich.count", exc)
        return None
    return Analysis(
        tokenizer=tok,
        input_tokens=t.total,
        complete=t.complete,
        parts=MappingProxyType(t.parts),
        tools_offered=tuple(t.offered),
        tools_called=tuple(t.called),
        tool_definitions=tuple(t.defs),
        tool_results_by_name=MappingProxyType(t.results),
    )


def count_request(api: str, body: bytes, model: str | None) -> Counted | None:
    """Input tokens of a request body, counted after the response when the provider reported none.

    Args:
        api: the API family, e.g. "openai.chat" (see `APIS`); others give None.
        body: the request body as sent (JSON).
        model: the model that answered, else the requested one; None reads the body's ``model``.

    Returns:
        The count, or None when the family is not countable or the body is not a request of it.
        Never raises on bad input.
    """
    a = analyze(api, body, model)
    if a is None:
        return None
    return Counted(tokens=a.input_tokens, tokenizer=a.tokenizer.name, exact=a.tokenizer.exact, complete=a.complete)


def count_text(text: str, model: str | None) -> Counted | None:
    """Output tokens of generated text (content, tool-call names and arguments), counted after the
    response when the provider reported none. None only when `text` is not a string.

    For OpenAI reasoning models (o1, o3, o4, gpt-5) the hidden reasoning tokens are billed as output
    but not in the text: the count is then a floor (``complete`` False).
    """
    if not isinstance(text, str):
        return None
    try:
        tok = tokenizers.for_model(model)
        complete = not tokenizers.hides_reasoning(model)
        return Counted(tokens=tok.count(text), tokenizer=tok.name, exact=tok.exact, complete=complete)
    except Exception as exc:
        _guard.failed("enrich.count", exc)
        return None
