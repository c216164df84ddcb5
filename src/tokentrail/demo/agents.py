"""The demo's agents: a planner, a researcher whose tool calls the LLM itself, a judge and a writer."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai

import tokentrail
from tokentrail.demo import helper

SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the notes for a topic.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


@tokentrail.agent("planner")
def plan(client: openai.OpenAI, task: str) -> list[str]:
    """One call, retried once after an injected 429 (both attempts are recorded)."""
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Split the task into steps."}, {"role": "user", "content": task}],
        extra_headers={"X-Sim-Fault": "429*1"},
    )
    words = (reply.choices[0].message.content or "").split()
    return [" ".join(words[i : i + 3]) for i in range(0, min(len(words), 9), 3)] or [task]


@tokentrail.tool("search")
def search(client: openai.OpenAI, query: str) -> str:
    """A tool that itself calls the LLM (to summarise) and the embeddings endpoint (to index)."""
    summary = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Summarise what is known about {query}."}]
    )
    client.embeddings.create(model="text-embedding-3-small", input=[query, summary.choices[0].message.content or ""])
    return summary.choices[0].message.content or ""


@tokentrail.agent("researcher")
def research(client: openai.OpenAI, steps: list[str]) -> str:
    """A tool loop: the model asks for the search tool, the tool runs, the model answers."""
    messages: list[Any] = [{"role": "user", "content": f"Use the search tool to lookup: {steps[0]}"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[SEARCH_TOOL])
    message = first.choices[0].message
    if message.tool_calls:
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            query = json.loads(call.function.arguments or "{}").get("query", steps[0])
            messages.append({"role": "tool", "tool_call_id": call.id, "content": search(client, query)})
    final = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[SEARCH_TOOL])
    return final.choices[0].message.content or ""


@tokentrail.agent("researcher")
async def fan_out(aclient: openai.AsyncOpenAI, topics: list[str]) -> list[str]:
    """Concurrent asyncio calls: each task inherits the researcher scope."""

    async def one(topic: str) -> str:
        async with tokentrail.step(f"angle:{topic}"):
            reply = await aclient.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"One angle on {topic}."}]
            )
            return reply.choices[0].message.content or ""

    return list(await asyncio.gather(*(one(t) for t in topics)))


@tokentrail.agent("judge")
def judge(client: openai.OpenAI, candidates: list[str]) -> list[str]:
    """Scores candidates in a thread pool: worker threads keep the judge scope."""

    def score(candidate: str) -> str:
        reply = client.chat.completions.create(
            model="o3-mini",
            reasoning_effort="low",
            messages=[{"role": "user", "content": f"Score 1-10: {candidate[:200]}"}],
        )
        return reply.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(score, candidates))


@tokentrail.agent("writer")
def write(client: openai.OpenAI, base_url: str, notes: str) -> str:
    """A streamed answer (usage requested in the stream) and a hidden library call."""
    label = helper.classify(base_url, notes)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": f"Write the final answer about {label}: {notes[:300]}"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
