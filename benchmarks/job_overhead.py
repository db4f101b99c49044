"""Job throughput: the engine's webhook and delta jobs vs the hand-written jobs a competent user
would write with RQ alone (benchmarks/_handwritten.py), fork-per-job and ``--no-fork``.

* webhook: a 100-event HubSpot-style delivery (28 KB). Nexus: enqueued by the ingress's path
  (``schedule_webhook_job``: body in the job's hash), run by ``nexus run-worker -q webhook``;
  the provider's ``handle_webhook`` parses it into ``WebhookEvent`` objects and the null sink
  takes them. Hand-written: ``rq`` job ``webhook(body)`` parsing the same body into the same
  objects and calling a no-op sink.
* delta: one installation per job whose provider answers an empty page with a new cursor.
  Nexus: ``run_delta`` (context, lease, shared rate limiter and breaker, GET through
  ``ctx.http``, compare-and-set commit of the cursor in the SQLite store). Hand-written: GET
  the changes with requests, UPDATE a cursor row in SQLite (same file mode).

Both sides run on the same Redis and the same RQ worker class (``Worker`` or ``SimpleWorker``),
the hand-written worker importing its job module before forking. Throughput is N jobs over the
span from the first job's start to the last job's end (RQ's own timestamps): process start-up is
excluded on both sides. Rounds interleave the two sides, alternating which goes first; each
round's ratio nexus/hand-written is reported, and their median.

    python benchmarks/job_overhead.py [--quick] [-n N] [--repeat R] [--only webhook|delta]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report, simulator  # noqa: E402

HERE = Path(__file__).resolve().parent


def _span(connection, queue_name: str) -> tuple[int, float]:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import queues

    q = queues.queue(queue_name, connection)
    ids = q.finished_job_registry.get_job_ids()
    jobs = [j for j in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer) if j]
    start = min(j.started_at for j in jobs)
    end = max(j.ended_at for j in jobs)
    return len(jobs), (end - start).total_seconds()


def _run(cmd: list[str], env: dict) -> None:
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])


def _deliveries(n: int) -> list[bytes]:
    """``n`` distinct deliveries (fresh event ids: none is a replay)."""
    import webhook_ingress as wi

    return [wi._body(i, 0) for i in range(n)]


def nexus_webhook(n: int, env: dict, no_fork: bool) -> float:
    from nexus_core import IntegrationService, WebhookRequest, queues, runtime
    from nexus_core.plugins import load_plugins
    from nexus_core.testing.simulator import paged_provider

    registry = load_plugins()
    if "sim" not in registry.providers:
        registry.register(paged_provider(), "sim")
    store = runtime.get_store()
    store.add_installation("t1", "i1", "sim", config={})
    service = IntegrationService(registry=registry)
    for body in _deliveries(n):
        service.schedule_webhook_job("sim", "t1", "i1", WebhookRequest(
            "POST", "http://bench/webhooks/sim/i1", {"Content-Type": "application/json"}, body))
    _run([sys.executable, str(HERE / "_nexus_worker.py"), "--log-level", "WARNING",
          "run-worker", "--workers", "1", "--burst", "--queues", "webhook",
          *(["--no-fork"] if no_fork else [])],
         env)
    done, seconds = _span(runtime.get_redis(), queues.WEBHOOK)
    assert done == n, (done, n)
    return n / seconds


def plain_webhook(n: int, env: dict, no_fork: bool) -> float:
    from nexus_core import queues, runtime

    redis = runtime.get_redis()
    q = queues.queue("bench-webhook", redis)
    for i, body in enumerate(_deliveries(n)):
        q.enqueue_call("_handwritten.webhook", args=[body.decode()], job_id=f"bench-webhook-{i}")
    _run([sys.executable, str(HERE / "_handwritten.py"), "bench-webhook",
          *(["--no-fork"] if no_fork else [])], {**env, "PYTHONPATH": str(HERE)})
    done, seconds = _span(redis, "bench-webhook")
    assert done == n
    return n / seconds


def nexus_delta(n: int, url: str, env: dict, no_fork: bool) -> float:
    from nexus_core import queues, runtime
    from nexus_core.sync import SyncOptions, enqueue_sync

    store = runtime.get_store()
    redis = runtime.get_redis()
    opts = SyncOptions.from_settings(runtime.get_settings())
    for i in range(n):
        inst = store.add_installation("t1", f"i{i}", "sim", config={"base_url": url})
        # a completed backfill left the delta cursor: the delta asks the provider and commits
        store.commit_page("t1", inst.install_id, "records", "delta", "0", seq=1)
        enqueue_sync(redis, "delta", "sim", "t1", inst.install_id, None,
                     job_id=f"bench-delta-{i}", run_id=None, opts=opts)
    _run([sys.executable, str(HERE / "_nexus_worker.py"), "--log-level", "WARNING",
          "run-worker", "--workers", "1", "--burst", "--queues", "delta",
          *(["--no-fork"] if no_fork else [])], env)
    done, seconds = _span(redis, queues.DELTA)
    assert done == n, (done, n)
    for i in range(0, n, max(1, n // 10)):  # every delta committed its new cursor
        assert store.get_checkpoint("t1", f"i{i}", "records", "delta").seq == 2
    return n / seconds


def plain_delta(n: int, url: str, env: dict, tmp: Path, no_fork: bool) -> float:
    import _handwritten

    from nexus_core import queues, runtime

    db = str(tmp / "handwritten.db")
    ids = [f"i{i}" for i in range(n)]
    _handwritten.create_cursors(db, ids)
    redis = runtime.get_redis()
    q = queues.queue("bench-delta", redis)
    for i in ids:
        q.enqueue_call("_handwritten.delta", args=[url, db, i], job_id=f"bench-delta-{i}")
    _run([sys.executable, str(HERE / "_handwritten.py"), "bench-delta",
          *(["--no-fork"] if no_fork else [])], {**env, "PYTHONPATH": str(HERE)})
    done, seconds = _span(redis, "bench-delta")
    assert done == n
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM cursors WHERE cursor = '1'").fetchone()[0] == n
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer jobs, 2 repetitions")
    parser.add_argument("-n", type=int, default=None, help="jobs per side")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--only", choices=("webhook", "delta"), default=None)
    parser.add_argument("--modes", default="fork,no-fork")
    args = parser.parse_args()
    n = args.n or (100 if args.quick else 300)
    repeat = args.repeat or (2 if args.quick else 3)
    kinds = [args.only] if args.only else ["webhook", "delta"]
    modes = args.modes.split(",")
    from nexus_core import runtime
    from nexus_core.config import reset_settings

    results = {(k, m): {"nexus": [], "plain": [], "ratio": []} for k in kinds for m in modes}
    with simulator(100, moving_delta_cursor=True) as url:
        for r in range(repeat):
            for kind in kinds:
                for mode in modes:
                    no_fork = mode == "no-fork"
                    res = results[(kind, mode)]
                    sides = ["plain", "nexus"] if r % 2 == 0 else ["nexus", "plain"]
                    for side in sides:
                        with environment() as (env, _redis, tmp):
                            reset_settings()
                            runtime.reset()
                            if kind == "webhook":
                                rate = (nexus_webhook(n, env, no_fork) if side == "nexus"
                                        else plain_webhook(n, env, no_fork))
                            else:
                                rate = (nexus_delta(n, url, env, no_fork) if side == "nexus"
                                        else plain_delta(n, url, env, tmp, no_fork))
                            res[side].append(rate)
                            runtime.reset()
                    res["ratio"].append(res["nexus"][-1] / res["plain"][-1])
                    print(f"round {r + 1} {kind:7} {mode:7}  nexus {res['nexus'][-1]:7.0f} jobs/s"
                          f"  hand-written {res['plain'][-1]:7.0f} jobs/s  ratio "
                          f"{res['ratio'][-1]:.3f}", flush=True)
    summary = []
    for (kind, mode), res in results.items():
        target = 0.9 if kind == "webhook" else 0.95
        print(f"{kind} jobs, {mode}, {n} jobs per side, {repeat} interleaved rounds")
        report("  nexus (jobs/s)", res["nexus"])
        report("  hand-written (jobs/s)", res["plain"])
        med = report(f"  ratio nexus/hand-written (target >= {target})", res["ratio"])
        summary.append(f"{kind}_{mode.replace('-', '')}={med:.3f}")
    print("RESULT " + " ".join(summary))


if __name__ == "__main__":
    main()
