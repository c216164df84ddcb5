"""LangChain and LangGraph against the simulator: graphs, nodes and tools name the records, never add any."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_openai")
langgraph_graph = pytest.importorskip("langgraph.graph")

from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402

import tokentrail  # noqa: E402
from tests.integrations.conftest import names  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

Attempts = Callable[[], tuple[int, list[dict[str, Any]]]]
QUESTION = "Please lookup the weather in Paris."


def build_graph(sim: Simulator) -> Any:
    """A ReAct graph by hand: node ``agent`` calls the model with a tool; node ``tools`` runs it."""
    url = sim.url + "/v1"

    @tool
    def lookup(city: str) -> str:
        """Look up the weather of a city."""
        # A tool that calls a model itself: its call belongs to the tool.
        with openai.OpenAI(base_url=url, api_key="sk-test") as client:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"Weather in {city}?"}]
            )
        return reply.choices[0].message.content or ""

    model = ChatOpenAI(model="gpt-4o-mini", base_url=url, api_key="sk-test").bind_tools([lookup])

    def agent(state: langgraph_graph.MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def aagent(state: langgraph_graph.MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = langgraph_graph.StateGraph(langgraph_graph.MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(langgraph_graph.START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(name="weather")


EXPECTED = [("weather", "agent", None), ("weather", "tools", "lookup"), ("weather", "agent", None)]


def test_graph_invoke_names_agent_node_and_tool(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    assert "langchain" in adapters
    graph = build_graph(sim)
    with tokentrail.run("trial") as run:
        out = graph.invoke({"messages": [("user", QUESTION)]})
    assert out["messages"][-1].content
    served, records = attempts()
    assert served == len(records) == 3  # one record per attempt, none added by the adapter
    assert names(records) == EXPECTED
    assert [r["scope_path"] for r in records] == [
        "trial/weather/agent", "trial/weather/tools/lookup", "trial/weather/agent",
    ]  # fmt: skip
    assert run.usage.calls == 3
    assert tokentrail.current_scope().name != "weather"  # nothing left current after the graph


def test_graph_ainvoke_names_agent_node_and_tool(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    graph = build_graph(sim)

    async def main() -> tuple[Any, str]:
        async with tokentrail.run("trial"):
            await graph.ainvoke({"messages": [("user", QUESTION)]})
            # The caller's context is the run's again: the graph's end ran in a task of its own.
            after = tokentrail.current_scope().name
        return after, tokentrail.current_scope().name

    after, outside = asyncio.run(main())
    assert after == "trial" and outside == "default"
    served, records = attempts()
    assert served == len(records) == 3
    assert names(records) == EXPECTED


def test_raw_http_after_ainvoke_is_not_attributed_to_the_graph(
    adapters: list[str], attempts: Attempts, sim: Simulator
) -> None:
    graph = build_graph(sim)

    async def main() -> None:
        async with tokentrail.run("trial"), openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="sk-test") as c:
            await graph.ainvoke({"messages": [("user", QUESTION)]})
            await c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])

    asyncio.run(main())
    served, records = attempts()
    assert served == len(records) == 4
    assert names(records)[-1] == (None, None, None) and records[-1]["scope_path"] == "trial"


def test_named_chain_is_a_step_and_a_direct_tool_call_a_tool(
    adapters: list[str], attempts: Attempts, sim: Simulator
) -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=sim.url + "/v1", api_key="sk-test")
    chain = (ChatPromptTemplate.from_messages([("user", "Summarise {topic}.")]) | llm).with_config(run_name="summarise")
    unnamed = ChatPromptTemplate.from_messages([("user", "Name {topic}.")]) | llm
    with tokentrail.run("trial"), tokentrail.agent("writer"):
        chain.invoke({"topic": "rivers"})
        unnamed.invoke({"topic": "lakes"})
        asyncio.run(chain.ainvoke({"topic": "seas"}))
    served, records = attempts()
    assert served == len(records) == 3
    assert names(records) == [("writer", "summarise", None), ("writer", None, None), ("writer", "summarise", None)]


def test_streaming_graph(adapters: list[str], attempts: Attempts, sim: Simulator) -> None:
    graph = build_graph(sim)

    async def main() -> int:
        chunks = 0
        async for _ in graph.astream({"messages": [("user", QUESTION)]}, stream_mode="messages"):
            chunks += 1
        return chunks

    with tokentrail.run("trial"):
        assert asyncio.run(main()) > 0
        for _ in graph.stream({"messages": [("user", QUESTION)]}):
            pass
    served, records = attempts()
    assert served == len(records) == 6
    assert names(records) == EXPECTED * 2


def test_uninstalled_adapter_adds_no_names(db: Any, attempts: Attempts, sim: Simulator) -> None:
    from tokentrail import integrations

    integrations.install()
    integrations.uninstall()
    graph = build_graph(sim)
    graph.invoke({"messages": [("user", QUESTION)]})
    served, records = attempts()
    assert served == len(records) == 3
    assert names(records) == [(None, None, None)] * 3


def test_scopes_the_program_opens_inside_a_node_are_kept(
    adapters: list[str], attempts: Attempts, sim: Simulator
) -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", base_url=sim.url + "/v1", api_key="sk-test")

    def write(state: langgraph_graph.MessagesState) -> dict[str, Any]:
        with tokentrail.tool("draft"):
            reply = llm.invoke(state["messages"])
        with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test") as client:  # no LangChain run at all
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
        return {"messages": [reply]}

    graph = langgraph_graph.StateGraph(langgraph_graph.MessagesState)
    graph.add_node("write", write)
    graph.add_edge(langgraph_graph.START, "write")
    graph.compile(name="writer").invoke({"messages": [("user", "Write a haiku.")]})
    served, records = attempts()
    assert served == len(records) == 2
    assert names(records) == [("writer", "write", "draft"), ("writer", "write", None)]
