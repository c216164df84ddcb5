"""Hidden LLM calls: libraries built on an SDK (instructor, mem0) and a second instrumentation stacked on
the same SDK (OpenTelemetry's openai-v2). These libraries pin jiter and protobuf versions the main test
environment cannot share, so they live in their own venv: ``scripts/test-integrations`` builds
``.venv-integrations`` from ``requirements/integrations.txt`` and runs this directory. Elsewhere every
test here skips (``pytest.importorskip``) for want of its library.

Nothing is downloaded at run time: mem0 talks to the simulator for both its LLM and its embedder, keeps
its vectors in qdrant's on-disk local mode and its history in tmp_path, and sends no telemetry.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import recorded
from tokentrail.sim import ServedCall, Simulator
from tokentrail.sinks.sqlite import connect

# Before any test module imports mem0: it reads these at import time (MEM0_DIR is where it writes its
# config.json, ~/.mem0 otherwise). No hub downloads, no price-map fetches, no telemetry.
_MEM0_DIR = tempfile.mkdtemp(prefix="tokentrail-mem0-")
atexit.register(shutil.rmtree, _MEM0_DIR, ignore_errors=True)
os.environ["MEM0_DIR"] = _MEM0_DIR
os.environ["MEM0_TELEMETRY"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# mem0 sends to OpenRouter whenever this is set, and warns (an error here) when OPENAI_API_BASE is.
for _var in ("OPENROUTER_API_KEY", "OPENAI_API_BASE"):
    os.environ.pop(_var, None)


def served_since(sim: Simulator, start: int) -> list[ServedCall]:
    """What the simulator answered after ``start`` (the session's simulator serves every test)."""
    return sim.served[start:]


def usage_of(served: ServedCall) -> tuple[str, int | None, int | None]:
    """(api, input, output) as a record must show a served call: an error answer has no usage, and an
    embeddings call generates no tokens (0, not unknown)."""
    api = {
        "/v1/chat/completions": "openai.chat",
        "/v1/responses": "openai.responses",
        "/v1/embeddings": "openai.embeddings",
    }
    if served.status != 200:
        return api[served.path], None, None
    output = 0 if served.path == "/v1/embeddings" else served.output_tokens
    return api[served.path], served.input_tokens, output


def records_match(db: Path, served: list[ServedCall]) -> list[dict[str, Any]]:
    """The ledger's records, after checking they are exactly the served calls, one for one, in order."""
    calls = recorded(db)
    # `call_module` is a ledger column that `tokentrail calls` does not print: read it alongside.
    modules = dict(connect(db, readonly=True).execute("SELECT id, call_module FROM calls").fetchall())
    for call in calls:
        call["call_module"] = modules[call["id"]]
    assert len(calls) == len(served), (len(calls), [s.path for s in served])
    assert [(c["api"], c["input_tokens"], c["output_tokens"]) for c in calls] == [usage_of(s) for s in served]
    assert [c["http_status"] for c in calls] == [s.status for s in served]
    assert [c["model"] for c in calls] == [s.model for s in served]
    return calls
