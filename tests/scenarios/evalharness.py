"""Seed scenario 1: an evaluation harness. Each role lives in its own function (its own call site)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai

import tokentrail


@tokentrail.agent("student")
async def student(client: openai.AsyncOpenAI, question: str) -> str:
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": question}])
    return reply.choices[0].message.content or ""


@tokentrail.agent("teacher")
def reward(base_url: str, answer: str) -> float:
    """A reward model called with plain httpx, as a scoring service would be."""
    body: dict[str, Any] = {"model": "o3-mini", "messages": [{"role": "user", "content": f"Reward: {answer}"}]}
    reply = httpx.post(f"{base_url}/chat/completions", json=body, headers={"authorization": "Bearer sk"}, timeout=30)
    return float(len(reply.json()["choices"][0]["message"]["content"]) % 10)


@tokentrail.step("learn")
def learn(client: openai.OpenAI, answers: list[str]) -> None:
    client.responses.create(model="gpt-4o", input="Summarise what to improve: " + " | ".join(answers)[:500])


@tokentrail.agent("judge")
def judge(client: openai.OpenAI, answers: list[str]) -> None:
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Judge: " + answers[0]}], stream=True,
        stream_options={"include_usage": True},
    ).close()  # fmt: skip


def session(base_url: str, questions: list[str]) -> dict[str, Any]:
    with openai.OpenAI(base_url=base_url, api_key="sk") as client, tokentrail.run("eval-session") as run:

        async def students() -> list[str]:
            async with openai.AsyncOpenAI(base_url=base_url, api_key="sk") as aclient:
                return list(await asyncio.gather(*(student(aclient, q) for q in questions)))

        answers = asyncio.run(students())
        for answer in answers:
            reward(base_url, answer)
        learn(client, answers)
        judge(client, answers)
        tokentrail.flush()
        return run.summary()
