"""Scale-out: backfill throughput of 1, 2 and 4 worker processes on one Redis and one store.

T tenants (default 8) each backfill R records (default 5,000 at 100 per page) from the local
paged simulator (its own threaded process; ``--latency-ms`` per page, default 5: a provider's
round trip). Three sides, each with 1, 2 and 4 processes:

* nexus: ``nexus run-worker -q backfill --workers 1`` processes (fork per job, the provider
  session with the shared rate limiter and breaker in Redis, a checkpoint commit per page,
  the null sink). NEXUS_BACKFILL_TIME_BUDGET=2 (``--budget``) cuts each backfill into chunks:
  jobs/s counts them. The store is PostgreSQL in a private schema when one answers
  (NEXUS_TEST_POSTGRES_URL or postgres@127.0.0.1/test), else SQLite — printed at the start.
* hand-written: plain RQ ``Worker`` processes running ``_handwritten.backfill`` (a requests
  loop over every page to a no-op sink, one job per tenant, nothing committed).
* bare limit: the same page loop in plain processes, no queue at all.

Throughput is records (and jobs) over the span from the first job's start to the last job's
end (RQ's timestamps; process start-up excluded); the bare limit over its processes' wall
clock. Each worker count starts its processes first and enqueues once all are listening. The
ratios 2/1 and 4/1 and nexus / hand-written are per round; medians of ``--repeat`` rounds.

On a 2-core machine, 4 processes cannot run 4 times as fast: the work is mostly CPU (JSON,
HTTP parsing, the simulator itself shares the cores), so past 2 processes the gain comes only
from overlapping the provider's latency.

    python benchmarks/scale_out.py [--quick] [--repeat N] [--tenants T] [--records R]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report, simulator  # noqa: E402

HERE = Path(__file__).resolve().parent
COUNTS = (1, 2, 4)


@contextlib.contextmanager
def postgres_schema():
    """A private schema on the test PostgreSQL (dropped at the end), or None."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url = sa.make_url(os.environ.get("NEXUS_TEST_POSTGRES_URL")
                      or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError:
        engine.dispose()
        yield None
        return
    schema = f"nexus_bench_{secrets.token_hex(4)}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False), schema, engine
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def _span(connection, queue_name: str) -> tuple[int, float]:
    """(finished jobs, seconds from the first start to the last end) of a queue."""
    from rq import Queue
    from rq.job import Job
    from rq.serializers import JSONSerializer

    q = Queue(queue_name, connection=connection, serializer=JSONSerializer)
    ids = q.finished_job_registry.get_job_ids()
    jobs = [j for j in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer)
            if j is not None]
    start = min(j.started_at for j in jobs)
    end = max(j.ended_at for j in jobs)
    return len(jobs), (end - start).total_seconds()


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_workers(connection, n: int, queue: str) -> None:
    from rq import Worker

    deadline = time.monotonic() + 60
    while len([w for w in Worker.all(connection=connection) if queue in w.queue_names()]) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"{n} workers did not register within 60 s")
        time.sleep(0.05)


def nexus_round(k: int, url: str, tenants: int, records: int, db: str | None,
                budget: float) -> dict:
    from nexus_core.crypto import generate_key

    extra = {"NEXUS_BACKFILL_TIME_BUDGET": str(budget), "LOG_LEVEL": "WARNING",
             "NEXUS_BACKFILL_TENANT_CONCURRENCY": "1000", "NEXUS_EMBEDDED_REDIS": "off",
             "NEXUS_ENCRYPTION_KEYS": generate_key()}
    if db:
        extra["NEXUS_DATABASE_URL"] = db
    with environment(**extra) as (env, _redis_url, _tmp):
        from nexus_core import runtime
        from nexus_core.config import reset_settings
        from nexus_core.plugins import PluginRegistry, set_registry
        from nexus_core.service import IntegrationService
        from nexus_core.testing.simulator import paged_provider

        reset_settings()
        runtime.reset()
        registry = PluginRegistry()
        registry.register(paged_provider(), "sim")
        previous = set_registry(registry)
        store = runtime.get_store()
        redis = runtime.get_redis()
        procs = []
        try:
            for n in range(tenants):
                store.add_installation(f"t{n}", "i1", "sim", config={"base_url": url})
            for _ in range(k):
                procs.append(subprocess.Popen(
                    [sys.executable, str(HERE / "_nexus_worker.py"), "run-worker", "-q",
                     "backfill", "--workers", "1"], env={**os.environ, **env},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True))
            _wait_workers(redis, k, "integration-backfill")
            service = IntegrationService(registry=registry)
            for n in range(tenants):
                service.start_backfill("sim", f"t{n}", "i1")
            deadline = time.monotonic() + 600
            while True:
                runs = [store.list_runs(f"t{n}", "i1", limit=1) for n in range(tenants)]
                if all(r and r[0].status == "succeeded" for r in runs):
                    break
                if any(r and r[0].status == "failed" for r in runs) or time.monotonic() > deadline:
                    raise SystemExit(f"backfills did not finish: {[r[0].status for r in runs]}")
                time.sleep(0.05)
            done = sum(r[0].records for r in runs)
            assert done == tenants * records, (done, tenants * records)
            jobs, seconds = _span(redis, "integration-backfill")
        finally:
            _stop(procs)
            set_registry(previous)
            runtime.reset()
            reset_settings()
    return {"records_s": tenants * records / seconds, "jobs_s": jobs / seconds, "jobs": jobs}


