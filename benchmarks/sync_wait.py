"""`nexus sync backfill --wait` on a 1,000-record backfill: the CLI's wall time vs the job's own.

A `nexus run-worker -q backfill` is running and idle; each round runs the real CLI
(`nexus sync backfill sim --tenant t1 --install i1 --wait --json`, a full re-sync each time) and
compares its wall time, from spawning the process to its exit, with the job's own duration
(RQ's started_at to ended_at). The difference is the CLI's start-up, the enqueue, the worker's
pick-up and how late the CLI learns of the end. Target: CLI <= job + 0.35 s.

    python benchmarks/sync_wait.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report, simulator  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from rq import Worker
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import runtime
    from nexus_core.config import reset_settings

    cli, job, overhead = [], [], []
    with simulator(1000) as url, environment() as (env, _redis_url, tmp):
        reset_settings()
        runtime.reset()
        runtime.get_store().add_installation("t1", "i1", "sim", config={"base_url": url})
        redis = runtime.get_redis()
        log = (tmp / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, str(HERE / "_nexus_worker.py"), "--log-level", "WARNING",
             "run-worker", "--workers", "1", "--queues", "backfill"],
            env={**os.environ, **env}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while not Worker.all(connection=redis):
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit((tmp / "worker.log").read_text()[-3000:])
                time.sleep(0.05)
            time.sleep(0.5)  # idle, blocked on its queue
            for r in range(args.repeat + 1):  # the first round warms the worker up
                started = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, str(HERE / "_nexus_worker.py"), "sync", "backfill", "sim",
                     "--tenant", "t1", "--install", "i1", "--wait", "--json"],
                    env={**os.environ, **env}, capture_output=True, text=True, check=False)
                wall = time.perf_counter() - started
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                result = json.loads(out.stdout)
                assert result["status"] == "succeeded" and result["records"] == 1000, result
                done = Job.fetch(result["job_id"], connection=redis, serializer=JSONSerializer)
                own = (done.ended_at - done.started_at).total_seconds()
                if r == 0:
                    continue
                cli.append(wall)
                job.append(own)
                overhead.append(wall - own)
                print(f"round {r}: CLI {wall:.3f} s, job {own:.3f} s, overhead "
                      f"{wall - own:.3f} s", flush=True)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(20)
            log.close()
    print(f"sync backfill --wait, 1,000 records, {args.repeat} runs")
    report("  CLI wall time (s)", cli)
    report("  the job's own duration (s)", job)
    o = report("  overhead = CLI - job (s, target <= 0.35)", overhead)
    print(f"RESULT sync_wait_overhead_s={o:.3f}")


if __name__ == "__main__":
    main()
