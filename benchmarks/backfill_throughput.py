"""Backfill throughput and memory: the sync engine vs a plain ``requests`` loop.

Both read the same local paged server (100 records/page, its own process). The engine runs a
real backfill job (``NexusWorker``, fork per job, ProviderSession with the shared rate limiter
and breaker in Redis, checkpoint commit per page in SQLite) to the null sink; the baseline
fetches and JSON-decodes the same pages in a loop. Peak RSS of the work-horse is compared for a
200,000- and a 20,000-record backfill (it must not grow with the record count).

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
    out = subprocess.run([sys.executable, __file__, "--engine-child", url],
                         env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    return result


def plain(url: str) -> dict:
    import requests

    session = requests.Session()
    cursor, records = "0", 0
    start = time.perf_counter()
    while cursor is not None:
        data = session.get(f"{url}/records", params={"cursor": cursor, "limit": 100},
                           timeout=(10, 30)).json()
        records += len(data["results"])
        cursor = data["next"]
    return {"seconds": time.perf_counter() - start, "records": records}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs, 2 repetitions")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--engine-child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(args.engine_child)
        return
    repeat = args.repeat or (2 if args.quick else 3)
    total = 20_000 if args.quick else 100_000
    small, large = (5_000, 50_000) if args.quick else (20_000, 200_000)

    ratios, engine_rates, plain_rates, wall_rates = [], [], [], []
    with simulator(total) as url:
        for _ in range(repeat):
            with environment() as (env, _redis, _tmp):
                e = engine(url, env)
            p = plain(url)
            assert e["records"] == p["records"] == total
            engine_rates.append(e["records"] / e["seconds"])
            wall_rates.append(e["records"] / e["wall_seconds"])
            plain_rates.append(p["records"] / p["seconds"])
            ratios.append(engine_rates[-1] / plain_rates[-1])
    print(f"backfill throughput, {total} records at 100/page, {repeat} runs")
    report("  engine, job execution (records/s)", engine_rates)
    report("  engine, incl. worker start and fork (records/s)", wall_rates)
    report("  plain requests loop (records/s)", plain_rates)
    ratio = report("  ratio engine/plain (target >= 0.8)", ratios)

    # The same with a remote provider's round trip (20 ms per page): the engine overlaps the
    # sink and checkpoint commit of one page with the fetch of the next.
    slow_total = 5_000 if args.quick else 20_000
    slow_ratios = []
    with simulator(slow_total, latency_ms=20) as url:
        for _ in range(repeat):
            with environment() as (env, _redis, _tmp):
                e = engine(url, env)
            p = plain(url)
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
    print(f"RESULT throughput_ratio={ratio:.3f} ratio_20ms={slow:.3f} "
          f"rss_small_mb={a:.1f} rss_large_mb={b:.1f} "
          f"rss_diff_mb={d:.1f}")


if __name__ == "__main__":
    main()