def handwritten_round(k: int, url: str, tenants: int, records: int) -> dict:
    import redis as redis_lib
    from rq import Queue
    from rq.serializers import JSONSerializer

    with environment() as (env, redis_url, _tmp):
        connection = redis_lib.Redis.from_url(redis_url)
        q = Queue("bench-scale", connection=connection, serializer=JSONSerializer)
        for _ in range(tenants):
            q.enqueue_call("_handwritten.backfill", args=[url], timeout=3600)
        procs = [subprocess.Popen([sys.executable, str(HERE / "_handwritten.py"), "bench-scale"],
                                  env={**os.environ, **env}, start_new_session=True)
                 for _ in range(k)]
        try:
            for proc in procs:
                proc.wait(600)
            jobs, seconds = _span(connection, "bench-scale")
            assert jobs == tenants, jobs
        finally:
            _stop(procs)
            connection.close()
    return {"records_s": tenants * records / seconds}


def _bare_child(url: str, n: int) -> None:
    import _handwritten

    for _ in range(n):
        _handwritten.backfill(url)


def bare_round(k: int, url: str, tenants: int, records: int) -> dict:
    import _handwritten  # noqa: F401 - imported before the fork, not in the timed children

    ctx = mp.get_context("fork")
    shares = [len(range(i, tenants, k)) for i in range(k)]
    procs = [ctx.Process(target=_bare_child, args=(url, n)) for n in shares]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return {"records_s": tenants * records / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 tenants x 2,000 records, 1 round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 3)")
    parser.add_argument("--tenants", type=int, default=None)
    parser.add_argument("--records", type=int, default=None, help="records per tenant")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="per page (default 5)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="NEXUS_BACKFILL_TIME_BUDGET: seconds per chunk (default 2)")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    tenants = args.tenants or (4 if args.quick else 8)
    records = args.records or (2_000 if args.quick else 5_000)

    rates: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rates.setdefault(key, []).append(value)

    with postgres_schema() as pg, simulator(records, latency_ms=args.latency_ms) as url:
        db = pg[0] if pg else None
        print(f"scale-out: {tenants} tenants x {records} records (100/page, "
              f"{args.latency_ms:g} ms per page), store "
              f"{'PostgreSQL schema ' + pg[1] if pg else 'SQLite'}, {os.cpu_count()} CPUs, "
              f"{repeat} rounds", flush=True)
        for r in range(repeat):
            for k in COUNTS:
                if pg:  # a fresh schema each round and count
                    import sqlalchemy as sa

                    with pg[2].begin() as conn:
                        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{pg[1]}" CASCADE'))
                        conn.execute(sa.text(f'CREATE SCHEMA "{pg[1]}"'))
                n = nexus_round(k, url, tenants, records, db, args.budget)
                h = handwritten_round(k, url, tenants, records)
                b = bare_round(k, url, tenants, records)
                add(f"nexus_{k}", n["records_s"])
                add(f"nexus_jobs_{k}", n["jobs_s"])
                add(f"hand_{k}", h["records_s"])
                add(f"bare_{k}", b["records_s"])
                add(f"vs_hand_{k}", n["records_s"] / h["records_s"])
                add(f"vs_bare_{k}", n["records_s"] / b["records_s"])
                print(f"round {r + 1}, {k} process(es): nexus {n['records_s']:7.0f} rec/s "
                      f"{n['jobs_s']:6.1f} jobs/s ({n['jobs']} chunks); hand-written "
                      f"{h['records_s']:7.0f}; bare {b['records_s']:7.0f}", flush=True)
            for k in COUNTS[1:]:
                for side in ("nexus", "hand", "bare"):
                    add(f"{side}_{k}/1", rates[f"{side}_{k}"][-1] / rates[f"{side}_1"][-1])

    for k in COUNTS:
        report(f"nexus, {k} worker process(es), records/s", rates[f"nexus_{k}"])
        report(f"nexus, {k} worker process(es), jobs/s", rates[f"nexus_jobs_{k}"])
        report(f"hand-written RQ, {k} process(es), records/s", rates[f"hand_{k}"])
        report(f"bare loop, {k} process(es), records/s", rates[f"bare_{k}"])
        report(f"  nexus / hand-written at {k}", rates[f"vs_hand_{k}"])
        report(f"  nexus / bare limit at {k}", rates[f"vs_bare_{k}"])
    for k in COUNTS[1:]:
        for side, name in (("nexus", "nexus"), ("hand", "hand-written"), ("bare", "bare")):
            report(f"scaling {k}/1, {name}", rates[f"{side}_{k}/1"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"RESULT nexus_1={med['nexus_1']:.0f} nexus_2={med['nexus_2']:.0f} "
          f"nexus_4={med['nexus_4']:.0f} ratio_2_1={med['nexus_2/1']:.2f} "
          f"ratio_4_1={med['nexus_4/1']:.2f} jobs_s_4={med['nexus_jobs_4']:.1f} "
          f"vs_hand_4={med['vs_hand_4']:.2f}")


if __name__ == "__main__":
    main()
