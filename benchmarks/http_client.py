"""HTTP client benchmark: overhead of ProviderSession, accuracy of the shared rate limiter.

    .venv/bin/python benchmarks/http_client.py           # 15 overhead rounds, 20 s accuracy run
    .venv/bin/python benchmarks/http_client.py --quick   # 6 rounds, 5 s

1. Overhead: GET of a 100-record JSON page (about 8 KB) from a local server, parsed with
   ``.json()``, by a plain ``requests.Session`` and by a ``ProviderSession`` (shared limiter on
   with a limit never reached, breaker on, bearer auth, JSON logging of every request to
   /dev/null, metrics) — same server, same run, alternating rounds. Prints the median ratio of
   throughputs (target >= 0.85).
2. Accuracy: 4 worker processes share a 10 req/s, burst-10 limit for 20 s against a local
   server that enforces the same limit (token bucket on arrival) and answers 429 past it.
   Prints admitted-in-window / (rate x duration + burst) (target 0.95-1.00, never above) and
   the number of 429s received (target 0).

The provider server runs in its own process (so its work is not billed to the client) and the
script starts its own redis-server (nexus_core.testing.RedisServer).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE, BURST, WORKERS = 10.0, 10, 4
PAGE = json.dumps({
    "results": [
        {"id": str(1000 + i), "properties": {"email": f"user{i}@example.com",
                                             "firstname": f"First{i}", "lastname": f"Last{i}",
                                             "lifecyclestage": "lead"},
         "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-06-01T00:00:00Z",
         "archived": False}
        for i in range(100)
    ],
    "paging": {"next": {"after": "NTI1Cg%3D%3D"}},
}).encode()


# -- the provider server (its own process) ----------------------------------------------------


class _Limited:
    """The provider's limit: a token bucket (RATE/s, BURST) charged on arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset(0.0, 0.0)

    def reset(self, start: float, end: float) -> None:
        self.tokens, self.last = float(BURST), None
        self.window = (start, end)
        self.admitted = self.admitted_in_window = self.rejected = 0

    def take(self) -> bool:
        now = time.time()
        with self.lock:
            if self.last is not None:
                self.tokens = min(BURST, self.tokens + (now - self.last) * RATE)
            self.last = now
            if self.tokens < 1:
                self.rejected += 1
                return False
            self.tokens -= 1
            self.admitted += 1
            if self.window[0] <= now <= self.window[1]:
                self.admitted_in_window += 1
            return True


LIMITED = _Limited()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _send(self, status: int, body: bytes, extra: str = "") -> None:
        self.wfile.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n".encode() + body
        )

    def do_GET(self) -> None:
        if self.path.startswith("/page"):
            self._send(200, PAGE)
        elif self.path.startswith("/limited"):
            if LIMITED.take():
                self._send(200, b'{"ok":true}')
            else:
                self._send(429, b'{"ok":false,"error":"ratelimited"}', "Retry-After: 1\r\n")
        elif self.path.startswith("/_stats"):
            self._send(200, json.dumps({
                "admitted": LIMITED.admitted, "admitted_in_window": LIMITED.admitted_in_window,
                "rejected": LIMITED.rejected}).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:  # /_reset?start=..&end=..
        from urllib.parse import parse_qs, urlsplit

        q = parse_qs(urlsplit(self.path).query)
        LIMITED.reset(float(q["start"][0]), float(q["end"][0]))
        self._send(200, b"{}")

    def log_message(self, *args: object) -> None:
        pass


def serve() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_port, flush=True)
    server.serve_forever()


# -- clients ----------------------------------------------------------------------------------


def _provider(rate: float, burst: int):
    from nexus_core.models import Provider, RateLimits, RetryConfig, Timeouts

    return Provider(
        id="bench", name="Bench CRM", version="0", base_url_env="BENCH_BASE_URL",
        rate_limits=RateLimits(rate, burst), timeouts=Timeouts(connect=5, read=10),
        retry=RetryConfig(max_retries=3, max_backoff=2),
    )


def _session(base_url: str, redis_url: str, rate: float, burst: int, install: str):
    import redis

    from nexus_core.config import load_settings
    from nexus_core.http import ProviderSession
    from nexus_core.models import Credentials

    settings = load_settings(environ={"BENCH_BASE_URL": base_url}, env_file=None)
    creds = Credentials(access_token="bench-token")
    client = redis.Redis.from_url(redis_url)
    session = ProviderSession(
        _provider(rate, burst), tenant_id="bench", install_id=install, account_id="acct-1",
        redis=client, credentials=lambda: creds, settings=settings,
    )
    return session, client


def worker(spec_json: str) -> None:
    """One accuracy worker: GET /limited until the deadline; prints its counts."""
    from loguru import logger

    from nexus_core.errors import RateLimited

    logger.remove()
    spec = json.loads(spec_json)
    session, client = _session(spec["base_url"], spec["redis_url"], RATE, BURST, spec["install"])
    ok = limited = 0
    time.sleep(max(0.0, spec["start"] - time.time()))
    while time.time() < spec["end"]:
        try:
            session.get("/limited/items")
            ok += 1
        except RateLimited as exc:  # not expected: waits stay far below the 5 s threshold
            limited += 1
            time.sleep(min(exc.retry_after, max(0.0, spec["end"] - time.time())))
    session.close()
    client.close()
    print(json.dumps({"ok": ok, "rate_limited": limited}), flush=True)


