"""In-product plugins (NEXUS_PLUGINS): hook implementations from the product's own code, loaded
without packaging — with the same isolation, allow/deny and listing as entry-point plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def _project(tmp_path):
    pkg = tmp_path / "myapp"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nexus_hooks.py").write_text(textwrap.dedent('''
        from nexus_core import hookimpl

        @hookimpl
        def process_records(ctx, stream, records):
            print("got", len(records))
    '''))
    (pkg / "connector.py").write_text(textwrap.dedent('''
        from nexus_core import BaseConnector, Provider, SyncPage

        class InHouse(BaseConnector):
            provider = Provider(id="inhouse", name="In-house API", version="1",
                                auth_type="none", streams=("items",))

            def backfill(self, ctx, stream, cursor):
                return SyncPage(done=True)
    '''))
    (pkg / "broken.py").write_text("import does_not_exist\n")
    return tmp_path


def nexus(cwd, env, *args):
    return subprocess.run([sys.executable, "-m", "nexus_core.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_modules_and_objects_load_from_the_products_code(tmp_path):
    project = _project(tmp_path)
    env = {**os.environ, "NEXUS_PLUGINS":
           "myapp.nexus_hooks, myapp.connector:InHouse, myapp.broken"}
    env.pop("PYTHONPATH", None)
    listed = nexus(project, env, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    hooks = plugins["myapp.nexus_hooks"]
    assert hooks["status"] == "ok" and hooks["distribution"] == "NEXUS_PLUGINS"
    assert "process_records" in hooks["hooks"]
    assert plugins["myapp.connector:InHouse"]["provider"] == "inhouse"
    broken = plugins["myapp.broken"]
    assert broken["status"] == "skipped" and "No module named 'does_not_exist'" in \
        broken["reason"]
    assert plugins["example"]["status"] == "ok"  # the others keep working
    providers = nexus(project, env, "providers", "list")
    assert "inhouse" in providers.stdout


def test_the_deny_and_allow_lists_apply_to_them(tmp_path):
    project = _project(tmp_path)
    env = {**os.environ, "NEXUS_PLUGINS": "myapp.nexus_hooks,myapp.connector:InHouse",
           "NEXUS_DISABLE_PLUGINS": "myapp.nexus_hooks"}
    names = {p["name"] for p in json.loads(nexus(project, env, "plugins", "list",
                                                 "--json").stdout)}
    assert "myapp.nexus_hooks" not in names and "myapp.connector:InHouse" in names
    env = {**os.environ, "NEXUS_PLUGINS": "myapp.nexus_hooks,myapp.connector:InHouse",
           "NEXUS_LOAD_PLUGINS": "myapp.connector:InHouse"}
    names = {p["name"] for p in json.loads(nexus(project, env, "plugins", "list",
                                                 "--json").stdout)}
    assert names == {"myapp.connector:InHouse"}
