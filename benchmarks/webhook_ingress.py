"""Webhook ingress throughput: `nexus serve` vs a bare WSGI endpoint under the same gunicorn config.

    python benchmarks/webhook_ingress.py            # 3 rounds of 10 s per server
    python benchmarks/webhook_ingress.py --quick    # 1 round of 3 s

Each request is a signed HubSpot v3 delivery: a JSON array of 100 events (about 20 KB) for one
portal, with fresh event ids (so nothing is deduplicated away). The nexus server verifies the
signature, checks the timestamp window, parses, routes the portal to its installation through a
SQLite store, dedupes in Redis and enqueues one RQ job per delivery; the bare server only reads
the body and answers 200. Both run as gunicorn with the options `nexus serve --workers 2` uses.
The load generator is a pool of client processes on this machine (the same for both servers).

Prints requests/s, p50/p99 latency per server, the throughput ratio (target >= 0.6), and
checks that every 200 from nexus is a job in the queue. It starts its own redis-server. The
end-to-end events/s figure (POST to process_events) needs the [sync] worker and is not measured
here.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
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

SECRET = "bench-client-secret"
PUBLIC_URL = "http://bench.local"
PATH = "/webhooks/hubspot-bench"
PORTALS = [str(1000 + i) for i in range(20)]


# -- the servers (run in a subprocess of this script) --------------------------------------------


def _bench_provider():
    from nexus_core import BaseConnector, Provider, SyncPage, WebhookConfig

    class BenchHubSpot(BaseConnector):
        provider = Provider(
            id="hubspot-bench", name="HubSpot-style (benchmark)", version="0",
            webhook=WebhookConfig(scheme="hubspot-v3", secret_envs=("BENCH_WEBHOOK_SECRET",),
                                  account_id_field="portalId", delivery_id_field="eventId"),
        )

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    return BenchHubSpot


def serve_nexus(port: int, threads: int) -> None:
    """`nexus serve --workers 2` with the benchmark provider registered before the fork."""
    from nexus_core.cli import main
    from nexus_core.plugins import load_plugins

    info = load_plugins().register(_bench_provider(), "hubspot-bench")
    assert info.status == "ok", info.reason
    main(["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
          "--threads", str(threads)])


def serve_bare(port: int, threads: int) -> None:
    from nexus_core.commands.serve import gunicorn_options, run_gunicorn

    def factory():
        def app(environ, start_response):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"].read(length)
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", "11")])
            return [b'{"ok":true}']

        return app

    run_gunicorn(factory, gunicorn_options("127.0.0.1", port, 2, threads, 30))


# -- the load generator ---------------------------------------------------------------------------


def _template() -> bytes:
    events = [
        {"eventId": 9876543210_00 + i, "subscriptionId": 12345, "portalId": 1234567,
         "occurredAt": 1564113600000, "subscriptionType": "contact.propertyChange",
         "attemptNumber": 0, "objectId": 5000 + i, "propertyName": "lifecyclestage",
         "propertyValue": "customer", "changeSource": "CRM", "appId": 54321}
        for i in range(100)
    ]
    return json.dumps(events).encode()


TEMPLATE = _template()


def _body(seq: int, worker: int, run: int = 0) -> bytes:
    """A fresh delivery: event ids are unique per (run, worker, seq), so none is a replay. Built
    from one template so the load generator spends little CPU (it shares the machine)."""
    portal = PORTALS[(seq + worker) % len(PORTALS)]
    prefix = str(((run * 64 + worker) * 10_000_000 + seq) + 1).encode()
    return TEMPLATE.replace(b"9876543210", prefix).replace(b"1234567", portal.encode())


def _headers(body: bytes) -> dict[str, str]:
    ts = str(int(time.time() * 1000))
    msg = b"POST" + (PUBLIC_URL + PATH).encode() + body + ts.encode()
    sig = base64.b64encode(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest()).decode()
    return {"Content-Type": "application/json", "X-HubSpot-Signature-v3": sig,
            "X-HubSpot-Request-Timestamp": ts}


def _client(port: int, worker: int, start: float, stop: float, out: mp.Queue, run: int) -> None:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    seq = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.time() < start:
        time.sleep(0.001)
    while True:
        body = _body(seq, worker, run)
        headers = _headers(body)
        seq += 1
        t0 = time.perf_counter()
        if time.time() >= stop:
            break
        try:
            conn.request("POST", PATH, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            status = -1
        latencies.append(time.perf_counter() - t0)
        statuses[status] = statuses.get(status, 0) + 1
    conn.close()
    out.put((latencies, statuses))


def load(port: int, clients: int, seconds: float, warmup: float) -> dict:
    out: mp.Queue = mp.Queue()
    start = time.time() + 0.5
    warm_ok = 0
    if warmup:  # discarded, except that its 200s are jobs too
        warm = _run_clients(port, clients, start, start + warmup, out)
        warm_ok = sum(st.get(200, 0) for _, st in warm)
        start = time.time() + 0.3
    results = _run_clients(port, clients, start, start + seconds, out)
    latencies = sorted(x for lat, _ in results for x in lat)
    statuses: dict[int, int] = {}
    for _, st in results:
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
    ok = statuses.get(200, 0)
    return {
        "rps": ok / seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else float("nan"),
        "statuses": statuses,
        "ok": ok,
        "ok_total": ok + warm_ok,
    }


def _run_clients(port, clients, start, stop, out):
    run = time.monotonic_ns() // 1000 % 1_000_000
    procs = [mp.Process(target=_client, args=(port, w, start, stop, out, run))
             for w in range(clients)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return results


# -- orchestration --------------------------------------------------------------------------------


def _wait_up(port: int, proc: subprocess.Popen, path: str = "/healthz") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start within 30 s")


def _start(kind: str, port: int, threads: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, f"--serve-{kind}", str(port), "--threads", str(threads)],
        env=env,
        start_new_session=True,
    )
    _wait_up(port, proc)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short round (3 s per server)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--clients", type=int, default=4, help="load generator processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="gunicorn threads per worker, both servers (nexus serve --threads)")
    parser.add_argument("--serve-nexus", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_nexus:
        return serve_nexus(args.serve_nexus, args.threads)
    if args.serve_bare:
        return serve_bare(args.serve_bare, args.threads)

    seconds = args.seconds or (3.0 if args.quick else 10.0)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = 1.0 if args.quick else 2.0

    import redis as redis_lib

    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.store import Store
    from nexus_core.testing import RedisServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    key = generate_key()
    db = f"sqlite:///{tmp / 'bench.db'}"
    store = Store.from_url(db, KeyRing.from_string(key))
    for i, portal in enumerate(PORTALS):
        store.add_installation(f"tenant-{i}", f"install-{i}", "hubspot-bench", account_id=portal)
    store.close()

    with RedisServer() as server:
        env = {**os.environ, "REDIS_URL": server.url, "NEXUS_DATABASE_URL": db,
               "NEXUS_ENCRYPTION_KEYS": key, "BENCH_WEBHOOK_SECRET": SECRET,
               "NEXUS_PUBLIC_URL": PUBLIC_URL, "LOG_LEVEL": "WARNING",
               "NEXUS_LOAD_PLUGINS": ""}
        client = redis_lib.Redis.from_url(server.url)
        rows = []
        for r in range(rounds):
            for kind in ("bare", "nexus"):
                port = free_port()
                proc = _start(kind, port, args.threads, env)
                try:
                    client.flushdb()
                    result = load(port, args.clients, seconds, warmup)
                    if kind == "nexus":
                        from nexus_core.queues import queue

                        jobs = len(queue("integration-webhook", client))
                        result["jobs_per_200"] = round(jobs / max(1, result["ok_total"]), 3)
                finally:
                    _stop(proc)
                result.update(round=r + 1, server=kind)
                rows.append(result)
                print(f"round {r + 1} {kind:5}  {result['rps']:8.1f} req/s  "
                      f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
                      f"statuses {result['statuses']}"
                      + (f"  jobs/200 {result['jobs_per_200']}" if kind == "nexus" else ""),
                      flush=True)
        client.close()

    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in rows if r["server"] == kind)

    ratios = [n["rps"] / b["rps"] for b, n in zip(rows[::2], rows[1::2], strict=True)]
    summary = {
        "rounds": rounds, "seconds": seconds, "clients": args.clients, "threads": args.threads,
        "events_per_request": 100,
        "bare_rps": round(med("bare", "rps"), 1), "nexus_rps": round(med("nexus", "rps"), 1),
        "nexus_events_per_s": round(med("nexus", "rps") * 100),
        "ratio_median": round(statistics.median(ratios), 3),
        "bare_p99_ms": round(med("bare", "p99_ms"), 2),
        "nexus_p99_ms": round(med("nexus", "p99_ms"), 2),
        "nexus_p50_ms": round(med("nexus", "p50_ms"), 2),
    }
    print(json.dumps(summary))
    verdict = "meets" if summary["ratio_median"] >= 0.6 else "MISSES"
    print(f"throughput ratio nexus/bare = {summary['ratio_median']:.2f} ({verdict} the 0.6 "
          f"target); nexus p99 {summary['nexus_p99_ms']} ms vs bare {summary['bare_p99_ms']} ms")


if __name__ == "__main__":
    main()
