"""INTEGRATION_WORKER_CONCURRENCY sizes `nexus run-worker`'s per-queue pools (defect 8: it was
parsed and documented but never used), and `nexus stats` shows it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from nexus_core import queues
from nexus_core.worker import pool_layout


def test_the_layout_scales_the_seed_concurrency():
    every = list(queues.WORKER_QUEUE_ORDER)
    assert pool_layout(every, 5) == {queues.WEBHOOK: 10, queues.DELTA: 5, queues.HEALTH: 3,
                                     queues.BACKFILL: 2}
    assert pool_layout(every, 10) == {queues.WEBHOOK: 20, queues.DELTA: 10, queues.HEALTH: 6,
                                      queues.BACKFILL: 4}
    assert pool_layout(every, 1) == {queues.WEBHOOK: 2, queues.DELTA: 1, queues.HEALTH: 1,
                                     queues.BACKFILL: 1}


def _workers_by_queue(redis_client):
    from rq import Worker

    counts: Counter[str] = Counter()
    for worker in Worker.all(connection=redis_client):
        for name in worker.queue_names():
            counts[name] += 1
    return counts


@pytest.mark.slow
def test_run_worker_starts_one_pool_per_queue_sized_by_the_setting(
    tmp_path, redis_url, redis_client
):
    env = {**os.environ, "REDIS_URL": redis_url, "INTEGRATION_WORKER_CONCURRENCY": "5",
           "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
           "NEXUS_KEY_FILE": str(tmp_path / "key"), "LOG_LEVEL": "WARNING"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nexus_core.cli", "run-worker", "-q", "backfill,health"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _workers_by_queue(redis_client) != Counter({queues.BACKFILL: 2,
                                                          queues.HEALTH: 3}):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, _workers_by_queue(redis_client)
            time.sleep(0.2)
        stats = subprocess.run([sys.executable, "-m", "nexus_core.cli", "stats", "--json"],
                               env=env, capture_output=True, text=True, timeout=60)
        data = json.loads(stats.stdout)["queues"]
        assert data["worker_concurrency"] == 5
        got = {q: (s["workers"], s["concurrency"]) for q, s in data["queues"].items()}
        assert got[queues.BACKFILL] == (2, 2) and got[queues.HEALTH] == (3, 3)
        assert got[queues.WEBHOOK] == (0, 10) and got[queues.DELTA] == (0, 5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what systemd/docker send
        try:
            assert proc.wait(30) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    deadline = time.monotonic() + 20
    while sum(_workers_by_queue(redis_client).values()):  # every worker deregistered
        assert time.monotonic() < deadline
        time.sleep(0.2)
