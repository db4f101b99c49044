"""Sync-engine fixtures: real Redis, a real SQLite store, a local provider simulator, in-process
RQ workers (``SimpleWorker`` — rq's own test style) and a sink plugin that records deliveries."""

from __future__ import annotations

import signal
from collections import Counter

import attrs
import pytest

from nexus_core import hookimpl
from nexus_core.testing.simulator import PagedRecords, SimulatorServer, paged_provider


class RecordingSink:
    """Counts every record id and event id it receives; can be told to fail a page."""

    def __init__(self):
        self.pages: list[list[str]] = []
        self.ids: Counter[str] = Counter()
        self.events: list = []
        self.fail_on_page: int | None = None
        self.fail_times = 0
        self.calls = 0

    @hookimpl
    def process_records(self, ctx, stream, records):
        self.calls += 1
        if self.fail_on_page is not None and self.fail_times and self.calls == self.fail_on_page:
            self.fail_times -= 1
            self.calls -= 1
            raise RuntimeError(f"sink down on page {self.fail_on_page}")
        self.pages.append([r.id for r in records])
        self.ids.update(r.id for r in records)

    @hookimpl
    def process_events(self, ctx, events):
        self.events.extend(events)


@attrs.define
class SyncEnv:
    registry: object
    store: object
    redis: object
    sim: PagedRecords
    server: SimulatorServer
    sink: RecordingSink

    def install(self, tenant="t1", install="i1", provider="sim", **config):
        return self.store.add_installation(
            tenant, install, provider, config={"base_url": self.server.url, **config})

    def work(self, queues=None):
        from nexus_core.worker import NexusSimpleWorker, resolve_queues

        worker = NexusSimpleWorker(resolve_queues(queues), connection=self.redis)
        return worker.work(burst=True, logging_level="WARNING")

    def service(self):
        from nexus_core import IntegrationService
        from nexus_core.config import get_settings

        return IntegrationService(settings=get_settings(), registry=self.registry)


@pytest.fixture
def sync_env(monkeypatch, tmp_path, redis_url, redis_client, sqlite_url, nexus_registry):
    from nexus_core import runtime
    from nexus_core.config import reset_settings

    env = {
        "REDIS_URL": redis_url, "NEXUS_DATABASE_URL": sqlite_url,
        "NEXUS_KEY_FILE": str(tmp_path / "key"), "INTEGRATION_MAX_RETRIES": "2",
        "INTEGRATION_BACKOFF_DELAY": "0", "NEXUS_BACKFILL_TIME_BUDGET": "60",
        "NEXUS_SINK": "null", "NEXUS_RATE_LIMIT_MAX_WAIT": "0", "NEXUS_HTTP_BACKOFF_BASE": "0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    runtime.reset()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sim = PagedRecords(total=1000, page_size=100)
    sink = RecordingSink()
    nexus_registry.register(paged_provider(), "sim")
    nexus_registry.register(sink, "recording-sink")
    with SimulatorServer(sim) as server:
        yield SyncEnv(nexus_registry, runtime.get_store(), redis_client, sim, server, sink)
    for s, h in handlers.items():
        signal.signal(s, h)
    runtime.reset()
    reset_settings()
