"""Real SDKs, one file each, against the simulator (or their documented payloads): exactly one record per
HTTP attempt, with the tokens that were served.

Every test says what it shows with ``@pytest.mark.support(provider, *features)`` (features from
`FEATURES`; each module names its SDK's distribution in ``SDK``). With ``TOKENTRAIL_WRITE_SUPPORT=1``
the session merges its passing results, with the ``usage_source`` of the records each test made and the
HTTP library that carried them, into ``docs/support.json``; ``scripts/support_table.py`` renders that
into the README. The two CI legs (openai 3.x and 2.x) each add their own results to the file.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recorded
from tokentrail import capture
from tokentrail.capture import _exchange

FEATURES = ("non-stream", "stream", "cache", "reasoning", "tool use")
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
)
ROOT = Path(__file__).resolve().parents[2]
SUPPORT_JSON = ROOT / "docs" / "support.json"
WRITE_ENV = "TOKENTRAIL_WRITE_SUPPORT"

# Capture for these libraries is being finished in src/tokentrail/capture/: where `instrument()` does not
# hook one yet, the SDK tests hook it themselves (a no-op once `instrument()` does).
EXTRA_CAPTURE = ("aiohttp", "requests", "botocore")

# Warnings that are the SDKs' own, not ours (filterwarnings = error): narrow, and only for tests/sdk.
SDK_WARNINGS = (
    # aiohttp 3.14 deprecates subclassing ClientSession; google-genai's async client does.
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning",
    # pydantic warns that litellm's TypedDicts use ReadOnly (litellm/types/utils.py), on litellm's first calls.
    "ignore:Items? '.*' on TypedDict class '.*' (is|are) using the `ReadOnly` qualifier:UserWarning",
    # litellm's stream handler reads model_fields and model_computed_fields off an instance (pydantic 2.11+).
    "ignore:Accessing the 'model_(computed_)?fields' attribute on the instance is deprecated:DeprecationWarning",
    # litellm's sync calls start event loops for its logging and never close them: the loops and their
    # self-pipes (AF_UNIX socket pairs, family=1) are reported whenever the collector gets to them.
    "ignore:Exception ignored in. <function BaseEventLoop.__del__:pytest.PytestUnraisableExceptionWarning",
    "ignore:Exception ignored in. <socket.socket fd=[0-9]+, family=1,:pytest.PytestUnraisableExceptionWarning",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "support(provider, *features): the test shows this provider/SDK row of the README support table "
        f"working for these features ({', '.join(FEATURES)})",
    )


def _in_sdk(item: pytest.Item) -> bool:
    return Path(str(item.path)).resolve().is_relative_to(Path(__file__).parent)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not _in_sdk(item):
            continue
        for warning in SDK_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(warning))
        for mark in item.iter_markers("support"):
            provider, *features = mark.args
            unknown = set(features) - set(FEATURES)
            if not isinstance(provider, str) or not features or unknown:
                raise pytest.UsageError(f"{item.nodeid}: bad support mark {mark.args!r}; features are {FEATURES}")


def pytest_itemcollected(item: pytest.Item) -> None:
    # Before any -k/-m deselection: a test deselected this time still exists.
    if _in_sdk(item):
        _collected.setdefault(item.nodeid.split("::", 1)[0], set()).add(item.nodeid)


# -- what each test recorded ---------------------------------------------------------------------------

_collected: dict[str, set[str]] = {}
"""Test file → the node ids collected from it this session."""
_observed: dict[str, dict[str, Any]] = {}
"""Node id → what its records were (written at teardown of `db`)."""
_passed: set[str] = set()
_failed: set[str] = set()


@pytest.fixture
def db(db: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shared ledger fixture, plus: aiohttp/requests/botocore hooked, the HTTP library of every
    captured exchange noted, and the records' sources kept for docs/support.json."""
    libraries: list[str] = []
    open_exchange = _exchange.open_exchange

    def noting_open(route: Any, headers: Any, body: Any, library: str, own_frames: int = 0) -> _exchange.Exchange:
        libraries.append(library)
        return open_exchange(route, headers, body, library, own_frames + 1)  # + this frame

    monkeypatch.setattr(_exchange, "open_exchange", noting_open)
    present = [name for name in EXTRA_CAPTURE if importlib.util.find_spec(name) is not None]
    for name in present:
        importlib.import_module(name)  # imported first, so instrument() would hook it right now
    hooked = []
    already = set(capture.install())  # idempotent: what instrument() hooks
    for name in present:
        if name not in already:
            module = importlib.import_module(f"tokentrail.capture.{name}")
            if module.install():
                hooked.append(module)
    try:
        yield db
    finally:
        calls = recorded(db)
        for module in hooked:
            module.uninstall()
        _observed[request.node.nodeid] = {
            "http": sorted(set(libraries)),
            "records": sorted({(c["status"], c["usage_source"], bool(c["stream"])) for c in calls}),
            # The token fields known (not null) in the successful calls: says whether e.g. reasoning was
            # reported apart or only inside the output.
            "known": [f for f in TOKEN_FIELDS if any(c[f] is not None for c in calls if c["status"] == "ok")],
        }


