"""Real entry-point discovery: test distributions are pip-installed into this environment, the
real `nexus` CLI runs in a subprocess, and the distributions are uninstalled afterwards."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DISTS = Path(__file__).resolve().parents[1] / "fixtures" / "dists"
NAMES = ["testgood", "testbroken", "testimpostor", "testold", "testnobackfill", "testclassy"]

pytestmark = pytest.mark.slow


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args],
                   check=True, capture_output=True, text=True)


def nexus(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "nexus_core.cli", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1", **env},
    )


def plugins_json(**env):
    result = nexus("plugins", "list", "--json", **env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


@pytest.fixture(scope="module")
def installed():
    dists = [f"nexus-{n}" for n in NAMES]
    pip("uninstall", "-y", *dists)  # leftovers of an interrupted run
    pip("install", "--no-deps", "--no-build-isolation", *(str(DISTS / d) for d in dists))
    try:
        yield
    finally:
        pip("uninstall", "-y", *dists)


def test_installed_plugins_are_listed_and_broken_ones_skipped_with_reason(installed):
    plugins = plugins_json()
    good = plugins["testgood"]
    assert good["status"] == "ok"
    assert (good["distribution"], good["version"]) == ("nexus-testgood", "1.2.3")
    assert good["hooks"] == ["backfill", "nexus_provider"] and good["provider"] == "testgood"
    assert plugins["testclassy"]["status"] == "ok" and plugins["testclassy"]["provider"] == "testclassy"

    broken = plugins["testbroken"]
    assert broken["status"] == "skipped"
    assert "import failed: ImportError: nexus_testbroken needs a library" in broken["reason"]
    assert "already provided by plugin 'testgood'" in plugins["testimpostor"]["reason"]
    assert "core API version 0" in plugins["testold"]["reason"]
    assert "lacks required hook(s) backfill" in plugins["testnobackfill"]["reason"]
    # the broken ones take nothing else down: the shipped example plugin is still there
    assert plugins["example"]["status"] == "ok"


def test_providers_list_shows_only_working_providers(installed):
    result = nexus("providers", "list", "--json")
    assert result.returncode == 0, result.stderr
    by_id = {p["id"]: p for p in json.loads(result.stdout)}
    assert {"testgood", "testclassy", "example"} <= set(by_id)
    assert not {"testold", "testnobackfill"} & set(by_id)
    assert by_id["testgood"]["name"] == "Test Good"  # not the impostor
    assert by_id["testclassy"] == {
        "id": "testclassy", "name": "Classy", "version": "2.0.0",
        "distribution": "nexus-testclassy", "auth_type": "oauth2",
        "supports_webhooks": False, "streams": ["a", "b"],
    }


def test_allow_and_deny_lists_by_plugin_or_distribution_name(installed):
    only = plugins_json(NEXUS_LOAD_PLUGINS="testgood,nexus-testclassy")
    assert set(only) == {"testgood", "testclassy"}
    denied = plugins_json(NEXUS_DISABLE_PLUGINS="testbroken,nexus-testgood")
    assert "testbroken" not in denied and "testgood" not in denied
    assert denied["testimpostor"]["status"] == "ok"  # with testgood gone it owns the id


def test_uninstalled_plugins_are_gone():
    dists = [f"nexus-{n}" for n in NAMES]
    pip("uninstall", "-y", *dists)
    plugins = plugins_json()
    assert not set(NAMES) & set(plugins)
    assert "example" in plugins
