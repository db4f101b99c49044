"""Scale-out on one Redis and one PostgreSQL: four `nexus run-worker` processes and `nexus serve`
with two gunicorn workers, as on several machines, run 20 tenants' backfills while webhook
deliveries for the same tenants arrive. Every record and every event reaches the SQL sink of its
own tenant; the jsonl sink beside it shows no record delivered twice beyond one page; all four
workers took part."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from nexus_core.testing.redis_server import free_port
from nexus_core.testing.simulator import PagedRecords, SimulatorServer

HERE = Path(__file__).resolve().parent
NEXUS = [sys.executable, "-c", "from nexus_core.cli import main; main()"]
TENANTS = 20
RECORDS = 600  # per tenant: 12 pages of 50
PAGE = 50
EVENTS = 25  # webhook deliveries per tenant

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _kill_tree(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@pytest.fixture
def processes():
    """Every process the test starts, each in its own session; all stopped at teardown (warm
    SIGTERM, then SIGKILL of the whole group), whatever happened."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            _kill_tree(proc)
    for proc in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        _kill_tree(proc, signal.SIGKILL)  # leftovers: work-horses, gunicorn workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def test_four_workers_and_two_web_workers_on_one_redis_and_postgres_lose_nothing(
    make_db_url, redis_url, tmp_path, processes, monkeypatch, wait, nexus_registry
):
    import requests
    import sqlalchemy as sa
    from rq import Worker

    monkeypatch.syspath_prepend(str(HERE))
    import ops_plugin

    from nexus_core.config import load_settings
    from nexus_core.crypto import generate_key, keyring_from_settings
    from nexus_core.queues import redis_connection
    from nexus_core.sinks.sql import SqlSink
    from nexus_core.store import Store

    db = make_db_url("postgres")
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url, "NEXUS_DATABASE_URL": db,
        "NEXUS_ENCRYPTION_KEYS": generate_key(), "NEXUS_SINK": "sql,jsonl",
        "NEXUS_SINK_DIR": str(tmp_path / "sink"), "NEXUS_PLUGINS": "ops_plugin:plugin",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
        ops_plugin.SECRET_ENV: ops_plugin.SECRET,
        "NEXUS_PUBLIC_URL": f"http://127.0.0.1:{port}", "NEXUS_JOB_LEASE_TTL": "5",
        "NEXUS_BACKFILL_TIME_BUDGET": "1", "LOG_LEVEL": "INFO", "NO_COLOR": "1",
        "NEXUS_EMBEDDED_REDIS": "off",
    }
    settings = load_settings(env, env_file=None)
    store = Store.from_url(db, keyring_from_settings(settings))
    sink = SqlSink(db)
    sink.engine  # noqa: B018 - migrate the sink's tables once, before 6 processes start
    sink.close()
    sim = PagedRecords(total=RECORDS, page_size=PAGE, latency=0.005)
    server = SimulatorServer(sim).start()
    redis = redis_connection(settings)
    try:
        for n in range(TENANTS):
            store.add_installation(f"tenant-{n:02d}", "main", ops_plugin.PROVIDER,
                                   account_id=f"acct-{n:02d}", config={"base_url": server.url})

        def spawn(name, *args):
            with open(tmp_path / f"{name}.log", "w") as log:
                proc = subprocess.Popen([*NEXUS, *args], env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        cwd=tmp_path)
            processes.append(proc)
            return proc

        for i in range(4):
            spawn(f"worker-{i}", "run-worker", "--workers", "1")
        web = spawn("web", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
        wait(lambda: len(Worker.all(connection=redis)) == 4, timeout=60,
             what="four workers registered")

        def ready():
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            return False

        wait(ready, timeout=60, what="nexus serve to answer")
        children = Path(f"/proc/{web.pid}/task/{web.pid}/children")
        wait(lambda: len(children.read_text().split()) == 2, timeout=30,
             what="two gunicorn workers")

        from nexus_core.sync import SyncOptions, start_sync

        nexus_registry.register(ops_plugin.plugin, "ops_plugin:plugin")
        for n in range(TENANTS):  # what IntegrationService.start_backfill does
            start_sync(redis, store, "backfill", ops_plugin.PROVIDER, f"tenant-{n:02d}", "main",
                       None, opts=SyncOptions.from_settings(settings))

        answers: list[tuple[int, dict]] = []

        def send(tenants):
            with requests.Session() as http:
                for e in range(EVENTS):
                    for n in tenants:
                        body, headers = ops_plugin.delivery(f"ev-{n:02d}-{e:03d}", f"acct-{n:02d}")
                        resp = http.post(f"http://127.0.0.1:{port}/webhooks/{ops_plugin.PROVIDER}",
                                         data=body, headers=headers, timeout=30)
                        answers.append((resp.status_code, resp.json()))

        senders = [threading.Thread(target=send, args=(range(k, TENANTS, 4),)) for k in range(4)]
        started = time.monotonic()
        for t in senders:
            t.start()
        for t in senders:
            t.join(120)

        engine = sa.create_engine(db)

        def counts(table, column):
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    f"select tenant_id, count(distinct {column}) from {table} group by tenant_id"))
                return dict(rows.all())

        def done():
            runs = [store.list_runs(f"tenant-{n:02d}", "main")[0].status for n in range(TENANTS)]
            return (all(s == "succeeded" for s in runs)
                    and counts("nexus_events", "event_id") == {
                        f"tenant-{n:02d}": EVENTS for n in range(TENANTS)})

        wait(done, timeout=180, interval=0.5, what="every backfill and every webhook event")
        elapsed = time.monotonic() - started
        records = counts("nexus_records", "record_id")
        engine.dispose()
    finally:
        server.stop()
        redis.close()
        store.close()

    assert [status for status, _ in answers] == [200] * (TENANTS * EVENTS)
    assert all(a["enqueued"] == 1 and a["duplicates"] == 0 for _, a in answers)
    assert records == {f"tenant-{n:02d}": RECORDS for n in range(TENANTS)}
    for n in range(TENANTS):  # each tenant's own file: its records, at most one page twice
        path = tmp_path / "sink" / f"tenant-{n:02d}" / ops_plugin.PROVIDER / "streams" / \
            "records.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert {line["tenant_id"] for line in lines} == {f"tenant-{n:02d}"}
        seen = Counter(line["id"] for line in lines)
        assert len(seen) == RECORDS and sum(seen.values()) - RECORDS <= PAGE
    backfills = Counter()
    for i in range(4):
        log = (tmp_path / f"worker-{i}.log").read_text()
        backfills[i] = log.count("Successfully completed backfill")
        assert "Successfully completed" in log, f"worker {i} did nothing:\n{log[-2000:]}"
    print(f"\n{TENANTS} tenants x {RECORDS} records + {TENANTS * EVENTS} webhook deliveries "
          f"on 4 workers and 2 web workers: {elapsed:.1f} s; backfill chunks per worker "
          f"{dict(backfills)}")
