"""Meta-tests that keep hooks honest (datasette style): every hook is documented in
docs/hooks.md, the doc is up to date with hookspecs.py, and every hook has a test_hook_<name>."""

import ast
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN = runpy.run_path(str(ROOT / "scripts" / "gen_hook_docs.py"))
HOOKS = [name for name, _ in GEN["hooks"]()]


def test_there_are_hooks():
    assert {"nexus_provider", "authorize", "refresh", "backfill", "delta", "handle_webhook",
            "verify_webhook", "health_check", "process_records", "process_events"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_are_documented(hook):
    assert f"## `{hook}`" in (ROOT / "docs" / "hooks.md").read_text()


def test_hook_docs_are_generated_from_the_current_hookspecs():
    assert (ROOT / "docs" / "hooks.md").read_text() == GEN["render"](), "run `make docs`"


def _test_names():
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                names.add(node.name)
    return names


@pytest.mark.parametrize("hook", HOOKS)
def test_plugin_hooks_have_tests(hook):
    assert f"test_hook_{hook}" in _test_names()
