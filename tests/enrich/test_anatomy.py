"""A prompt's anatomy per family, its per-tool breakdowns, and two properties over arbitrary bodies:
the parts never exceed the counted input, and nothing raises on any JSON (strict mode re-raises our
own errors, so a bug in a walker fails here)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokentrail.enrich import tokenizers
from tokentrail.enrich.anatomy import Anatomy, anatomy
from tokentrail.enrich.count import APIS, PARTS, count_request

O200K = tokenizers.for_model("gpt-4o")


def n(text: str) -> int:
    return O200K.count(text)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def parts_sum(a: Anatomy) -> int:
    return sum(getattr(a, p) for p in PARTS)


TOOLS: Any = [
    {"type": "function", "function": {"name": "lookup_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "search", "description": "Search the web."}},
]


def test_chat_anatomy() -> None:
    messages: Any = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "lookup_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    req = {"model": "gpt-4o", "messages": messages, "tools": TOOLS}
    a = anatomy("openai.chat", body(req), None)
    assert a is not None
    assert a.tool_definitions == n(compact(TOOLS))
    assert a.system == 3 + n("system") + n("You are terse.")
    assert a.tool_results == 3 + n("tool") + n("c1") + n("sunny, 21 C")
    assert a.latest_input == 3 + n("user") + n("And tomorrow?")
    first_user = 3 + n("user") + n("What's the weather in Paris?")
    call = 3 + n("assistant") + n("lookup_weather") + n('{"city":"Paris"}')
    assert a.history == first_user + call + 3 + n("assistant") + n("Sunny.")
    assert a.input_tokens == parts_sum(a) + 3 == count_request("openai.chat", body(req), None).tokens  # type: ignore[union-attr]
    assert a.tools_offered == ("lookup_weather", "search") and a.tools_called == ("lookup_weather",)
    assert a.tool_result_tokens_by_name == {"lookup_weather": a.tool_results}
    assert a.tool_definition_tokens_by_name == {
        name: n(compact(t)) for name, t in zip(a.tools_offered, TOOLS, strict=True)
    }
    assert list(a.as_dict()) == [
        "tool_definitions",
        "tool_results",
        "system",
        "history",
        "latest_input",
        "tools_offered",
        "tools_called",
        "tokenizer",
        "source",
        "tool_definitions_by_name",
        "tool_results_by_name",
    ]
    assert a.as_dict()["tokenizer"] == "o200k_base" and a.exact and a.as_dict()["source"] == "counted"
    assert a.as_dict()["tool_definitions_by_name"] == a.tool_definition_tokens_by_name
    assert a.as_dict()["tool_results_by_name"] == a.tool_result_tokens_by_name


def test_anthropic_agent_loop_latest_input_is_the_users_ask() -> None:
    req = {
        "model": "claude-sonnet-4-6",
        "system": "Use tools.",
        "tools": [
            {"name": "lookup_weather", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "lookup_weather", "input": {"city": "Paris"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]}
                ],
            },
        ],
    }
    a = anatomy("anthropic.messages", body(req), None)
    assert a is not None and not a.exact
    assert a.latest_input == 3 + n("Weather in Paris?")
    assert a.tool_results == 3 + n("sunny") and a.tool_result_tokens_by_name == {"lookup_weather": 3 + n("sunny")}
    assert a.history == 3 + n("lookup_weather") + n(compact({"city": "Paris"}))
    assert a.system == 3 + n("Use tools.")
    definition = compact({"name": "lookup_weather", "input_schema": {"type": "object"}})
    assert a.tool_definitions == n(definition) and a.tool_definition_tokens_by_name == {"lookup_weather": n(definition)}
    assert a.input_tokens == parts_sum(a) + 3


def test_gemini_and_responses_tool_results_by_name() -> None:
    gemini = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "lookup_weather", "response": {"sky": "sunny"}}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "lookup_weather"}]}, {"googleSearch": {}}],
    }
    a = anatomy("gemini.generate", body(gemini), "gemini-2.5-flash")
    assert a is not None and a.system == n("Be brief.") and a.latest_input == n("Weather?")
    assert a.tool_results == n("lookup_weather") + n(compact({"sky": "sunny"}))
    assert a.tools_offered == ("lookup_weather", "googleSearch") and a.tools_called == ("lookup_weather",)
    assert a.input_tokens == parts_sum(a)  # Gemini adds no hidden tokens

    responses = {
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "c9", "name": "lookup_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c9", "output": "sunny"},
        ],
    }
    r = anatomy("openai.responses", body(responses), None)
    assert r is not None and r.tool_result_tokens_by_name == {"lookup_weather": 3 + n("c9") + n("sunny")}
    assert r.system == 3 + n("system") + n("Be brief.") and r.latest_input == 3 + n("user") + n("Weather?")


def test_unknown_tool_results_and_unsupported_families() -> None:
    req = {"model": "gpt-4o", "messages": [{"role": "tool", "tool_call_id": "gone", "content": "42"}]}
    a = anatomy("openai.chat", body(req), None)
    assert a is not None and a.tool_result_tokens_by_name == {"(unknown)": a.tool_results}
    assert anatomy("bedrock.converse", body(req), None) is None
    assert anatomy("openai.chat", b"{", None) is None


# --- properties ----------------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_names = st.sampled_from(["lookup_weather", "search", "run_sql", ""])
_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=20,
)
_keys = ["role", "content", "name", "tool_calls", "tool_call_id", "type", "text", "parts", "function",
         "arguments", "input", "id", "tool_use_id", "functionCall", "functionResponse", "response", "args", "output",
         "call_id", "images", "thinking", "tool_name", "message", "tool_results", "call", "outputs", "document",
         "summary"]  # fmt: skip
_values = st.sampled_from(["user", "assistant", "system", "tool", "developer", "model", "USER", "CHATBOT", "TOOL",
                           "text", "tool_use", "tool_result", "function_call", "function_call_output", "reasoning",
                           "image_url", "input_text", "document", "item_reference"]) | _text | _names  # fmt: skip
# Bodies shaped like the families' requests, with every field free to be the wrong type.
_node: st.SearchStrategy[Any] = st.recursive(
    _values | st.integers(-5, 5) | st.none(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(_keys), children, max_size=5),
    max_leaves=30,
)
_roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "model", "USER", "CHATBOT", "TOOL"])
_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text", "image_url", "tool_use", "tool_result", "document", "thinking"])},
    optional={"text": _text, "name": _names, "input": _node, "id": _names, "tool_use_id": _names,
              "content": _text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _text}), max_size=2),
              "functionCall": st.fixed_dictionaries({"name": _names}, optional={"args": _node}),
              "functionResponse": st.fixed_dictionaries({"name": _names}, optional={"response": _node}),
              "thought": st.booleans()},
)  # fmt: skip
_call = st.fixed_dictionaries(
    {"id": _names, "function": st.fixed_dictionaries({}, optional={"name": _names, "arguments": _text | _node})}
)
_message = st.fixed_dictionaries(
    {"role": _roles},
    optional={"content": _text | st.none() | st.lists(_part, max_size=3), "parts": st.lists(_part, max_size=3),
              "tool_calls": st.lists(_call, max_size=2), "tool_call_id": _names, "name": _names, "message": _text,
              "tool_name": _names, "images": st.lists(_text, max_size=1)},
)  # fmt: skip
_item = _message | st.fixed_dictionaries(
    {"type": st.sampled_from(["function_call", "function_call_output", "reasoning", "item_reference", "message"])},
    optional={"call_id": _names, "name": _names, "arguments": _text, "output": _text | st.lists(_part, max_size=2),
              "summary": st.lists(st.fixed_dictionaries({"text": _text}), max_size=2), "encrypted_content": _text},
)  # fmt: skip
_tool = st.fixed_dictionaries(
    {},
    optional={"type": st.just("function"), "name": _names, "function": st.fixed_dictionaries({"name": _names}),
              "functionDeclarations": st.lists(st.fixed_dictionaries({"name": _names}), max_size=2),
              "cache_control": st.just({"type": "ephemeral"})},
)  # fmt: skip
_messages = st.lists(_message | _node, max_size=6)
# Bodies shaped like the families' requests, with any field free to be junk of the wrong type.
_bodies = st.fixed_dictionaries(
    {},
    optional={"messages": _messages | _node, "contents": _messages | _text | _node,
              "input": _text | st.lists(_item, max_size=6), "tools": st.lists(_tool, max_size=3) | _node,
              "system": _text | st.lists(_part, max_size=2) | _node, "systemInstruction": _message | _text,
              "instructions": _text, "prompt": _text | _node, "raw": st.booleans(),
              "context": st.lists(st.integers(0, 9), max_size=5) | _node, "message": _text, "chat_history": _messages,
              "preamble": _text, "suffix": _text, "model": _names, "previous_response_id": _text,
              "tool_results": st.lists(st.fixed_dictionaries({"call": _call, "outputs": _node}), max_size=2),
              "documents": st.lists(_text | _node, max_size=2)},
)  # fmt: skip
_models = st.sampled_from(
    [None, "gpt-4o", "gpt-3.5-turbo", "claude-sonnet-4-6", "llama3.2", "qwen3:8b", "gemini-2.5-flash"]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(api=st.sampled_from(sorted(APIS)), req=_bodies, model=_models)
# A block whose type is a list (found by this property; it used to raise)
@example(api="anthropic.messages", req={"messages": [], "system": [{"role": [], "type": []}]}, model=None)
def test_anatomy_parts_never_exceed_the_counted_input(api: str, req: dict[str, Any], model: str | None) -> None:
    raw = body(req)
    counted = count_request(api, raw, model)
    a = anatomy(api, raw, model)
    assert (counted is None) == (a is None)
    if counted is None or a is None:
        return
    assert all(getattr(a, p) >= 0 for p in PARTS)
    assert parts_sum(a) <= counted.tokens == a.input_tokens
    assert sum(a.tool_result_tokens_by_name.values()) <= a.tool_results
    assert set(a.tool_definition_tokens_by_name) <= set(a.tools_offered)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(api=st.sampled_from([*sorted(APIS), "unknown"]), value=_json, model=_models)
def test_counting_never_raises_on_arbitrary_json(api: str, value: Any, model: str | None) -> None:
    raw = json.dumps(value).encode()
    counted = count_request(api, raw, model)
    assert counted is None or counted.tokens >= 0
    anatomy(api, raw, model)


@settings(max_examples=100, deadline=None)
@given(api=st.sampled_from(sorted(APIS)), raw=st.binary(max_size=200))
def test_counting_never_raises_on_arbitrary_bytes(api: str, raw: bytes) -> None:
    count_request(api, raw, "gpt-4o")
    anatomy(api, raw, None)


def test_cohere_v1_completions_and_ollama_generate() -> None:
    v1 = {
        "model": "command-r",
        "preamble": "Be brief.",
        "chat_history": [
            {"role": "USER", "message": "Weather?"},
            {
                "role": "CHATBOT",
                "message": "",
                "tool_calls": [{"name": "lookup_weather", "parameters": {"city": "Paris"}}],
            },
        ],
        "message": "And tomorrow?",
        "tool_results": [
            {"call": {"name": "lookup_weather", "parameters": {"city": "Paris"}}, "outputs": [{"sky": "sun"}]}
        ],
    }
    a = anatomy("cohere.chat.v1", body(v1), None)
    assert a is not None and not a.exact and a.tools_called == ("lookup_weather",)
    result = n("lookup_weather") + n(compact({"city": "Paris"})) + n(compact([{"sky": "sun"}]))
    assert a.tool_results == result and a.tool_result_tokens_by_name == {"lookup_weather": result}
    assert a.system == 3 + n("Be brief.") and a.latest_input == 3 + n("And tomorrow?")
    assert a.input_tokens == parts_sum(a) + 3

    completions = anatomy(
        "openai.completions", body({"model": "gpt-3.5-turbo-instruct", "prompt": ["a b", [1, 2]]}), None
    )
    assert completions is not None and completions.latest_input == completions.input_tokens == 2 + 2

    generate = {"model": "gpt-oss:20b", "prompt": "Go on.", "system": "Be brief.", "context": [1, 2, 3]}
    g = anatomy("ollama.generate", body(generate), None)
    assert g is not None and g.history == 3 and g.system == 3 + n("system") + n("Be brief.")
    assert g.input_tokens == 3 + (3 + n("system") + n("Be brief.")) + (3 + n("user") + n("Go on.")) + 3
