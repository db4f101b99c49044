"""Metrics from every process: `nexus serve` with two gunicorn workers and `nexus run-worker`
forking a work-horse per job, each scraped on its separate metrics listener after real webhook
deliveries, a real backfill against the simulator and a webhook job."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nexus_core import webhooks as wh

LAUNCHER = Path(__file__).parents[1] / "reliability" / "worker_main.py"
TOKEN = "metrics-token-" + "x" * 20


def call(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels without empty ones): value}."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if v != ""))
            out[(s.name, labels)] = s.value
    return out


def value(found, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= set(ls))


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _up(port):
    with contextlib.suppress(OSError):
        return call(port, "GET", "/healthz")[0] == 200
    return False


def _stop(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def own_redis():
    """A Redis of this test's own: no process left over from another test takes its jobs."""
    import redis

    from nexus_core.testing.redis_server import RedisServer

    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    try:
        yield server.url, client
    finally:
        client.close()
        server.cleanup()


@pytest.fixture
def world(tmp_path, own_redis):
    """A store with an example installation (webhooks) and a sim installation (a paged API on a
    local simulator), and the environment every process gets."""
    from nexus_core.crypto import KeyRing, generate_key

    redis_url, redis_client = own_redis
    from nexus_core.store import Store
    from nexus_core.testing.simulator import PagedRecords, SimulatorServer

    key = generate_key()
    db = f"sqlite:///{tmp_path / 'n.db'}"
    server = SimulatorServer(PagedRecords(total=250, page_size=50)).start()
    store = Store.from_url(db, KeyRing.from_string(key))
    store.add_installation("tenant-s", "inst-s", "example", account_id="acct-9")
    store.add_installation("t1", "i1", "sim", config={"base_url": server.url})
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    env = {**os.environ, "REDIS_URL": redis_url, "NEXUS_DATABASE_URL": db,
           "NEXUS_ENCRYPTION_KEYS": key, "EXAMPLE_WEBHOOK_SECRET": secret,
           "NEXUS_METRICS_DIR": str(tmp_path / "metrics"), "NEXUS_SINK": "null",
           "NEXUS_METRICS_TOKEN": TOKEN, "LOG_LEVEL": "WARNING", "NO_COLOR": "1"}
    env.pop("NEXUS_PUBLIC_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procs = []

    def start(args, name):
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc, log

    yield {"env": env, "store": store, "secret": secret, "start": start, "tmp": tmp_path,
           "redis": redis_client}
    for proc in procs:
        _stop(proc)
    store.close()
    server.stop()


def _signed(secret, n):
    body = json.dumps({"id": f"e{n}", "type": "widget.created", "account_id": "acct-9"}).encode()
    ts = str(int(time.time()))
    return body, {"webhook-id": f"msg_{n}", "webhook-timestamp": ts,
                  "Content-Type": "application/json",
                  "webhook-signature": wh.sign_standard_webhooks(secret, f"msg_{n}", ts, body)}


@pytest.mark.slow
def test_serve_and_worker_expose_every_process_series_on_their_metrics_listeners(
    world, nexus_registry
):
    from nexus_core.testing import free_port
    from nexus_core.testing.simulator import paged_provider

    nexus_registry.register(paged_provider(), "sim")
    nexus = str(Path(sys.executable).with_name("nexus"))
    port, mport, wport = free_port(), free_port(), free_port()
    serve, serve_log = world["start"](
        [nexus, "serve", "--port", str(port), "--workers", "2", "--metrics-port", str(mport)],
        "serve")
    wait_for(lambda: _up(port) or serve.poll() is not None, 30, "nexus serve")
    assert serve.poll() is None, serve_log.read_text()
    assert f"metrics: http://127.0.0.1:{mport}/metrics" in serve_log.read_text()

    # Deliveries, 12 at once on connections of their own, until both gunicorn workers have
    # taken some (which one accepts a connection is the kernel's choice); 1 replay, 1 forged.
    serve_dir = next((world["tmp"] / "metrics").glob("nexus-serve-*"))

    def deliver(n):
        body, headers = _signed(world["secret"], n)
        return call(port, "POST", "/webhooks/example", body, headers)[0]

    sent = 0
    with ThreadPoolExecutor(12) as pool:
        for _ in range(10):
            assert set(pool.map(deliver, range(sent, sent + 12))) == {200}
            sent += 12
            writers = {f.name.rsplit("_", 1)[1] for f in serve_dir.glob("counter_*.db")}
            if len(writers) == 2:
                break
    assert len(writers) == 2, sorted(serve_dir.iterdir())  # both gunicorn workers counted
    body, headers = _signed(world["secret"], 0)
    assert call(port, "POST", "/webhooks/example", body, headers)[0] == 200
    assert call(port, "POST", "/webhooks/example", body + b" ", headers)[0] == 401

    # The metrics listener is another process: every figure it shows comes from the gunicorn
    # workers' files, summed.
    status, text = call(mport, "GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, text
    found = samples(text)
    assert value(found, "nexus_webhook_deliveries_total", provider="example",
                 outcome="enqueued") == sent
    assert value(found, "nexus_webhook_deliveries_total", outcome="duplicate") == 1
    assert value(found, "nexus_webhook_deliveries_total", outcome="rejected_401") == 1
    assert value(found, "nexus_webhook_ingress_seconds_count", provider="example") == sent + 1
    assert value(found, "nexus_queue_jobs", queue="integration-webhook", state="queued") == sent
    assert value(found, "nexus_metrics_source_up", source="redis") == 1
    assert value(found, "nexus_metrics_source_up", source="store") == 1
    assert value(found, "nexus_installations", status="active") == 2

    # the public port: the same figures with the token, nothing without it
    assert call(port, "GET", "/metrics")[0] == 401
    status, public = call(port, "GET", "/metrics",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert value(samples(public), "nexus_webhook_deliveries_total", outcome="enqueued") == sent
    assert call(port, "GET", "/readyz") == (200, b'{"ready":true}')
    status, ready = call(mport, "GET", "/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert json.loads(ready) == {"ready": True, "redis": "ok", "store": "ok"}

    # a worker with a work-horse per job: the backfill's and the webhook jobs' series
    from nexus_core.sync import SyncOptions, start_sync

    start_sync(world["redis"], world["store"], "backfill", "sim", "t1", "i1", None,
               opts=SyncOptions())
    # the default layout: one RQ WorkerPool per queue (webhook x2, backfill x1 at
    # INTEGRATION_WORKER_CONCURRENCY=1), each pool in a process of its own
    world["env"]["INTEGRATION_WORKER_CONCURRENCY"] = "1"
    worker, worker_log = world["start"](
        [sys.executable, str(LAUNCHER), "run-worker", "-q", "webhook,backfill",
         "--metrics-port", str(wport)], "worker")

    def scrape():
        status, text = call(wport, "GET", "/metrics",
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, text
        return samples(text)

    def done():
        assert worker.poll() is None, worker_log.read_text()
        if not _up(wport):
            return None
        got = scrape()
        finished = (value(got, "nexus_operation_duration_seconds_count", operation="backfill",
                          outcome="succeeded") == 1
                    and value(got, "nexus_operation_duration_seconds_count",
                              operation="webhook") == sent)
        return got if finished else None

    try:
        got = wait_for(done, 120, "the backfill and the webhook jobs")
    except AssertionError:
        seen = {k: v for k, v in scrape().items()
                if k[0].endswith("_count") and "operation" in k[0] or "sync" in k[0]}
        raise AssertionError(f"{seen}\n{worker_log.read_text()[-3000:]}") from None
    assert value(got, "nexus_sync_pages_total", provider="sim", operation="backfill") == 5
    assert value(got, "nexus_sync_records_total", provider="sim", operation="backfill") == 250
    assert value(got, "nexus_operation_duration_seconds_count", provider="example",
                 operation="webhook", outcome="succeeded") == sent
    assert value(got, "nexus_operation_duration_seconds_sum", provider="sim",
                 operation="backfill") > 0
    assert value(got, "nexus_http_requests_total", provider="sim", status="200") >= 5
    assert value(got, "nexus_queue_wait_seconds_count", queue="integration-webhook") == sent
    assert value(got, "nexus_queue_wait_seconds_count", queue="integration-backfill") == 1
    assert value(got, "nexus_queue_jobs", queue="integration-webhook", state="queued") == 0
    assert value(got, "nexus_dlq_jobs", queue="integration-backfill") == 0
    assert value(got, "nexus_workers", queue="integration-backfill") == 1
    # Each job ran in a work-horse of its own; the horses of a worker share one set of
    # files: the directory does not grow with the number of jobs.
    worker_dir = next((world["tmp"] / "metrics").glob("nexus-worker-*"))
    names = sorted(f.name for f in worker_dir.glob("*.db"))
    writers = {n.rsplit("_", 1)[1].removesuffix(".db") for n in names}
    assert len(writers) <= 9, names  # the command, 2 pools, 3 workers and their horses
    assert sum("h" in w for w in writers) <= 3, names