def overhead(base_url: str, redis_url: str, rounds: int, n: int) -> dict[str, list[float]]:
    """Rounds of ``n`` GETs per client: plain requests.Session, ProviderSession, and
    requests.Session with ``trust_env=False`` (no per-request environment scan, which
    ProviderSession also avoids: the ratio to it is the pure cost of our additions)."""
    import requests

    from nexus_core.log import configure_logging

    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    configure_logging("INFO", "json", sink=devnull)
    ours, client = _session(base_url, redis_url, 1e6, 1_000_000, "overhead")
    plain = requests.Session()
    bare = requests.Session()
    bare.trust_env = False
    url = base_url + "/page"

    clients = {
        "plain": lambda: plain.get(url, timeout=(5, 10)),
        "ours": lambda: ours.get("/page"),
        "bare": lambda: bare.get(url, timeout=(5, 10)),
    }
    names = list(clients)

    def round_(count: int) -> dict[str, float]:
        # Interleaved request by request (rotating order), so that load from anything else on
        # the machine falls on all three clients alike; each client's time is summed.
        spent = dict.fromkeys(names, 0.0)
        clock = time.perf_counter
        for i in range(count):
            for name in names[i % 3:] + names[:i % 3]:
                started = clock()
                clients[name]().json()
                spent[name] += clock() - started
        return {name: count / spent[name] for name in names}

    round_(100)  # warm up: connections, scripts, imports
    ratios: dict[str, list[float]] = {"plain": [], "bare": []}
    for i in range(rounds):
        rps = round_(n)
        ratios["plain"].append(rps["ours"] / rps["plain"])
        ratios["bare"].append(rps["ours"] / rps["bare"])
        print(f"  round {i + 1:2d}: requests.Session {rps['plain']:6.0f} req/s, "
              f"ProviderSession {rps['ours']:6.0f} req/s (ratio {ratios['plain'][-1]:.3f}); "
              f"trust_env=False {rps['bare']:6.0f} req/s (ratio {ratios['bare'][-1]:.3f})",
              flush=True)
    ours.close()
    plain.close()
    bare.close()
    client.close()
    devnull.close()
    return ratios


def accuracy(base_url: str, redis_url: str, duration: float) -> dict:
    import requests

    start = time.time() + 3.0  # leaves the workers time to import
    end = start + duration
    with requests.Session() as s:
        s.post(f"{base_url}/_reset?start={start}&end={end}", timeout=5)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps({
                "base_url": base_url, "redis_url": redis_url, "install": f"w{i}",
                "start": start, "end": end})],
            stdout=subprocess.PIPE, text=True,
        )
        for i in range(WORKERS)
    ]
    workers = [json.loads(p.communicate(timeout=duration + 60)[0].strip().splitlines()[-1])
               for p in procs]
    with requests.Session() as s:
        stats = s.get(f"{base_url}/_stats", timeout=5).json()
    allowed = RATE * duration + BURST
    return {
        "admitted_in_window": stats["admitted_in_window"],
        "admitted_total": stats["admitted"],
        "allowed": allowed,
        "ratio": stats["admitted_in_window"] / allowed,
        "429s": stats["rejected"],
        "per_worker": [w["ok"] for w in workers],
        "rate_limited_raised": sum(w["rate_limited"] for w in workers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 rounds, 5 s accuracy run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.worker:
        return worker(args.worker)

    from nexus_core.testing import RedisServer

    rounds, n, duration = (6, 150, 5.0) if args.quick else (15, 300, 20.0)
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                              text=True)
    try:
        base_url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        with RedisServer() as redis_server:
            print(f"1. overhead: {rounds} rounds x 3 clients x {n} GETs of a 100-record page "
                  f"({len(PAGE)} B)")
            ratios = overhead(base_url, redis_server.url, rounds, n)
            median = statistics.median(ratios["plain"])
            verdict = "ok" if median >= 0.85 else "BELOW TARGET"
            print(f"   median throughput ratio ProviderSession / requests.Session: "
                  f"{median:.3f} (target >= 0.85: {verdict})")
            print(f"   (vs requests.Session(trust_env=False), which skips the per-request "
                  f"environment scan ProviderSession also skips: "
                  f"{statistics.median(ratios['bare']):.3f})")
            print(f"2. accuracy: {WORKERS} processes share {RATE:g} req/s burst {BURST} "
                  f"for {duration:g} s")
            acc = accuracy(base_url, redis_server.url, duration)
            ok = 0.95 <= acc["ratio"] <= 1.0 and acc["429s"] == 0
            print(f"   admitted {acc['admitted_in_window']} / {acc['allowed']:g} allowed = "
                  f"{acc['ratio']:.3f} (target 0.95-1.00); 429s received: {acc['429s']} "
                  f"(target 0) -> {'ok' if ok else 'OFF TARGET'}")
            print(f"   per worker: {acc['per_worker']}; admitted incl. after the window: "
                  f"{acc['admitted_total']}; RateLimited raised: {acc['rate_limited_raised']}")
    finally:
        server.terminate()
        server.wait(10)
        server.stdout.close()


if __name__ == "__main__":
    main()
