"""`integrations.install()`: no framework imported by tokentrail, adapters armed for later imports, undone."""

from __future__ import annotations

import contextvars
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tokentrail
from tokentrail import integrations
from tokentrail.integrations import FRAMEWORKS, close_scope, deactivate, live, open_scope
from tokentrail.scope import ScopeKind

ROOT = Path(__file__).resolve().parents[2]


def python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_install_imports_no_framework_and_adapts_one_imported_later() -> None:
    installed = [name for name, module in FRAMEWORKS.items() if importlib.util.find_spec(module)]
    if not installed:
        pytest.skip("no supported framework installed")
    name = installed[-1]
    out = python(
        f"""
        import importlib, json, sys
        import tokentrail
        from tokentrail import integrations
        armed = integrations.install()
        imported = [m for m in integrations.FRAMEWORKS.values() if m in sys.modules]
        print(json.dumps([armed, imported, integrations.enabled()]))
        importlib.import_module(integrations.FRAMEWORKS[{name!r}])
        print(json.dumps(integrations.enabled()))
        """
    )
    before, after = map(json.loads, out.splitlines()[-2:])
    armed, imported, enabled = before
    assert armed == installed
    assert imported == [] and enabled == []  # tokentrail imported no framework
    assert after == [name]  # adapted when the program imported it


def test_uninstall_restores_what_install_wrapped(db: Path) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    manager = pytest.importorskip("langchain_core.callbacks.manager")
    integrations.uninstall()  # instrument() (the db fixture) installed them already
    originals = (pydantic_ai.Agent.__dict__["iter"], manager.AsyncCallbackManagerForChainRun.__dict__["on_chain_end"])
    assert {"langchain", "pydantic_ai"} <= set(integrations.install())
    assert integrations.install() == integrations.install()  # idempotent
    assert pydantic_ai.Agent.__dict__["iter"] is not originals[0]
    integrations.uninstall()
    assert integrations.enabled() == []
    assert (pydantic_ai.Agent.__dict__["iter"], manager.AsyncCallbackManagerForChainRun.__dict__["on_chain_end"]) == (
        originals
    )


def test_scopes_opened_for_a_framework_nest_and_restore() -> None:
    with tokentrail.run("trial") as trial:
        agent = open_scope(ScopeKind.AGENT, "planner")
        tool = open_scope(ScopeKind.TOOL, "search")
        assert tokentrail.current_scope().name_path == "trial/planner/search"
        close_scope(tool)
        assert tokentrail.current_scope() is agent.scope
        close_scope(agent)
        assert tokentrail.current_scope() is trial.scope


def test_scopes_closed_out_of_order_never_stay_current() -> None:
    with tokentrail.run("trial") as trial:
        agent = open_scope(ScopeKind.AGENT, "planner")
        step = open_scope(ScopeKind.STEP, "plan")
        close_scope(agent)  # the agent ends first (an abandoned stream): the step stays current
        assert tokentrail.current_scope() is step.scope
        close_scope(step)  # resetting would bring back the closed agent: its open ancestor instead
        assert tokentrail.current_scope() is trial.scope
        assert live(step.scope) is trial.scope


def test_a_scope_ended_in_another_context_clears_only_that_context() -> None:
    with tokentrail.run("trial") as trial:
        agent = open_scope(ScopeKind.AGENT, "planner")
        other = contextvars.copy_context()
        other.run(deactivate, agent)  # the framework ends the run in a task of its own
        assert other.run(tokentrail.current_scope) is trial.scope
        assert tokentrail.current_scope() is agent.scope  # untouched here, and the token kept for here
        close_scope(agent)
        assert tokentrail.current_scope() is trial.scope
