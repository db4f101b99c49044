"""Webhook end to end: events per second from the first POST to the last event in the sink.

    python benchmarks/webhook_e2e.py                 # 3 rounds, fork-per-job and --no-fork
    python benchmarks/webhook_e2e.py --quick         # 1 round of each, fewer deliveries

`nexus serve --workers 2` receives signed HubSpot-style deliveries (100 events each, the
deliveries of benchmarks/webhook_ingress.py) from a pool of Python client processes, and ONE
`nexus run-worker -q webhook` process (RQ's fork-per-job Worker, or `--no-fork`'s SimpleWorker)
consumes `integration-webhook`: the provider's `handle_webhook` parses the delivery into
`WebhookEvent`s and a counting sink (a `process_events` hookimpl doing INCRBY in Redis) counts
them. Both plugins are registered through a real `nexus` entry point (a throwaway distribution
on PYTHONPATH), as an installed plugin would be. The clock runs from the first POST until the
counter reaches deliveries x 100; the worker is started before the first POST.

Prints events/s per round (target >= 10,000 with one worker process), the worker's drain rate
after the last POST, and the median with the raw values. It starts its own redis-server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import webhook_ingress as wi  # noqa: E402 - the same deliveries and helpers

COUNTER_KEY = "nexus-bench:events"

PLUGIN = '''
"""Benchmark plugins: a HubSpot-style provider and a counting process_events sink."""
import json
import os
from datetime import UTC, datetime

from nexus_core import BaseConnector, Provider, SyncPage, WebhookConfig, WebhookEvent, hookimpl


class BenchHubSpot(BaseConnector):
    provider = Provider(
        id="hubspot-bench", name="HubSpot-style (benchmark)", version="0",
        auth_type="none", streams=("contacts",),
        webhook=WebhookConfig(scheme="hubspot-v3", secret_envs=("BENCH_WEBHOOK_SECRET",),
                              account_id_field="portalId", delivery_id_field="eventId"),
    )

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)

    def handle_webhook(self, ctx, request):
        return [
            WebhookEvent(
                id=str(e["eventId"]), type=e["subscriptionType"], provider="hubspot-bench",
                object_id=str(e["objectId"]), account_id=str(e["portalId"]),
                occurred_at=datetime.fromtimestamp(e["occurredAt"] / 1000, UTC), payload=e,
            )
            for e in json.loads(request.body)
        ]


COUNTER_KEY = "nexus-bench:events"
_client = []


class Counter:
    @hookimpl
    def process_events(self, ctx, events):
        if not _client:
            import redis

            _client.append(redis.Redis.from_url(os.environ["REDIS_URL"]))
        _client[0].incrby(COUNTER_KEY, len(events))


COUNTER = Counter()
'''


def _plugin_dist(root: Path) -> None:
    """A minimal installed distribution (``*.dist-info`` + module) declaring the two plugins as
    ``nexus`` entry points; importlib.metadata finds it on PYTHONPATH."""
    (root / "nexus_bench_e2e.py").write_text(PLUGIN)
    info = root / "nexus_bench_e2e-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nexus-bench-e2e\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[nexus]\nhubspot-bench = nexus_bench_e2e:BenchHubSpot\n"
        "bench-counter = nexus_bench_e2e:COUNTER\n"
    )


def _post(port: int, worker: int, first: int, count: int, run: int, out: mp.Queue) -> None:
    statuses: dict[int, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for seq in range(first, first + count):
        body = wi._body(seq, worker, run)
        for _attempt in range(5):
            try:
                conn.request("POST", wi.PATH, body=body, headers=wi._headers(body))
                resp = conn.getresponse()
                resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                status = -1
            if status == 200:
                break
        statuses[status] = statuses.get(status, 0) + 1
    conn.close()
    out.put(statuses)


def _nexus(*args: str, env: dict, log: Path) -> subprocess.Popen:
    nexus = Path(sys.executable).with_name("nexus")
    with log.open("ab") as fh:
        return subprocess.Popen([str(nexus), *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def one_round(env: dict, client, deliveries: int, clients: int, no_fork: bool, tmp: Path) -> dict:
    client.flushdb()
    from nexus_core.testing import free_port

    port = free_port()
    log = tmp / "e2e.log"
    server = _nexus("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                    env=env, log=log)
    worker_args = ["run-worker", "--workers", "1", "-q", "webhook"] + \
        (["--no-fork"] if no_fork else [])
    worker = _nexus(*worker_args, env=env, log=log)
    try:
        wi._wait_up(port, server)
        time.sleep(1.0)  # the worker is up and blocked on the queue
        if worker.poll() is not None:
            raise SystemExit(f"worker exited: {log.read_text()[-2000:]}")
        out: mp.Queue = mp.Queue()
        per = deliveries // clients
        run = time.monotonic_ns() // 1000 % 1_000_000
        procs = [mp.Process(target=_post, args=(port, w, 0, per, run, out))
                 for w in range(clients)]
        expected = per * clients * 100
        start = time.perf_counter()
        for p in procs:
            p.start()
        statuses: dict[int, int] = {}
        for _ in procs:
            for k, v in out.get().items():
                statuses[k] = statuses.get(k, 0) + v
        posted = time.perf_counter()
        for p in procs:
            p.join()
        at_posted = int(client.get(COUNTER_KEY) or 0)
        last, moved = at_posted, time.perf_counter()
        while True:
            done = int(client.get(COUNTER_KEY) or 0)
            now = time.perf_counter()
            if done >= expected:
                break
            if done != last:
                last, moved = done, now
            elif now - moved > 30:  # stalled: a failing job (see the log), not a slow worker
                break
            time.sleep(0.005)
        end = time.perf_counter()
        if statuses.get(200, 0) != per * clients:
            raise SystemExit(f"not every delivery was accepted: {statuses}")
        if done != expected:
            raise SystemExit(f"the sink counted {done} of {expected} events: "
                             f"{log.read_text()[-3000:]}")
        drain_events = expected - at_posted
        return {
            "events_per_s": expected / (end - start),
            "seconds": end - start,
            "post_seconds": posted - start,
            "drain_events_per_s": drain_events / (end - posted) if end > posted else float("nan"),
            "events": expected,
        }
    finally:
        for proc in (worker, server):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in (worker, server):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--deliveries", type=int, default=None,
                        help="deliveries per round (100 events each)")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--mode", choices=("both", "fork", "no-fork"), default="both")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    deliveries = args.deliveries or (300 if args.quick else 1000)
    modes = {"both": (False, True), "fork": (False,), "no-fork": (True,)}[args.mode]

    import redis as redis_lib

    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.store import Store
    from nexus_core.testing import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-e2e-"))
    plugins = tmp / "site"
    plugins.mkdir()
    _plugin_dist(plugins)
    key = generate_key()
    db = f"sqlite:///{tmp / 'bench.db'}"
    store = Store.from_url(db, KeyRing.from_string(key))
    for i, portal in enumerate(wi.PORTALS):
        store.add_installation(f"tenant-{i}", f"install-{i}", "hubspot-bench", account_id=portal)
    store.close()

    rows = []
    with RedisServer() as server:
        env = {**os.environ, "REDIS_URL": server.url, "NEXUS_DATABASE_URL": db,
               "NEXUS_ENCRYPTION_KEYS": key, "BENCH_WEBHOOK_SECRET": wi.SECRET,
               "NEXUS_PUBLIC_URL": wi.PUBLIC_URL, "LOG_LEVEL": "WARNING", "NEXUS_SINK": "null",
               "NEXUS_LOAD_PLUGINS": "hubspot-bench,bench-counter,sink-null",
               "PYTHONPATH": os.pathsep.join(
                   p for p in (str(plugins), os.environ.get("PYTHONPATH")) if p)}
        client = redis_lib.Redis.from_url(server.url)
        for r in range(rounds):
            for no_fork in modes:
                mode = "no-fork" if no_fork else "fork"
                res = one_round(env, client, deliveries, args.clients, no_fork, tmp)
                res.update(round=r + 1, mode=mode)
                rows.append(res)
                print(f"round {r + 1} {mode:7}  {res['events_per_s']:9.0f} events/s  "
                      f"({res['events']} events in {res['seconds']:.2f} s; POSTs took "
                      f"{res['post_seconds']:.2f} s; drain {res['drain_events_per_s']:.0f} "
                      f"events/s)", flush=True)
        client.close()
    summary = {}
    for no_fork in modes:
        mode = "no-fork" if no_fork else "fork"
        raw = [round(r["events_per_s"]) for r in rows if r["mode"] == mode]
        drain = [round(r["drain_events_per_s"]) for r in rows if r["mode"] == mode]
        summary[mode] = {"events_per_s_median": statistics.median(raw), "raw": raw,
                         "drain_events_per_s_raw": drain}
    print(json.dumps({"deliveries": deliveries, "events_per_delivery": 100, **summary}))
    for mode, s in summary.items():
        verdict = "meets" if s["events_per_s_median"] >= 10_000 else "MISSES"
        print(f"{mode}: {s['events_per_s_median']:.0f} events/s end to end with one worker "
              f"process ({verdict} the 10,000 target)")


if __name__ == "__main__":
    main()
