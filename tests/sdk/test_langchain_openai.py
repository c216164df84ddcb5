"""`langchain-openai` (``ChatOpenAI`` over the openai SDK) against the simulator: one record per HTTP
attempt, whatever langchain does around it. It runs in the second CI leg (.venv-openai2) with litellm, and
wherever langchain-openai is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tests.sdk.conftest import shape, tokens, usage
from tests.sim.helpers import Mark
from tokentrail.sim import ServedCall, Simulator

langchain_openai = pytest.importorskip("langchain_openai")
from langchain_core.messages import HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

SDK = "langchain-openai"
API = "openai.chat"


def served(call: ServedCall) -> dict[str, Any]:
    return usage(call.input_tokens, call.output_tokens, cache_read=call.cached_tokens, reasoning=call.reasoning_tokens)


def chat(sim: Simulator, **kwargs: Any) -> Any:
    return langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=sim.url + "/v1", api_key="sk-test", **kwargs)


@pytest.mark.support("OpenAI via langchain-openai", "non-stream")
def test_invoke(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    reply = chat(sim).invoke("sdk: langchain says hello")
    [call] = recorded(db)
    assert len(mark.new) == 1
    assert tokens(call) == served(sim.served[-1])
    assert (call["input_tokens"], call["output_tokens"]) == (
        reply.usage_metadata["input_tokens"],
        reply.usage_metadata["output_tokens"],
    )
    assert shape(call) == (API, "ok", 1, False, "reported")


@pytest.mark.support("OpenAI via langchain-openai", "stream")
def test_stream(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    chunks = list(chat(sim, stream_usage=True).stream("sdk: langchain streams"))
    total = sum(chunks[1:], chunks[0])
    [call] = recorded(db)
    assert len(mark.new) == 1
    assert tokens(call) == served(sim.served[-1])
    assert call["output_tokens"] == total.usage_metadata["output_tokens"]
    assert shape(call) == (API, "ok", 1, True, "reported")


@tool
def lookup_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}."


@pytest.mark.support("OpenAI via langchain-openai", "non-stream", "tool use")
def test_tool_calling_chain(db: Path, sim: Simulator) -> None:
    mark = Mark(sim)
    llm = chat(sim).bind_tools([lookup_weather])
    messages: list[Any] = [HumanMessage("sdk: please lookup the weather in Lima")]
    first = llm.invoke(messages)
    [tool_call] = first.tool_calls
    messages += [first, ToolMessage(lookup_weather.invoke(tool_call["args"]), tool_call_id=tool_call["id"])]
    final = llm.invoke(messages)
    assert final.content and not final.tool_calls

    calls = recorded(db)
    assert len(calls) == len(mark.new) == 2
    assert [tokens(c) for c in calls] == [served(s) for s in mark.new]
    assert [shape(c) for c in calls] == [(API, "ok", 1, False, "reported")] * 2
    assert calls[1]["input_tokens"] > calls[0]["input_tokens"]  # the tool call and its result are input
