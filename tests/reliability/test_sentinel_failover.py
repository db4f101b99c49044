"""Redis Sentinel: the master dies in the middle of a backfill and of webhook traffic.

A real deployment on this machine (nexus_core.testing.sentinel: master, replica, three
sentinels, down-after 1 s, failover-timeout 3 s), real `nexus run-worker` processes (an RQ
WorkerPool of two, which rebuilds its connection in every worker and in RQ's scheduler, and a
supervised worker), the web app in-process, every Redis client built from REDIS_SENTINELS. The
master is SIGKILLed; the sentinels promote the replica; workers and ingress carry on by
themselves.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from nexus_core.testing.redis_server import RedisUnavailable
from nexus_core.testing.sentinel import SentinelCluster, sentinel_command

HERE = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sentinel_command() is None,
                       reason="needs redis-sentinel, or redis-server (which runs a sentinel with "
                              "--sentinel): apt-get install -y redis-server / brew install redis"),
]


@pytest.fixture
def sentinels():
    try:
        cluster = SentinelCluster(down_after_ms=1000, failover_timeout_ms=3000).start()
    except RedisUnavailable as exc:
        pytest.skip(f"could not start a Sentinel deployment: {exc}")
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def ops_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    import ops_plugin

    return ops_plugin


def sentinel_env(sentinels, ops_plugin, **extra):
    return {
        "REDIS_SENTINELS": sentinels.sentinels_setting,
        "REDIS_SENTINEL_MASTER": sentinels.name,
        "NEXUS_PLUGINS": "ops_plugin:plugin",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        ops_plugin.SECRET_ENV: ops_plugin.SECRET,
        "NEXUS_PUBLIC_URL": "https://hooks.example.com",
        **extra,
    }


class Sender(threading.Thread):
    """Posts signed deliveries one after another, each until it is acknowledged (a provider
    retries a 503), and logs (time, event id, status) of every attempt."""

    def __init__(self, client, ops_plugin, account="acct-1"):
        super().__init__(daemon=True)
        self.client, self.plugin, self.account = client, ops_plugin, account
        self.log: list[tuple[float, str, int]] = []
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            event_id = f"ev-{n:05d}"
            body, headers = self.plugin.delivery(event_id, self.account)
            while True:
                started = time.monotonic()
                resp = self.client.simulate_post(f"/webhooks/{self.plugin.PROVIDER}", body=body,
                                                 headers=headers)
                self.log.append((started, event_id, resp.status_code))
                if resp.status_code == 200:
                    self.acked.append(event_id)
                    break
                if self.stop.is_set():
                    return
                time.sleep(0.05)
            n += 1
            time.sleep(0.02)


def test_workers_and_ingress_carry_on_after_a_sentinel_failover_and_every_acknowledged_job_completes(
    sentinels, ops_plugin, make_cluster, nexus_registry, wait
):
    from falcon import testing
    from rq import Queue

    from nexus_core import queues, runtime
    from nexus_core.config import get_settings
    from nexus_core.web import create_app

    # REDIS_URL names the master's database only: with REDIS_SENTINELS its host is not used.
    c = make_cluster(f"redis://127.0.0.1:{sentinels.master_port}/0", total=2000, page_size=20,
                     **sentinel_env(sentinels, ops_plugin, NEXUS_BACKFILL_TIME_BUDGET="2",
                                    INTEGRATION_BACKOFF_DELAY="1000",
                                    INTEGRATION_MAX_RETRIES="5"))
    c.sim.latency = 0.03  # 100 pages: a backfill of ~5 s
    nexus_registry.register(ops_plugin.plugin, "ops_plugin:plugin")
    c.store.add_installation("t1", "i1", ops_plugin.PROVIDER, account_id="acct-1",
                             config={"base_url": c.server.url})
    redis = runtime.get_redis()
    assert "SentinelConnectionPool" in repr(redis.connection_pool)  # the factory's choice

    # The production layout: one RQ WorkerPool per queue (each rebuilds its connection in its
    # workers and in RQ's scheduler), plus a second machine's single webhook worker.
    pool = c.worker(INTEGRATION_WORKER_CONCURRENCY="1")
    single = c.worker("--workers", "1", "--queues", "webhook")
    c.service().start_backfill(ops_plugin.PROVIDER, "t1", "i1")

    app = create_app(settings=get_settings(), store=c.store, registry=nexus_registry)
    sender = Sender(testing.TestClient(app), ops_plugin)
    seqs: list[tuple[float, int]] = []
    watching = threading.Event()

    def seq():
        return c.store.get_checkpoint("t1", "i1", "records", "backfill").seq

    def watch():
        while not watching.is_set():
            seqs.append((time.monotonic(), seq()))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    sender.start()
    watcher.start()
    try:
        wait(lambda: seq() >= 20 and len(sender.acked) >= 20, timeout=60,
             what="20 committed pages and 20 acknowledged deliveries")
        before = seq()
        acked_before = len(sender.acked)
        killed = time.monotonic()
        old_port = sentinels.kill_master()
        new_master = sentinels.wait_for_failover(old_port, timeout=30)
        promoted = time.monotonic()
        wait(lambda: len(sender.acked) >= acked_before + 30, timeout=30,
             what="30 deliveries acknowledged after the failover")
        wait(lambda: seq() == 100 and c.store.list_runs("t1", "i1")[0].status == "succeeded",
             timeout=90, what="the backfill to finish after the failover")
    finally:
        sender.stop.set()
        watching.set()
        sender.join(30)
        watcher.join(5)

    events = c.tmp / "sink" / "t1" / ops_plugin.PROVIDER / "events.jsonl"

    def delivered_events():
        if not events.exists():
            return set()
        return {json.loads(line)["id"] for line in events.read_text().splitlines()}

    try:
        wait(lambda: set(sender.acked) <= delivered_events(), timeout=60,
             what="every acknowledged delivery's event in the sink")
    except AssertionError:
        missing = sorted(set(sender.acked) - delivered_events())
        acked_at = {e: t - killed for t, e, status in sender.log if status == 200}
        redis = runtime.get_redis()
        keys = [k.decode() for k in redis.scan_iter("rq:job:*opsim*", count=1000)]
        detail = {}
        for e in missing:
            key = f"rq:job:nexus__webhook__opsim__t1__i1__i-{e}"
            h = redis.hgetall(key)
            detail[e] = ({k: h.get(k.encode()) for k in ("status", "started_at", "ended_at",
                                                         "worker_name")},
                         [ln for ln in c.logs().splitlines() if e in ln])
        raise AssertionError(
            f"{detail}\nnot processed: {[(e, round(acked_at[e], 3)) for e in missing]}; promoted at "
            f"{promoted - killed:.3f}; job keys {len(keys)}; logs:\n{c.logs()[-3000:]}"
        ) from None

    # Ingress: 200 or 503, never anything else; a 503 only once the master was gone.
    statuses = {status for _, _, status in sender.log}
    assert statuses <= {200, 503}, statuses
    refused = [t for t, _, status in sender.log if status == 503]
    assert refused and min(refused) >= killed, "the failover went unnoticed by the ingress"
    first_ok = min(t for t, _, status in sender.log if status == 200 and t > max(refused))
    # Workers: the backfill was cut in the middle and finished on the new master.
    assert before < 100
    at_kill = max(s for t, s in seqs if t <= killed)
    during = max(s for t, s in seqs if t <= promoted) - at_kill
    resumed = min(t for t, s in seqs if t > promoted and s > max(
        s2 for t2, s2 in seqs if t2 <= promoted))
    records = c.delivered(c.tmp / "sink" / "t1" / ops_plugin.PROVIDER / "streams" /
                          "records.jsonl")
    assert len(records) == 2000  # every record id reached the sink
    twice = [i for i, n in records.items() if n > 1]
    assert len(twice) <= 20 and max(records.values()) <= 2  # at most one page twice
    # Every acknowledged job completed: nothing failed, nothing left waiting.
    redis = runtime.get_redis()
    assert redis.connection_pool.get_master_address() == new_master
    for name in queues.ALL_QUEUES:
        q = Queue(name, connection=redis)
        assert q.failed_job_registry.count == 0, (name, q.failed_job_registry.get_job_ids())
        assert q.count == 0 and q.scheduled_job_registry.count == 0, name
    assert pool.poll() is None and single.poll() is None, c.logs()[-4000:]  # none gave up

    timeline = (
        f"\nSentinel failover timeline (down-after 1 s, failover-timeout 3 s), from the kill:"
        f"\n  sentinels promoted the replica:     {promoted - killed:5.2f} s"
        f"\n  ingress 503s:                       {min(refused) - killed:5.2f} s .. "
        f"{max(refused) - killed:5.2f} s ({len(refused)} answers, "
        f"{max(refused) - min(refused):.2f} s of 503s)"
        f"\n  first 200 after the kill:           {first_ok - killed:5.2f} s"
        f"\n  backfill pages committed before the promotion: {during} (the store is not"
        f" Redis; a page's progress note to Redis is best-effort)"
        f"\n  first page committed after it:      {resumed - killed:5.2f} s"
        f"\n  deliveries acknowledged: {len(sender.acked)}, all processed; "
        f"records 2000, delivered twice: {len(twice)}"
    )
    print(timeline)
    (c.tmp.parent / "sentinel-failover-timeline.txt").write_text(timeline)
