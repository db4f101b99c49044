"""Backfill throughput and memory: the sync engine vs a hand-written RQ job.

Both read the same local paged server (100 records/page, its own process) on a fork-per-job RQ
worker. The engine runs a real backfill job (``NexusWorker``, ProviderSession with the shared
rate limiter and breaker in Redis, checkpoint commit per page in SQLite) to the null sink; the
baseline is the job a competent user would write (benchmarks/_handwritten.py ``backfill``: a
``requests`` loop over the pages to a no-op sink) on RQ's own ``Worker``, its module imported
before forking. Reported: records/s over the job's execution (RQ's started/ended timestamps,
target >= 0.95) and over the worker's wall clock from its start to its exit (target >= 0.9).
Peak RSS of the work-horse is compared for a 200,000- and a 20,000-record backfill (it must not
grow with the record count).

    python benchmarks/backfill_throughput.py [--quick] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report, simulator  # noqa: E402


def engine_child(url: str) -> None:
    """Runs in a fresh process: one backfill through the engine; prints JSON."""
    from nexus_core import runtime
    from nexus_core.log import configure_logging
    from nexus_core.plugins import load_plugins
    from nexus_core.service import IntegrationService
    from nexus_core.testing.simulator import paged_provider
    from nexus_core.worker import NexusWorker

    configure_logging("WARNING")
    registry = load_plugins()
    registry.register(paged_provider(), "sim")
    store = runtime.get_store()
    store.add_installation("t1", "i1", "sim", config={"base_url": url})
    IntegrationService(registry=registry).start_backfill("sim", "t1", "i1")
    worker = NexusWorker(["integration-backfill"], connection=runtime.get_redis())
    start = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - start
    run = store.list_runs("t1", "i1")[0]
    from rq.job import Job
    from rq.serializers import JSONSerializer

    job = Job.fetch(run.job_id, connection=runtime.get_redis(), serializer=JSONSerializer)
    job_seconds = (job.ended_at - job.started_at).total_seconds()
    print(json.dumps({"seconds": job_seconds, "wall_seconds": seconds, "records": run.records,
                      "status": run.status,
                      "horse_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))


def engine(url: str, env: dict) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--engine-child", url],
                         env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    result["process_seconds"] = time.perf_counter() - started
    return result


def plain_child(url: str) -> None:
    """Runs in a fresh process: the hand-written job on RQ's fork-per-job Worker; prints JSON."""
    import redis
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _handwritten  # noqa: F401 - imported before the fork, as the baseline says

    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    job = Queue("bench-backfill", connection=connection, serializer=JSONSerializer).enqueue_call(
        "_handwritten.backfill", args=[url], timeout=3600)
    worker = Worker(["bench-backfill"], connection=connection, serializer=JSONSerializer)
    start = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    seconds = time.perf_counter() - start
    job.refresh()
    print(json.dumps({"seconds": (job.ended_at - job.started_at).total_seconds(),
                      "wall_seconds": seconds, "records": job.return_value()}))


def plain(url: str, env: dict) -> dict:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--plain-child", url],
                         env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs, 2 repetitions")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--engine-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(args.engine_child)
        return
    if args.plain_child:
        plain_child(args.plain_child)
        return
    repeat = args.repeat or (2 if args.quick else 3)
    total = 20_000 if args.quick else 100_000
    small, large = (5_000, 50_000) if args.quick else (20_000, 200_000)

    rates: dict[str, list[float]] = {k: [] for k in (
        "engine", "plain", "engine_wall", "plain_wall", "ratio", "ratio_wall")}
    with simulator(total) as url:
        for r in range(repeat):
            row = {}
            for side in (("plain", "engine") if r % 2 == 0 else ("engine", "plain")):
                with environment() as (env, _redis, _tmp):
                    row[side] = engine(url, env) if side == "engine" else plain(url, env)
                assert row[side]["records"] == total, row
            for side in ("engine", "plain"):
                rates[side].append(total / row[side]["seconds"])
                rates[side + "_wall"].append(total / row[side]["wall_seconds"])
            rates["ratio"].append(rates["engine"][-1] / rates["plain"][-1])
            rates["ratio_wall"].append(rates["engine_wall"][-1] / rates["plain_wall"][-1])
            print(f"round {r + 1}: engine {rates['engine'][-1]:8.0f} rec/s (job), "
                  f"{rates['engine_wall'][-1]:8.0f} (worker); hand-written "
                  f"{rates['plain'][-1]:8.0f} (job), {rates['plain_wall'][-1]:8.0f} (worker)",
                  flush=True)
    print(f"backfill throughput, {total} records at 100/page, {repeat} interleaved rounds")
    report("  engine, job execution (records/s)", rates["engine"])
    report("  hand-written RQ job, job execution (records/s)", rates["plain"])
    ratio = report("  ratio, job execution (target >= 0.95)", rates["ratio"])
    report("  engine, worker start to exit (records/s)", rates["engine_wall"])
    report("  hand-written, worker start to exit (records/s)", rates["plain_wall"])
    ratio_wall = report("  ratio, worker wall clock (target >= 0.9)", rates["ratio_wall"])

    # The same with a remote provider's round trip (20 ms per page): the engine overlaps the
    # sink and checkpoint commit of one page with the fetch of the next.
    slow_total = 5_000 if args.quick else 20_000
    slow_ratios = []
    with simulator(slow_total, latency_ms=20) as url:
        for _ in range(repeat):
            with environment() as (env, _redis, _tmp):
                e = engine(url, env)
            with environment() as (env, _redis, _tmp):
                p = plain(url, env)
            slow_ratios.append((e["records"] / e["seconds"]) / (p["records"] / p["seconds"]))
    slow = report(f"  ratio with 20 ms provider latency per page ({slow_total} records)",
                  slow_ratios)

    rss: dict[int, list[float]] = {small: [], large: []}
    for _ in range(repeat):
        for n in (small, large):
            with simulator(n) as url, environment() as (env, _redis, _tmp):
                rss[n].append(engine(url, env)["horse_maxrss_kb"] / 1024)
    print(f"peak RSS of the backfill work-horse, {small} vs {large} records")
    a = report(f"  {small} records (MB)", rss[small])
    b = report(f"  {large} records (MB)", rss[large])
    diffs = [y - x for x, y in zip(rss[small], rss[large], strict=True)]
    d = report("  difference (MB, target < 20)", diffs)
    print(f"RESULT throughput_ratio={ratio:.3f} wall_ratio={ratio_wall:.3f} ratio_20ms={slow:.3f} "
          f"rss_small_mb={a:.1f} rss_large_mb={b:.1f} "
          f"rss_diff_mb={d:.1f}")


if __name__ == "__main__":
    main()
