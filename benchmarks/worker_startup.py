"""Worker start-up: `nexus run-worker --burst` vs `rq worker --burst`.

1. To the first job: one job waits in the queue; the clock runs from spawning the worker process
   to the job's start (RQ's ``started_at``, set in the work-horse). RQ's side runs a no-op job
   (``os.getpid``) with the JSON serializer; nexus's side a webhook job (the worker listens on
   ``integration-webhook``: it reads the installation, so the store is set up) and a delta job
   (``integration-delta``: the HTTP stack too). Target: nexus <= 1.5x rq.
2. On an empty queue: spawn to exit of a burst worker (all four queues for nexus).

Rounds interleave the sides.

    python benchmarks/worker_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report, simulator  # noqa: E402

HERE = Path(__file__).resolve().parent


def _started(redis, queue_name: str) -> datetime:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import queues

    (job_id,) = queues.queue(queue_name, redis).finished_job_registry.get_job_ids()
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).started_at


def _spawn(cmd: list[str], env: dict) -> datetime:
    t0 = datetime.now(UTC)
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return t0


def rq_side(env: dict) -> float:
    from nexus_core import queues, runtime

    redis = runtime.get_redis()
    queues.queue("bench-startup", redis).enqueue_call("os.getpid")
    rq = str(Path(sys.executable).with_name("rq"))
    t0 = _spawn([rq, "worker", "--burst", "--url", env["REDIS_URL"], "--serializer",
                 "rq.serializers.JSONSerializer", "--quiet", "bench-startup"], env)
    return (_started(redis, "bench-startup") - t0).total_seconds()


def nexus_side(env: dict, kind: str, url: str) -> float:
    from nexus_core import IntegrationService, WebhookRequest, queues, runtime
    from nexus_core.plugins import load_plugins
    from nexus_core.sync import SyncOptions, enqueue_sync
    from nexus_core.testing.simulator import paged_provider

    registry = load_plugins()
    if "sim" not in registry.providers:
        registry.register(paged_provider(), "sim")
    store = runtime.get_store()
    store.add_installation("t1", "i1", "sim", config={"base_url": url})
    redis = runtime.get_redis()
    if kind == "webhook":
        import webhook_ingress as wi

        IntegrationService(registry=registry).schedule_webhook_job(
            "sim", "t1", "i1", WebhookRequest("POST", "http://b/", {}, wi._body(0, 0)))
    else:
        store.commit_page("t1", "i1", "records", "delta", "0", seq=1)
        enqueue_sync(redis, "delta", "sim", "t1", "i1", None, job_id="bench-startup-delta",
                     run_id=None, opts=SyncOptions())
    t0 = _spawn([sys.executable, str(HERE / "_nexus_worker.py"), "--log-level", "WARNING",
                 "run-worker", "--workers", "1", "--burst", "--queues", kind], env)
    name = queues.WEBHOOK if kind == "webhook" else queues.DELTA
    return (_started(redis, name) - t0).total_seconds()


def empty(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    _spawn(cmd, env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from nexus_core import runtime
    from nexus_core.config import reset_settings

    times: dict[str, list[float]] = {"rq": [], "webhook": [], "delta": [], "rq-empty": [],
                                     "nexus-empty": []}
    ratios: dict[str, list[float]] = {"webhook": [], "delta": []}
    with simulator(100, moving_delta_cursor=True) as url:
        for r in range(args.repeat):
            order = ["rq", "webhook", "delta"] if r % 2 == 0 else ["delta", "webhook", "rq"]
            for side in order:
                with environment() as (env, _redis, _tmp):
                    reset_settings()
                    runtime.reset()
                    times[side].append(rq_side(env) if side == "rq"
                                       else nexus_side(env, side, url))
                    runtime.reset()
            for kind in ("webhook", "delta"):
                ratios[kind].append(times[kind][-1] / times["rq"][-1])
            with environment() as (env, _redis, _tmp):
                rq = str(Path(sys.executable).with_name("rq"))
                for side in (("rq-empty", "nexus-empty") if r % 2 == 0
                             else ("nexus-empty", "rq-empty")):
                    times[side].append(empty(
                        [rq, "worker", "--burst", "--url", env["REDIS_URL"], "--quiet", "x"]
                        if side == "rq-empty" else
                        [sys.executable, str(HERE / "_nexus_worker.py"), "--log-level",
                         "WARNING", "run-worker", "--workers", "1", "--burst"], env))
            ratios.setdefault("empty", []).append(times["nexus-empty"][-1] /
                                                  times["rq-empty"][-1])
            print(f"round {r + 1}: rq {times['rq'][-1]:.3f} s, nexus webhook "
                  f"{times['webhook'][-1]:.3f} s, nexus delta {times['delta'][-1]:.3f} s",
                  flush=True)
            time.sleep(0.2)
    print(f"worker start-up to first job, {args.repeat} interleaved rounds")
    report("  rq worker --burst, no-op job (s)", times["rq"])
    report("  nexus run-worker --burst -q webhook (s)", times["webhook"])
    report("  nexus run-worker --burst -q delta (s)", times["delta"])
    w = report("  ratio webhook / rq (target <= 1.5)", ratios["webhook"])
    d = report("  ratio delta / rq (target <= 1.5)", ratios["delta"])
    print("burst worker on an empty queue, spawn to exit")
    report("  rq worker --burst (s)", times["rq-empty"])
    report("  nexus run-worker --burst, all queues (s)", times["nexus-empty"])
    e = report("  ratio nexus / rq", ratios["empty"])
    print(f"RESULT startup_ratio_webhook={w:.2f} startup_ratio_delta={d:.2f} "
          f"empty_queue_ratio={e:.2f}")


if __name__ == "__main__":
    main()