def tokens(call: dict[str, Any]) -> dict[str, Any]:
    """The token fields of a recorded call."""
    return {k: call[k] for k in TOKEN_FIELDS}


def usage(
    input: int | None,
    output: int | None,
    *,
    cache_read: int | None = None,
    cache_write: int | None = None,
    reasoning: int | None = None,
) -> dict[str, Any]:
    """The token fields a record must have (total = input + output, null when either is)."""
    total = None if input is None or output is None else input + output
    return {
        "input_tokens": input,
        "output_tokens": output,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
        "total_tokens": total,
    }


def shape(call: dict[str, Any]) -> tuple[Any, ...]:
    """(api, status, attempt, stream, usage_source): what every test checks besides the tokens."""
    return (call["api"], call["status"], call["attempt"], call["stream"], call["usage_source"])


# -- docs/support.json ------------------------------------------------------------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith("tests/sdk/"):
        return
    if report.failed:
        _failed.add(report.nodeid)
    elif report.when == "call" and report.passed and not hasattr(report, "wasxfail"):
        _passed.add(report.nodeid)


def _results(session: pytest.Session) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for item in session.items:
        nodeid = item.nodeid
        marks = list(item.iter_markers("support"))
        if not marks or nodeid not in _passed or nodeid in _failed or nodeid not in _observed:
            continue
        sdk = getattr(item.module, "SDK", None)
        if not isinstance(sdk, str):
            raise pytest.UsageError(f"{item.path}: a module with support marks must name its SDK in SDK")
        provider = marks[0].args[0]
        features = sorted({f for m in marks for f in m.args[1:]}, key=FEATURES.index)
        results[nodeid] = {
            "provider": provider,
            "features": features,
            "sdk": sdk,
            "sdk_version": importlib.metadata.version(sdk),
            **_observed[nodeid],
        }
    return results


def leg() -> str:
    """Which CI leg this is: the two run the same tests under openai 3.x (httpx2) and 2.x (httpx)."""
    return "openai-" + importlib.metadata.version("openai").split(".", 1)[0]


def merge(
    previous: dict[str, Any],
    results: dict[str, dict[str, Any]],
    collected: dict[str, set[str]],
    failed: set[str],
    this_leg: str,
) -> dict[str, Any]:
    """This session's results over the file's, per test and leg: a test that passed here replaces this
    leg's entry and one that failed loses it; one skipped here, or in a module not collected here (the
    other leg's SDKs), keeps what it had; a test that no longer exists is dropped."""
    tests: dict[str, dict[str, Any]] = {k: dict(v) for k, v in previous.get("tests", {}).items()}
    for nodeid in list(tests):
        path = nodeid.split("::", 1)[0]
        if not (ROOT / path).exists() or (path in collected and nodeid not in collected[path]):
            del tests[nodeid]
        elif nodeid in failed:
            tests[nodeid].pop(this_leg, None)
    for nodeid, result in results.items():
        tests.setdefault(nodeid, {})[this_leg] = result
    return {
        "about": "Written by tests/sdk (TOKENTRAIL_WRITE_SUPPORT=1) from the tests that passed, per test and "
        "CI leg; rendered into README.md by scripts/support_table.py.",
        "features": list(FEATURES),
        "tests": {k: dict(sorted(v.items())) for k, v in sorted(tests.items()) if v},
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get(WRITE_ENV) != "1" or not _collected:
        return
    previous = json.loads(SUPPORT_JSON.read_text()) if SUPPORT_JSON.exists() else {}
    merged = merge(previous, _results(session), _collected, _failed, leg())
    SUPPORT_JSON.parent.mkdir(parents=True, exist_ok=True)
    SUPPORT_JSON.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
