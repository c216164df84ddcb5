"""instrument(anatomy=True): every recorded call carries where its prompt's tokens went."""

from __future__ import annotations

from pathlib import Path

import openai

import tokentrail
from tests.conftest import recorded
from tokentrail.sim import Simulator

TOOL = {
    "type": "function",
    "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
}


def test_anatomy_of_a_tool_loop(tmp_path: Path, sim: Simulator) -> None:
    db = tmp_path / "anatomy.db"
    messages = [
        {"role": "system", "content": "You are a careful researcher."},
        {"role": "user", "content": "Earlier question about lakes."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q": "lakes"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Lake Baikal is the deepest lake in the world."},
        {"role": "user", "content": "Now tell me about rivers."},
    ]  # fmt: skip
    with tokentrail.instrument(db, anatomy=True), openai.OpenAI(base_url=sim.url + "/v1", api_key="sk") as client:
        with tokentrail.run("anatomy"):
            client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[TOOL])  # type: ignore[arg-type]
        [call] = recorded(db, run="anatomy")
    anatomy = call["anatomy"]
    assert anatomy["tools_offered"] == ["search"] and anatomy["tools_called"] == ["search"]
    for part in ("tool_definitions", "tool_results", "system", "history", "latest_input"):
        assert anatomy[part] > 0, part
    parts = sum(anatomy[p] for p in ("tool_definitions", "tool_results", "system", "history", "latest_input"))
    assert parts <= call["input_tokens"] == sim.served[-1].input_tokens


def test_anatomy_is_off_by_default(db: Path, sim: Simulator) -> None:
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk") as client, tokentrail.run("plain"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    [call] = recorded(db, run="plain")
    assert call["anatomy"] is None
