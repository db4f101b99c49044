"""Job overhead: the sync engine's per-job cost vs a bare RQ job on the same worker class.

N delta jobs whose provider returns one empty page, processed by `nexus run-worker --burst`
(NexusWorker: fork per job, context from the store, ProviderSession, lease, run record), vs N
no-op jobs (``os.getpid``) processed by RQ's own `rq worker --burst` (rq.Worker, the class
NexusWorker extends) — same Redis, same run, JSON serializer for both. Throughput is measured
from the first job's start to the last job's end (RQ's own timestamps), so process start-up
is excluded on both sides.

    python benchmarks/job_overhead.py [--quick] [-n N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, environment, report, simulator  # noqa: E402

LAUNCHER = ROOT / "tests" / "reliability" / "worker_main.py"


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


def nexus_run(n: int, url: str, env: dict, no_fork: bool = False) -> float:
    from nexus_core import runtime
    from nexus_core.sync import SyncOptions, enqueue_sync

    store = runtime.get_store()
    redis = runtime.get_redis()
    opts = SyncOptions.from_settings(runtime.get_settings())
    for i in range(n):
        inst = store.add_installation("t1", f"i{i}", "sim", config={"base_url": url})
        # a completed backfill leaves the delta cursor: the delta really asks the provider
        store.commit_page("t1", inst.install_id, "records", "delta", "0", seq=1)
        enqueue_sync(redis, "delta", "sim", "t1", inst.install_id, None,
                     job_id=f"bench-delta-{i}", run_id=None, opts=opts)
    out = subprocess.run([sys.executable, str(LAUNCHER), "--log-level", "WARNING", "run-worker",
                          "--burst", "--queues", "delta", *(["--no-fork"] if no_fork else [])],
                         env={**os.environ, **env},
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    done, seconds = _span(redis, "integration-delta")
    assert done == n, (done, out.stderr[-2000:])
    # an empty scheduled delta that moves no cursor records no run (see nexus_core.jobs)
    assert all(store.get_checkpoint("t1", f"i{i}", "records", "delta").seq == 1
               for i in range(0, n, max(1, n // 10)))
    return n / seconds


def plain_run(n: int, env: dict, no_fork: bool = False) -> float:
    from nexus_core import queues, runtime

    redis = runtime.get_redis()
    q = queues.queue("bench-plain", redis)
    for i in range(n):
        q.enqueue_call("os.getpid", job_id=f"bench-noop-{i}")
    rq = Path(sys.executable).with_name("rq")
    out = subprocess.run([str(rq), "worker", "--burst", "--url", env["REDIS_URL"],
                          "--serializer", "rq.serializers.JSONSerializer", "--quiet",
                          "--worker-class",
                          "rq.worker.SimpleWorker" if no_fork else "rq.worker.Worker",
                          "bench-plain"], env={**os.environ, **env}, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    done, seconds = _span(redis, "bench-plain")
    assert done == n
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer jobs, 2 repetitions")
    parser.add_argument("-n", type=int, default=None, help="jobs per side")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    n = args.n or (100 if args.quick else 300)
    repeat = args.repeat or (2 if args.quick else 3)
    from nexus_core import runtime
    from nexus_core.config import reset_settings

    results: dict[str, dict[str, list[float]]] = {
        mode: {"nexus": [], "plain": [], "ratio": []} for mode in ("fork", "no-fork")}
    with simulator(100) as url:
        for _ in range(repeat):
            for mode in ("fork", "no-fork"):
                with environment() as (env, _redis, _tmp):
                    reset_settings()
                    runtime.reset()
                    from nexus_core.plugins import load_plugins
                    from nexus_core.testing.simulator import paged_provider

                    registry = load_plugins()
                    if "sim" not in registry.providers:
                        registry.register(paged_provider(), "sim")
                    r = results[mode]
                    r["plain"].append(plain_run(n, env, mode == "no-fork"))
                    r["nexus"].append(nexus_run(n, url, env, mode == "no-fork"))
                    r["ratio"].append(r["nexus"][-1] / r["plain"][-1])
                    runtime.reset()
    ratios = {}
    for mode, label in (("fork", "rq.Worker (fork per job, the default)"),
                        ("no-fork", "rq.SimpleWorker (`run-worker --no-fork`)")):
        r = results[mode]
        print(f"job overhead, {n} jobs per side, {repeat} runs, {label}")
        report("  nexus delta jobs (jobs/s)", r["nexus"])
        report("  plain RQ no-op jobs (jobs/s)", r["plain"])
        ratios[mode] = report("  ratio nexus/plain (target >= 0.7)", r["ratio"])
    print(f"RESULT job_overhead_ratio_fork={ratios['fork']:.3f} "
          f"job_overhead_ratio_nofork={ratios['no-fork']:.3f}")


if __name__ == "__main__":
    main()
