"""Webhook ingress throughput: `nexus serve` vs a hand-written Falcon + RQ ingress (and a bare WSGI
endpoint, for information) under the same gunicorn config.

    python benchmarks/webhook_ingress.py            # 3 rounds of 10 s per server
    python benchmarks/webhook_ingress.py --quick    # 1 round of 3 s
    python benchmarks/webhook_ingress.py --client python   # without wrk

Each request is a signed HubSpot v3 delivery: a JSON array of 100 events (about 28 KB) for one
portal, with fresh event ids (so nothing is deduplicated away). The nexus server verifies the
signature, checks the timestamp window, parses, routes the portal to its installation through a
SQLite store, dedupes in Redis and enqueues one RQ job per delivery. The hand-written server is
what a competent user would write with the same libraries (``handwritten_app``: Falcon, HMAC
with ``hmac.compare_digest``, timestamp check, ``SET NX`` on the body's digest, ``Queue.enqueue``
of the body). The bare server only reads the body and answers 200. All run as gunicorn with the
options `nexus serve --workers 2` uses.

The load generator is the same for both servers and shares the 2 cores with them, so it should
cost little: `wrk` when installed (a Lua script builds and signs each delivery, HMAC through
libcrypto via LuaJIT's FFI), else a pool of Python client processes (about 4x the CPU per
request). Rounds are interleaved and alternate which server goes first; medians are reported
with the raw values.

Prints requests/s, p50/p99 latency per server, the throughput ratio nexus / hand-written (target
>= 1.2) and nexus / bare (information), and checks that every 200 is a job in the queue
(jobs/200 >= 1: requests still in flight when wrk stops are enqueued but not counted). It
starts its own redis-server. The end-to-end figure (POST to process_events) is
benchmarks/webhook_e2e.py.
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
import shutil
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
            auth_type="none", streams=("contacts",),
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


def handwritten_app():
    """The ingress a competent user would write with the same libraries: a Falcon resource that
    checks the HubSpot v3 signature (``hmac.compare_digest``) and timestamp, dedupes on the
    body's digest with ``SET NX`` and enqueues the body with RQ's ``Queue.enqueue`` (JSON)."""
    import falcon
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    secret = os.environ["BENCH_WEBHOOK_SECRET"].encode()
    public = os.environ["NEXUS_PUBLIC_URL"]
    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    queue = Queue("handwritten-webhooks", connection=connection, serializer=JSONSerializer)

    class Hooks:
        def on_post(self, req, resp):
            body = req.bounded_stream.read()
            ts = req.get_header("X-HubSpot-Request-Timestamp") or "0"
            if abs(time.time() * 1000 - int(ts)) > 300_000:
                raise falcon.HTTPUnauthorized(title="stale")
            msg = b"POST" + (public + req.path).encode() + body + ts.encode()
            expected = base64.b64encode(hmac.new(secret, msg, hashlib.sha256).digest()).decode()
            if not hmac.compare_digest(expected, req.get_header("X-HubSpot-Signature-v3") or ""):
                raise falcon.HTTPUnauthorized(title="bad signature")
            seen = "handwritten:seen:" + hashlib.sha256(body).hexdigest()
            if connection.set(seen, b"1", nx=True, ex=3 * 24 * 3600):
                queue.enqueue("handwritten.handle_delivery", body.decode())
            resp.media = {"ok": True}

    app = falcon.App()
    app.add_route(PATH, Hooks())
    return app


def serve_handwritten(port: int, threads: int) -> None:
    from nexus_core.commands.serve import gunicorn_options, run_gunicorn

    run_gunicorn(handwritten_app, gunicorn_options("127.0.0.1", port, 2, threads, 30))


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
    """The Python load generator: ``clients`` processes, one keep-alive connection each."""
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


#: wrk script: the same deliveries as ``_body``/``_headers`` (template, unique event ids, portal
#: rotation, HubSpot v3 signature), built and signed inside wrk (HMAC through libcrypto via
#: LuaJIT's FFI), so the load generator costs a fraction of the Python client's CPU.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n);
]]
local loaded, crypto = pcall(ffi.load, "crypto")
if not loaded then crypto = ffi.load("libcrypto.so.3") end
local cfg = dofile(os.getenv("NEXUS_WRK_CONFIG"))
local md = ffi.new("unsigned char[32]")
local mdlen = ffi.new("unsigned int[1]")
local b64 = ffi.new("unsigned char[64]")
local sha256 = crypto.EVP_sha256()

local function sign(msg)
  crypto.HMAC(sha256, cfg.secret, #cfg.secret, msg, #msg, md, mdlen)
  return ffi.string(b64, crypto.EVP_EncodeBlock(b64, md, 32))
end

local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

seq, ok200, other = 0, 0, 0

function request()
  seq = seq + 1
  local prefix = string.format("%d%02d%07d", cfg.run, tid, seq)
  local portal = cfg.portals[(seq + tid) % #cfg.portals + 1]
  local buf = {}
  for i, p in ipairs(cfg.parts) do
    if p == 1 then buf[i] = prefix elseif p == 2 then buf[i] = portal else buf[i] = p end
  end
  local body = table.concat(buf)
  local ts = tostring(os.time() * 1000)
  return wrk.format("POST", cfg.path, {
    ["Content-Type"] = "application/json",
    ["X-HubSpot-Signature-v3"] = sign("POST" .. cfg.url .. body .. ts),
    ["X-HubSpot-Request-Timestamp"] = ts,
  }, body)
end

function response(status, headers, body)
  if status == 200 then ok200 = ok200 + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("ok200"); bad = bad + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'NEXUS_WRK {"ok": %d, "other": %d, "errors": %d, "duration_us": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n', ok, bad,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua(value: str | int) -> str:
    return str(value) if isinstance(value, int) else "[==[" + value + "]==]"


def _wrk_config(path: Path, run: int) -> None:
    """The template as Lua: text pieces, 1 where the event-id prefix goes, 2 for the portal."""
    parts: list[str | int] = []
    for i, chunk in enumerate(TEMPLATE.decode().split("9876543210")):
        if i:
            parts.append(1)
        for j, piece in enumerate(chunk.split("1234567")):
            if j:
                parts.append(2)
            if piece:
                parts.append(piece)
    path.write_text(
        f"return {{secret={_lua(SECRET)}, url={_lua(PUBLIC_URL + PATH)}, path={_lua(PATH)}, "
        f"run={run}, portals={{{','.join(map(_lua, PORTALS))}}}, "
        f"parts={{{','.join(map(_lua, parts))}}}}}"
    )


def load_wrk(port: int, clients: int, seconds: float, warmup: float, tmp: Path) -> dict:
    """wrk with one thread and ``clients`` connections, the same deliveries as ``load``."""
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)

    def run(duration: float) -> dict:
        cfg = tmp / "cfg.lua"
        _wrk_config(cfg, time.monotonic_ns() // 1000 % 100_000 + 1)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
             "-s", str(script), f"http://127.0.0.1:{port}/"],
            env={**os.environ, "NEXUS_WRK_CONFIG": str(cfg)}, capture_output=True, text=True,
            check=True,
        ).stdout
        line = next(x for x in out.splitlines() if x.startswith("NEXUS_WRK "))
        return json.loads(line.removeprefix("NEXUS_WRK "))

    warm = run(warmup) if warmup else {"ok": 0}
    res = run(seconds)
    statuses = {200: res["ok"]}
    if res["other"]:
        statuses[0] = res["other"]  # wrk does not say which status
    if res["errors"]:
        statuses[-1] = res["errors"]
    return {
        "rps": res["ok"] / (res["duration_us"] / 1e6),
        "p50_ms": res["p50_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "statuses": statuses,
        "ok": res["ok"],
        "ok_total": res["ok"] + warm["ok"],
    }


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
    parser.add_argument("--clients", type=int, default=4,
                        help="concurrent connections (wrk) or client processes (python)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk when installed (cheap), else Python processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="gunicorn threads per worker, both servers (nexus serve --threads)")
    parser.add_argument("--serve-nexus", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-handwritten", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_nexus:
        return serve_nexus(args.serve_nexus, args.threads)
    if args.serve_bare:
        return serve_bare(args.serve_bare, args.threads)
    if args.serve_handwritten:
        return serve_handwritten(args.serve_handwritten, args.threads)

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

    client_kind = args.client
    if client_kind == "auto":
        client_kind = "wrk" if shutil.which("wrk") else "python"
    with RedisServer() as server:
        env = {**os.environ, "REDIS_URL": server.url, "NEXUS_DATABASE_URL": db,
               "NEXUS_ENCRYPTION_KEYS": key, "BENCH_WEBHOOK_SECRET": SECRET,
               "NEXUS_PUBLIC_URL": PUBLIC_URL, "LOG_LEVEL": "WARNING",
               "NEXUS_LOAD_PLUGINS": ""}
        client = redis_lib.Redis.from_url(server.url)
        rows = []
        for r in range(rounds):
            # interleaved, rotating which server goes first (the machine's noise drifts)
            kinds = ["bare", "handwritten", "nexus"]
            for kind in kinds[r % 3:] + kinds[:r % 3]:
                port = free_port()
                proc = _start(kind, port, args.threads, env)
                try:
                    client.flushdb()
                    if client_kind == "wrk":
                        result = load_wrk(port, args.clients, seconds, warmup, tmp)
                    else:
                        result = load(port, args.clients, seconds, warmup)
                    if kind != "bare":
                        from nexus_core.queues import queue

                        name = "integration-webhook" if kind == "nexus" else \
                            "handwritten-webhooks"
                        jobs = len(queue(name, client))
                        result["jobs_per_200"] = round(jobs / max(1, result["ok_total"]), 3)
                finally:
                    _stop(proc)
                result.update(round=r + 1, server=kind)
                rows.append(result)
                print(f"round {r + 1} {kind:11}  {result['rps']:8.1f} req/s  "
                      f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms  "
                      f"statuses {result['statuses']}"
                      + (f"  jobs/200 {result['jobs_per_200']}" if kind != "bare" else ""),
                      flush=True)
        client.close()

    def raw(kind: str, field: str) -> list[float]:
        return [round(r[field], 2) for r in rows if r["server"] == kind]

    by_round = {(r["round"], r["server"]): r for r in rows}

    def ratios_to(base: str) -> list[float]:
        return [round(by_round[(i, "nexus")]["rps"] / by_round[(i, base)]["rps"], 3)
                for i in range(1, rounds + 1)]

    med = statistics.median
    vs_hand, vs_bare = ratios_to("handwritten"), ratios_to("bare")
    summary = {
        "client": client_kind, "rounds": rounds, "seconds": seconds, "clients": args.clients,
        "threads": args.threads, "events_per_request": 100,
        "bare_rps": round(med(raw("bare", "rps")), 1),
        "handwritten_rps": round(med(raw("handwritten", "rps")), 1),
        "nexus_rps": round(med(raw("nexus", "rps")), 1),
        "nexus_events_per_s": round(med(raw("nexus", "rps")) * 100),
        "ratio_vs_handwritten_median": round(med(vs_hand), 3), "ratios_vs_handwritten": vs_hand,
        "ratio_vs_bare_median": round(med(vs_bare), 3), "ratios_vs_bare": vs_bare,
        "p99_ms": {k: round(med(raw(k, "p99_ms")), 2) for k in ("bare", "handwritten", "nexus")},
        "raw": {k: {"rps": raw(k, "rps"), "p99_ms": raw(k, "p99_ms")}
                for k in ("bare", "handwritten", "nexus")},
        "jobs_per_200": {k: [r["jobs_per_200"] for r in rows if r["server"] == k]
                         for k in ("handwritten", "nexus")},
    }
    print(json.dumps(summary))
    verdict = "meets" if summary["ratio_vs_handwritten_median"] >= 1.2 else "MISSES"
    print(f"throughput nexus / hand-written Falcon+RQ = "
          f"{summary['ratio_vs_handwritten_median']:.2f} ({verdict} the 1.2 target); "
          f"nexus / bare endpoint = {summary['ratio_vs_bare_median']:.2f} (information)")


if __name__ == "__main__":
    main()
