"""`tokentrail report --by callsite` / `--by callmodule` on a ledger of hidden calls: the spend groups
under the library code that made each call (instructor's retry loop, mem0's llm and embedder), which is
what a user reads to find where their tokens went."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

instructor = pytest.importorskip("instructor")
mem0 = pytest.importorskip("mem0")
openai = pytest.importorskip("openai")

from pydantic import BaseModel  # noqa: E402

import tokentrail  # noqa: E402
from tests.hidden.conftest import records_match, served_since  # noqa: E402
from tests.hidden.test_instructor import PROMPT, make_plan_model  # noqa: E402
from tests.hidden.test_mem0 import mem0_config  # noqa: E402
from tokentrail.sim import Simulator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def report(db: Path, by: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "tokentrail", "report", "--db", str(db), "--by", by, "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_report_groups_hidden_calls_by_library(db: Path, sim: Simulator, tmp_path: Path) -> None:
    start = len(sim.served)
    with tokentrail.run("hidden"):
        with tokentrail.agent("extractor"), openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-test") as raw:
            plan: BaseModel = instructor.from_openai(raw).chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": PROMPT}],
                response_model=make_plan_model([]),
                max_retries=2,
            )
        with tokentrail.agent("memory"):
            memory = mem0.Memory.from_config(mem0_config(sim, tmp_path))
            try:
                memory.add("I love hiking in the Alps.", user_id="carol")
                memory.search("I love hiking in the Alps.", filters={"user_id": "carol"})
            finally:
                memory.vector_store.client.close()
    assert plan is not None
    served = served_since(sim, start)
    calls = records_match(db, served)  # flushed: the subprocess reads a complete ledger

    by_module = report(db, "callmodule")
    rows = {row["callmodule"]: row for row in by_module["rows"]}
    expected_modules: dict[str, int] = {}
    for call in calls:
        expected_modules[call["call_module"]] = expected_modules.get(call["call_module"], 0) + 1
    assert {module: row["calls"] for module, row in rows.items()} == expected_modules
    assert all(module.startswith(("instructor.", "mem0.")) for module in rows), sorted(rows)
    assert rows["mem0.llms.openai"]["calls"] == 1 and rows["mem0.embeddings.openai"]["calls"] == 2
    [instructor_module] = [m for m in rows if m.startswith("instructor.")]
    assert rows[instructor_module]["calls"] == sum(1 for c in calls if c["call_module"].startswith("instructor.")) >= 2
    for module, row in rows.items():
        mine = [c for c in calls if c["call_module"] == module]
        assert row["input_tokens"] == sum(c["input_tokens"] for c in mine)
        assert row["output_tokens"] == sum(c["output_tokens"] for c in mine)
    assert by_module["total"]["calls"] == len(served)
    assert by_module["total"]["input_tokens"] == sum(s.input_tokens or 0 for s in served)

    by_site = report(db, "callsite")
    sites = {row["callsite"]: row["calls"] for row in by_site["rows"]}
    assert sites["mem0.llms.openai.OpenAILLM.generate_response"] == 1
    assert sites["mem0.embeddings.openai.OpenAIEmbedding.embed"] == 2
    in_instructor = sum(n for site, n in sites.items() if site.startswith(instructor_module + "."))
    assert in_instructor == rows[instructor_module]["calls"]
    assert set(sites) == {c["call_function"] for c in calls}
    assert by_site["total"] == by_module["total"]
