"""Output counted from the text seen on the wire, for Anthropic, Gemini and Ollama, with real SDKs.

When a response carries no output count (``X-Sim-Fault: nousage``, or a stream cut before its usage),
the pipeline counts the generated text the wire parser hands it (`ParsedCall.output_text`). The
simulator counts output by a stated rule (`tokentrail.sim`): the text, a tool call's name plus its
compact JSON arguments, and visible thinking (Anthropic, Ollama); Gemini's thoughts are hidden and
apart. Where tokentrail's tokenizer is the simulator's (o200k_base for Claude, Gemini and gpt-oss)
the counted output must equal what the simulator served. With thinking, the thinking and the answer
are counted as one text: a sentence end before a capital merges (".The" is one o200k token), so the
count may be one token under, never over. A cut stream's text is a floor, flagged ``count_floor``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tokentrail.enrich import tokenizers
from tokentrail.sim import FAULT_HEADER, ServedCall, Simulator
from tokentrail.wire import anthropic_messages, gemini, ollama as ollama_wire

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")
ollama = pytest.importorskip("ollama")
genai = pytest.importorskip("google.genai")
import httpx  # noqa: E402
from google.genai import types  # noqa: E402

NOUSAGE = {FAULT_HEADER: "nousage"}
CLAUDE = "claude-sonnet-4-6"
FLASH = "gemini-2.5-flash"
O200K = tokenizers.for_model("gpt-4o")


def o200k(text: str) -> int:
    return O200K.count(text)


def only_call(db: Path) -> dict[str, Any]:
    [call] = recorded(db)
    return call


def check_exact(call: dict[str, Any], served: ServedCall, source: str = "estimated", *, whole: bool = True) -> None:
    """No usage reached the client; the output counted from the text is the simulator's, as is the input.
    ``whole``: the parser knows the answer was whole, so the count is no floor."""
    assert not served.usage_sent and served.output_tokens
    assert (call["output_tokens"], call["output_source"], call["tokenizer"]) == (
        served.output_tokens, source, "o200k_base"
    )  # fmt: skip
    assert call["input_source"] == source and call["input_tokens"] == served.input_tokens
    assert ("count_floor" not in call["flags"]) is whole


def check_floor(call: dict[str, Any], seen: str, served: ServedCall, source: str = "estimated") -> None:
    """A cut stream: the output is the count of exactly the text that arrived, a floor, so flagged."""
    assert seen and served.fault is not None and "cut" in served.fault
    assert (call["output_tokens"], call["output_source"], call["tokenizer"]) == (o200k(seen), source, "o200k_base")
    assert 0 < call["output_tokens"] < served.output_tokens  # type: ignore[operator]
    assert {"count_floor", "stream_incomplete"} <= set(call["flags"])


# --- Anthropic ---------------------------------------------------------------------------------------------

WEATHER_TOOL: Any = [
    {
        "name": "lookup_weather",
        "description": "Weather by city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    }
]


@pytest.fixture
def claude(sim: Simulator) -> Iterator[Any]:
    with anthropic.Anthropic(base_url=sim.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def _claude(
    client: Any, prompt: str, *, stream: bool, headers: dict[str, str] = NOUSAGE, read: bool = True, **kw: Any
) -> Any:
    messages = [{"role": "user", "content": prompt}]
    reply = client.messages.create(
        model=CLAUDE, max_tokens=300, messages=messages, stream=stream, extra_headers=headers, **kw
    )
    return list(reply) if stream and read else reply


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_anthropic_text_without_usage_is_counted_exactly(db: Path, claude: Any, sim: Simulator, stream: bool) -> None:
    _claude(claude, f"output families: anthropic text {stream}", stream=stream)
    check_exact(only_call(db), sim.served[-1])


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_anthropic_tool_use_counts_name_and_json_input(db: Path, claude: Any, sim: Simulator, stream: bool) -> None:
    reply = _claude(claude, f"output families: please lookup the weather {stream}", stream=stream, tools=WEATHER_TOOL)
    if not stream:
        assert [b.type for b in reply.content] == ["tool_use"]
    check_exact(only_call(db), sim.served[-1])


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_anthropic_thinking_is_counted_with_the_answer(db: Path, claude: Any, sim: Simulator, stream: bool) -> None:
    thinking = {"type": "enabled", "budget_tokens": 40}
    for i in range(4):
        _claude(claude, f"output families: think {i} {stream}", stream=stream, thinking=thinking)
        call, served = recorded(db)[-1], sim.served[-1]
        assert served.reasoning_tokens and call["output_source"] == "estimated" and call["tokenizer"] == "o200k_base"
        # One text: the thinking's last "." may merge with the answer's first word (one token less).
        assert served.output_tokens - 1 <= call["output_tokens"] <= served.output_tokens  # type: ignore[operator]


@pytest.mark.parametrize("fault", ["nousage,cut:5", "nousage,cut:7"])
def test_anthropic_cut_stream_counts_the_text_seen_as_a_floor(
    db: Path, claude: Any, sim: Simulator, fault: str
) -> None:
    seen = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        headers = {FAULT_HEADER: fault}
        for event in _claude(claude, "output families: anthropic, cut me", stream=True, headers=headers, read=False):
            if event.type == "content_block_delta":
                seen.append(event.delta.text)
    call = only_call(db)
    check_floor(call, "".join(seen), sim.served[-1])
    assert call["input_source"] == "estimated" and call["input_tokens"] == sim.served[-1].input_tokens


def test_anthropic_cut_stream_with_usage_keeps_the_partial_count(db: Path, claude: Any, sim: Simulator) -> None:
    # message_start reported output_tokens 1: a reported floor is kept, never replaced by a count.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        _claude(claude, "output families: anthropic, cut with usage", stream=True, headers={FAULT_HEADER: "cut:8"})
    call = only_call(db)
    assert (call["output_tokens"], call["output_source"]) == (1, "partial") and call["tokenizer"] is None


# --- Gemini ------------------------------------------------------------------------------------------------


def _gemini(sim: Simulator, headers: dict[str, str] = NOUSAGE) -> Any:
    return genai.Client(
        api_key="test-key", http_options=types.HttpOptions(base_url=sim.url, api_version="v1beta", headers=headers)
    )


GEMINI_TOOLS = types.GenerateContentConfig(
    tools=[
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(
                    name="lookup_weather",
                    description="Weather by city.",
                    parameters={"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},  # type: ignore[arg-type]
                )
            ]
        )
    ]
)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("tools", [False, True], ids=["text", "function_call"])
def test_gemini_without_usage_is_counted_exactly(db: Path, sim: Simulator, stream: bool, tools: bool) -> None:
    prompt = f"output families: gemini {'please lookup the weather' if tools else 'hello'} {stream}"
    config = GEMINI_TOOLS if tools else None
    with _gemini(sim) as client:
        if stream:
            chunks = list(client.models.generate_content_stream(model=FLASH, contents=prompt, config=config))
            assert (len(chunks) > 1 or tools) and all(c.usage_metadata is None for c in chunks)
        else:
            reply = client.models.generate_content(model=FLASH, contents=prompt, config=config)
            assert bool(reply.function_calls) is tools
    # A stream that ended cleanly after its finish chunk is whole, usage or not: its count is exact.
    check_exact(only_call(db), sim.served[-1], whole=True)


def test_gemini_cut_stream_counts_the_text_seen_as_a_floor(db: Path, sim: Simulator) -> None:
    seen = []
    with _gemini(sim, {FAULT_HEADER: "nousage,cut:3"}) as client:
        with pytest.raises(httpx2.TransportError):
            for chunk in client.models.generate_content_stream(model=FLASH, contents="output families: gemini cut"):
                seen.append(chunk.text)
    check_floor(only_call(db), "".join(seen), sim.served[-1])


# --- Ollama ------------------------------------------------------------------------------------------------

OLLAMA_TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup_weather",
            "description": "Weather by city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
        },
    }
]


def _ollama_text(reply: Any) -> str:
    """What the SDK received: thinking, content or response, and tool calls as the simulator counts them."""
    import json

    parts = reply if isinstance(reply, list) else [reply]
    out = []
    for part in parts:
        source = part.message if hasattr(part, "message") and part.message is not None else part
        out.append(source.thinking or "")
        out.append((source.content if hasattr(part, "message") else part.response) or "")
        for tool_call in getattr(source, "tool_calls", None) or ():
            out.append(tool_call.function.name + json.dumps(dict(tool_call.function.arguments), separators=(",", ":")))
    return "".join(out)


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("endpoint", ["chat", "chat_tools", "generate"])
def test_ollama_without_usage_is_counted_exactly_with_the_same_tokenizer(
    db: Path, sim: Simulator, stream: bool, endpoint: str
) -> None:
    # gpt-oss is counted with o200k_base, its own vocabulary and the simulator's: equal, and "counted".
    model = "gpt-oss:20b"
    prompt = f"output families: ollama {endpoint} {stream} please lookup the weather"
    with ollama.Client(host=sim.url, headers=NOUSAGE) as client:
        if endpoint == "generate":
            reply = client.generate(model=model, prompt=prompt, stream=stream)
        else:
            tools = OLLAMA_TOOLS if endpoint == "chat_tools" else None
            reply = client.chat(model=model, messages=[{"role": "user", "content": prompt}], tools=tools, stream=stream)
        if stream:
            reply = list(reply)
    if endpoint == "chat_tools":
        assert "lookup_weather" in _ollama_text(reply)
    call = only_call(db)
    served = sim.served[-1]
    assert (call["output_tokens"], call["output_source"], call["tokenizer"]) == (served.output_tokens, "counted", "o200k_base")
    assert not served.usage_sent and "count_floor" not in call["flags"]


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_ollama_llama_is_counted_with_its_own_tokenizer(db: Path, sim: Simulator, stream: bool) -> None:
    # The simulator counts every model with o200k_base; tokentrail counts Llama 3 with Llama 3's own
    # vocabulary: the record is the Llama 3 count of exactly the text the SDK received.
    model = "llama3.2"
    llama = tokenizers.for_model(model)
    with ollama.Client(host=sim.url, headers=NOUSAGE) as client:
        messages = [{"role": "user", "content": f"output families: llama {stream}"}]
        reply = client.chat(model=model, messages=messages, stream=stream)
        text = _ollama_text(list(reply) if stream else reply)
    call = only_call(db)
    assert (call["output_tokens"], call["output_source"], call["tokenizer"]) == (llama.count(text), "counted", llama.name)
    assert llama.name == "llama3" or call["output_source"] == "estimated"


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
def test_ollama_thinking_is_counted_with_the_answer(db: Path, sim: Simulator, stream: bool) -> None:
    with ollama.Client(host=sim.url, headers=NOUSAGE) as client:
        for i in range(4):
            messages = [{"role": "user", "content": f"output families: ollama think {i} {stream}"}]
            reply = client.chat(model="gpt-oss:20b", messages=messages, think=True, stream=stream)
            text = _ollama_text(list(reply) if stream else reply)
            call, served = recorded(db)[-1], sim.served[-1]
            assert served.reasoning_tokens and call["output_tokens"] == o200k(text)
            assert served.output_tokens - 1 <= call["output_tokens"] <= served.output_tokens  # type: ignore[operator]


@pytest.mark.parametrize("fault", ["cut:2", "nousage,cut:4"])
def test_ollama_cut_stream_counts_the_text_seen_as_a_floor(db: Path, sim: Simulator, fault: str) -> None:
    # Ollama's counts come only on the final line: a cut stream has none even without "nousage".
    seen = []
    with ollama.Client(host=sim.url, headers={FAULT_HEADER: fault}) as client:
        with pytest.raises(httpx.TransportError):
            messages = [{"role": "user", "content": f"output families: ollama cut {fault}"}]
            for chunk in client.chat(model="gpt-oss:20b", messages=messages, stream=True):
                seen.append(chunk.message.content)
    check_floor(only_call(db), "".join(seen), sim.served[-1], source="counted")


# --- the parsers keep nothing to decode when the output was reported ----------------------------------------


def test_no_output_text_when_the_output_is_reported() -> None:
    body = b'{"id":"m","model":"claude","content":[{"type":"text","text":"Hi."}],"usage":{"input_tokens":3,"output_tokens":2}}'
    assert anthropic_messages.MESSAGES.parse(body).output_text is None
    assert anthropic_messages.MESSAGES.parse(body.replace(b',"usage":{"input_tokens":3,"output_tokens":2}', b"")).output_text() == "Hi."  # type: ignore[misc]
    body = b'{"candidates":[{"content":{"parts":[{"text":"Hi."}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}'
    assert gemini.GENERATE.parse(body).output_text is None
    body = b'{"model":"m","message":{"role":"assistant","content":"Hi."},"done":true,"eval_count":2,"prompt_eval_count":3}'
    assert ollama_wire.CHAT.parse(body).output_text is None
