"""Shared benchmark plumbing: a throwaway redis-server, a simulator in its own process, a
temporary SQLite store, and the environment the engine reads. Each benchmark starts its own."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nexus_core.testing import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def simulator(total: int, page_size: int = 100, latency_ms: float = 0.0,
              moving_delta_cursor: bool = False):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus_core.testing.simulator", "--port", str(port),
         "--total", str(total), "--page-size", str(page_size), "--latency-ms", str(latency_ms),
         *(["--moving-delta-cursor"] if moving_delta_cursor else [])],
        stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def environment(**extra: str):
    """redis-server + temp dir + env vars for the engine; yields (env dict, redis url, dir)."""
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp, RedisServer() as redis:
        env = {
            "REDIS_URL": redis.url, "NEXUS_DATABASE_URL": f"sqlite:///{tmp}/nexus.db",
            "NEXUS_KEY_FILE": f"{tmp}/key", "NEXUS_SINK": "null", "LOG_LEVEL": "WARNING",
            "NEXUS_BACKFILL_TIME_BUDGET": "600", "INTEGRATION_BACKOFF_DELAY": "0", **extra,
        }
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env, redis.url, Path(tmp)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def report(name: str, values: list[float], unit: str = "") -> float:
    med = statistics.median(values)
    raw = ", ".join(f"{v:.3f}" for v in values)
    print(f"{name}: median {med:.3f}{unit}  (raw: {raw})")
    return med


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out
