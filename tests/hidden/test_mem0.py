"""mem0: a memory layer that calls the LLM and the embeddings endpoint itself. Nothing downloaded: both
its llm and its embedder are `openai` pointed at the simulator, its vectors live in qdrant's on-disk
local mode and its history in tmp_path (conftest sets MEM0_TELEMETRY=False, MEM0_DIR, HF_HUB_OFFLINE=1,
LITELLM_LOCAL_MODEL_COST_MAP=True before mem0 is imported). Every hidden call is one record with the
tokens served, attributed to the user's scope and to the mem0 module that made it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

assert os.environ["MEM0_TELEMETRY"] == "False" and os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
mem0 = pytest.importorskip("mem0")
pytest.importorskip("qdrant_client")

import tokentrail  # noqa: E402
from tests.hidden.conftest import records_match, served_since  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

# mem0 sends `dimensions` when embedding_dims is set, and the simulator honours it (8 when not asked):
# 16 here, so a vector of the wrong size would be refused by the qdrant collection.
DIMS = 16
CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"


def mem0_config(sim: Simulator, tmp_path: Path) -> dict[str, Any]:
    base = {"api_key": "sk-test", "openai_base_url": sim.url + "/v1"}
    return {
        "llm": {"provider": "openai", "config": {"model": CHAT_MODEL, **base}},
        "embedder": {"provider": "openai", "config": {"model": EMBED_MODEL, "embedding_dims": DIMS, **base}},
        "vector_store": {
            "provider": "qdrant",
            "config": {
                "collection_name": "hidden",
                "path": str(tmp_path / "qdrant"),
                "on_disk": True,
                "embedding_model_dims": DIMS,
            },
        },
        "history_db_path": str(tmp_path / "history.db"),
    }


@pytest.fixture
def memory(sim: Simulator, tmp_path: Path) -> Iterator[Any]:
    m = mem0.Memory.from_config(mem0_config(sim, tmp_path))
    try:
        yield m
    finally:
        m.vector_store.client.close()  # qdrant's local mode holds a lock file on the folder


def assert_named_mem0(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        assert call["call_module"].startswith("mem0."), call["call_site"]
        assert call["call_site"].startswith("mem0/"), call["call_site"]
        expected = {"openai.chat": "mem0.llms.openai", "openai.embeddings": "mem0.embeddings.openai"}[call["api"]]
        assert call["call_module"] == expected, call["call_site"]


def test_from_config_makes_no_call(db: Path, sim: Simulator, tmp_path: Path) -> None:
    start = len(sim.served)
    m = mem0.Memory.from_config(mem0_config(sim, tmp_path))
    m.vector_store.client.close()
    assert served_since(sim, start) == [] and records_match(db, []) == []


def test_add_one_chat_and_embeddings(db: Path, sim: Simulator, memory: Any) -> None:
    start = len(sim.served)
    with tokentrail.run("memory-run") as run, tokentrail.agent("memory") as agent:
        # infer=True: mem0 embeds the message to find related memories, then asks the LLM for facts.
        memory.add("I love hiking in the Alps and my dog is called Rex.", user_id="alice")
        # infer=False: one embedding per non-system message, stored as they are.
        stored = memory.add(
            [
                {"role": "system", "content": "You remember things."},
                {"role": "user", "content": "I live in Geneva."},
                {"role": "assistant", "content": "Noted: you live in Geneva."},
            ],
            user_id="alice",
            infer=False,
        )
    served = served_since(sim, start)
    calls = records_match(db, served)
    # The simulator's reply is prose, not mem0's JSON of facts, so the first add extracts nothing and
    # embeds no fact: 1 embedding + 1 chat, then 2 embeddings.
    assert [c["api"] for c in calls] == ["openai.embeddings", "openai.chat", "openai.embeddings", "openai.embeddings"]
    assert [c["model"] for c in calls] == [EMBED_MODEL, CHAT_MODEL, EMBED_MODEL, EMBED_MODEL]
    assert len(stored["results"]) == 2
    assert all(c["status"] == "ok" and c["attempt"] == 1 and c["usage_source"] == "reported" for c in calls)
    assert all(c["output_tokens"] == 0 for c in calls if c["api"] == "openai.embeddings")
    assert {(c["run"], c["agent"], c["scope_path"]) for c in calls} == {("memory-run", "memory", "memory-run/memory")}
    assert_named_mem0(calls)
    assert calls[1]["call_function"] == "mem0.llms.openai.OpenAILLM.generate_response"
    assert {c["call_function"] for c in calls if c["api"] == "openai.embeddings"} == {
        "mem0.embeddings.openai.OpenAIEmbedding.embed"
    }
    assert agent.usage.calls == run.usage.calls == 4
    assert run.usage.input_tokens == sum(s.input_tokens or 0 for s in served)
    assert run.usage.output_tokens == sum(c["output_tokens"] for c in calls)


def test_search_embeds_the_query(db: Path, sim: Simulator, memory: Any) -> None:
    memory.add([{"role": "user", "content": "I live in Geneva."}], user_id="bob", infer=False)
    collection = memory.vector_store.client.get_collection("hidden")
    assert collection.config.params.vectors.size == DIMS
    start = len(sim.served)
    with tokentrail.run("recall"), tokentrail.agent("memory"):
        # The simulator's vectors are hash-made, not semantic: the stored text itself is the query that
        # must come back first (cosine 1).
        found = memory.search("I live in Geneva.", filters={"user_id": "bob"})
    served = served_since(sim, start)
    all_calls = records_match(db, sim.served[start - 1 :])  # the add's embedding, then the search's
    [call] = all_calls[1:]
    assert [m["memory"] for m in found["results"]] == ["I live in Geneva."]
    assert found["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(served) == 1
    assert (call["api"], call["model"], call["scope_path"]) == ("openai.embeddings", EMBED_MODEL, "recall/memory")
    assert call["input_tokens"] == served[0].input_tokens and call["output_tokens"] == 0
    assert_named_mem0(all_calls)
