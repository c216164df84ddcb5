"""Seed scenario 2: memory-agent trials in parallel processes, each with hidden library calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai

import tokentrail


class TinyMemory:
    """Stands for a memory library (mem0-like): embeds on write and on read, behind the agent's back."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.Client(base_url=base_url, headers={"authorization": "Bearer sk"}, timeout=30)

    def add(self, text: str) -> None:
        self._http.post("/embeddings", json={"model": "text-embedding-3-small", "input": [text]})

    def search(self, query: str) -> None:
        self._http.post("/embeddings", json={"model": "text-embedding-3-small", "input": query})

    def close(self) -> None:
        self._http.close()


def trial(base_url: str, seed: int, log_dir: str) -> dict[str, Any]:
    """One trial: an agent that remembers, recalls and answers; writes its log with an llm_usage block."""
    memory = TinyMemory(base_url)
    with openai.OpenAI(base_url=base_url, api_key="sk") as client, tokentrail.run(f"trial-{seed}", seed=seed) as run:
        with tokentrail.agent("memory-agent"):
            for turn in range(3):
                memory.add(f"fact {seed}-{turn}")
                memory.search(f"question {seed}-{turn}")
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"Answer {seed}-{turn}"}]
                )
        summary = run.summary()
    memory.close()
    llm_usage = {
        "total_calls": summary["total_calls"],
        "prompt_tokens": summary["input_tokens"],
        "completion_tokens": summary["output_tokens"],
        "reasoning_tokens": summary["reasoning_tokens"],
        "total_tokens": summary["total_tokens"],
        "calls_by_model": summary["calls_by_model"],
    }
    log = {"seed": seed, "result": "done", "llm_usage": llm_usage}
    Path(log_dir, f"trial-{seed}.json").write_text(json.dumps(log))
    return log
