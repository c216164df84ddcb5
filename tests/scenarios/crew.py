"""Seed scenario 3: a three-agent crew with tools; every figure must be a real sum of records."""

from __future__ import annotations

import openai

import tokentrail

SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


@tokentrail.tool("search")
def search(client: openai.OpenAI, query: str) -> str:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": query}])
    return reply.choices[0].message.content or ""


@tokentrail.tool("summarise")
def summarise(client: openai.OpenAI, text: str) -> str:
    reply = client.responses.create(model="gpt-4o-mini", input=f"Summarise: {text}")
    return reply.output_text


def crew(base_url: str) -> None:
    with openai.OpenAI(base_url=base_url, api_key="sk") as client, tokentrail.run("crew"):
        with tokentrail.agent("researcher"), tokentrail.step("task:collect"):
            first = client.chat.completions.create(
                model="gpt-4o", tools=[SEARCH], messages=[{"role": "user", "content": "Use the tool to lookup rivers"}]
            )
            for call in first.choices[0].message.tool_calls or []:
                search(client, call.function.arguments)  # type: ignore[union-attr]
            search(client, "lakes")
        with tokentrail.agent("writer"), tokentrail.step("task:draft"):
            summarise(client, "rivers and lakes")
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Draft it."}])
        with tokentrail.agent("reviewer"), tokentrail.step("task:review"):
            client.chat.completions.create(model="o3-mini", messages=[{"role": "user", "content": "Review it."}])
