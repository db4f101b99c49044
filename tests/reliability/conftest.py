"""Fault-injection fixtures: real redis-server, real SQLite, real `nexus run-worker` processes
(each in its own session so a test can SIGKILL the whole process group), a local simulator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import attrs
import pytest

from nexus_core.testing.simulator import PagedRecords, SimulatorServer, paged_provider

LAUNCHER = Path(__file__).with_name("worker_main.py")


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):  # noqa: D103
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture
def wait():
    return wait_for


@attrs.define
class Cluster:
    tmp: Path
    env: dict
    store: object
    redis: object
    sim: PagedRecords
    server: SimulatorServer
    registry: object
    procs: list = attrs.Factory(list)

    def worker(self, *args, **env):
        with open(self.tmp / f"worker-{len(self.procs)}.log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, str(LAUNCHER), "run-worker", *args],
                env={**os.environ, **self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.tmp,
            )
        self.procs.append(proc)
        return proc

    def kill(self, proc, sig=signal.SIGKILL):
        """Signal the worker and every process below it. RQ puts each work-horse in a process
        group of its own (setpgrp), so killing the worker's group alone would leave the horse
        running; a container/cgroup kill takes them all, and so does this."""
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(proc)
                proc.wait(5)
            self.kill(proc)  # leftovers: horses, scheduler children

    def logs(self):
        return "\n".join(p.read_text() for p in sorted(self.tmp.glob("worker-*.log")))

    def install(self, tenant="t1", install="i1", **config):
        return self.store.add_installation(tenant, install, "sim",
                                           config={"base_url": self.server.url, **config})

    def service(self):
        from nexus_core import IntegrationService
        from nexus_core.config import get_settings

        return IntegrationService(settings=get_settings(), registry=self.registry)

    def delivered(self, path):
        if not Path(path).exists():
            return Counter()
        return Counter(json.loads(line)["id"] for line in Path(path).read_text().splitlines())


@pytest.fixture
def make_cluster(monkeypatch, tmp_path, sqlite_url, nexus_registry):
    from nexus_core import runtime
    from nexus_core.config import reset_settings

    made = []

    def make(redis_url, *, total=5000, page_size=100, **extra_env):
        env = {
            "REDIS_URL": redis_url, "NEXUS_DATABASE_URL": sqlite_url,
            "NEXUS_KEY_FILE": str(tmp_path / "key"), "INTEGRATION_MAX_RETRIES": "3",
            "INTEGRATION_BACKOFF_DELAY": "0", "NEXUS_JOB_LEASE_TTL": "2",
            "NEXUS_SINK": "jsonl", "NEXUS_SINK_DIR": str(tmp_path / "sink"),
            "NEXUS_RATE_LIMIT_MAX_WAIT": "0", "NEXUS_HTTP_BACKOFF_BASE": "0",
            "LOG_LEVEL": "INFO", "NO_COLOR": "1", **extra_env,
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        reset_settings()
        runtime.reset()
        nexus_registry.register(paged_provider(), "sim")
        sim = PagedRecords(total=total, page_size=page_size)
        server = SimulatorServer(sim).start()
        import redis

        cluster = Cluster(tmp_path, env, runtime.get_store(), redis.Redis.from_url(redis_url),
                          sim, server, nexus_registry)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop_all()
        cluster.server.stop()
    runtime.reset()
    reset_settings()
