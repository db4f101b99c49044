"""HubSpot backfill throughput: the nexus-hubspot connector vs a hand-written loop, over the same
HubSpot simulator.

The simulator (``nexus_hubspot.simulator``) runs in its own process with a portal on a tier high
enough that neither side is rate-limited, so what is compared is the client's own cost per
record. The connector runs a real backfill job of the contacts stream (``NexusWorker``, fork per
job; ProviderSession with the shared rate limiter and breaker in Redis, the token from the
encrypted store, a checkpoint commit per page in SQLite) to the null sink; the baseline is the
RQ job a competent user would write: a ``requests`` loop over ``GET /crm/v3/objects/contacts``
following ``paging.next.after``, the same properties, each page to a no-op sink, on RQ's own
``Worker``. Rounds are interleaved (which side goes first alternates); records/s over the job's
execution (RQ's started/ended timestamps), medians and raw values.

For information, the connector once more at HubSpot's real limits (110 requests per 10 s, its
default budget of 10 requests/s): the ceiling there is 1,000 records/s.

    python benchmarks/hubspot_backfill.py [--quick] [--repeat N] [--records N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report  # noqa: E402

PORTAL = "62515"
HIGH_TIER = {"requests_per_second": 100_000, "burst_size": 100_000}


def sim_child(records: int, tier: str) -> None:
    """Runs in its own process: the simulator, one portal; prints how to reach it."""
    from nexus_hubspot.simulator import HubSpotSimulator

    sim = HubSpotSimulator(sizes={"contacts": records, "companies": 1, "deals": 1})
    sim.add_account(PORTAL)
    if tier == "high":
        sim.set_tier(PORTAL, per_ten_seconds=10_000_000, search_per_second=100_000)
    tokens = sim.oauth.issue_tokens(PORTAL)
    sim.start()
    print(json.dumps({"url": sim.url, "env": sim.env(), "access_token": tokens["access_token"],
                      "refresh_token": tokens["refresh_token"]}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@contextmanager
def hubspot(records: int, tier: str = "high"):
    proc = subprocess.Popen([sys.executable, __file__, "--sim-child", str(records), tier],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(10)


def engine_child(info: str, config: str) -> None:
    """Runs in a fresh process: one backfill of contacts through the connector; prints JSON."""
    from datetime import timedelta

    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import Credentials, runtime
    from nexus_core.log import configure_logging
    from nexus_core.models import utcnow
    from nexus_core.plugins import load_plugins
    from nexus_core.service import IntegrationService
    from nexus_core.worker import NexusWorker

    configure_logging("WARNING")
    sim = json.loads(info)
    service = IntegrationService(registry=load_plugins())
    service.install("hubspot", "t1", "i1", account_id=PORTAL, config=json.loads(config),
                    credentials=Credentials(access_token=sim["access_token"],
                                            refresh_token=sim["refresh_token"],
                                            expires_at=utcnow() + timedelta(minutes=30)))
    service.start_backfill("hubspot", "t1", "i1")
    worker = NexusWorker(["integration-backfill"], connection=runtime.get_redis())
    worker.work(burst=True, logging_level="WARNING")
    run = runtime.get_store().list_runs("t1", "i1")[0]
    job = Job.fetch(run.job_id, connection=runtime.get_redis(), serializer=JSONSerializer)
    print(json.dumps({"seconds": (job.ended_at - job.started_at).total_seconds(),
                      "records": run.records, "pages": run.pages, "status": run.status}))


def plain_child(info: str) -> None:
    """Runs in a fresh process: the hand-written job on RQ's fork-per-job Worker."""
    import _handwritten  # noqa: F401 - imported before the fork, as the baseline says
    import redis
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    sim = json.loads(info)
    connection = redis.Redis.from_url(os.environ["REDIS_URL"])
    job = Queue("bench-hubspot", connection=connection, serializer=JSONSerializer).enqueue_call(
        "_handwritten.hubspot_backfill", args=[sim["url"], sim["access_token"]], timeout=3600)
    Worker(["bench-hubspot"], connection=connection, serializer=JSONSerializer).work(
        burst=True, logging_level="WARNING")
    job.refresh()
    print(json.dumps({"seconds": (job.ended_at - job.started_at).total_seconds(),
                      "records": job.return_value(), "status": "succeeded"}))


def run_child(flag: str, *args: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, flag, *args], env={**os.environ, **env},
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded", result
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="10,000 records, 3 rounds")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--sim-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--engine-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--plain-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sim_child:
        sim_child(int(args.sim_child[0]), args.sim_child[1])
        return
    if args.engine_child:
        engine_child(*args.engine_child)
        return
    if args.plain_child:
        plain_child(args.plain_child)
        return
    repeat = max(3, args.repeat or 3)
    total = args.records or (10_000 if args.quick else 50_000)
    config = json.dumps({"streams": ["contacts"], "rate_limits": HIGH_TIER})
    rates: dict[str, list[float]] = {"connector": [], "hand-written": [], "ratio": []}
    with hubspot(total) as sim:
        info = json.dumps(sim)
        for r in range(repeat):
            row = {}
            for side in (("hand-written", "connector") if r % 2 == 0
                         else ("connector", "hand-written")):
                with environment(**sim["env"]) as (env, _redis, _tmp):
                    row[side] = (run_child("--engine-child", info, config, env=env)
                                 if side == "connector" else
                                 run_child("--plain-child", info, env=env))
                assert row[side]["records"] == total, row
            for side in ("connector", "hand-written"):
                rates[side].append(total / row[side]["seconds"])
            rates["ratio"].append(rates["connector"][-1] / rates["hand-written"][-1])
            print(f"round {r + 1}: connector {rates['connector'][-1]:8.0f} rec/s, "
                  f"hand-written {rates['hand-written'][-1]:8.0f} rec/s", flush=True)
    print(f"HubSpot backfill of {total} contacts (100 per page), {repeat} interleaved rounds, "
          "records/s over the job's execution")
    c = report("  nexus-hubspot connector (records/s)", rates["connector"])
    h = report("  hand-written requests loop (records/s)", rates["hand-written"])
    ratio = report("  ratio connector / hand-written", rates["ratio"])

    limited_total = 3_000 if args.quick else 10_000
    with hubspot(limited_total, tier="default") as sim, \
            environment(**sim["env"]) as (env, _redis, _tmp):
        limited = run_child("--engine-child", json.dumps(sim),
                            json.dumps({"streams": ["contacts"]}), env=env)
    at_limits = limited_total / limited["seconds"]
    print(f"  at HubSpot's real limits (10 req/s default budget, {limited_total} contacts): "
          f"{at_limits:.0f} records/s (steady state 1,000: 10 pages of 100 a second, "
          "plus the burst)")
    print(f"RESULT connector_rps={c:.0f} handwritten_rps={h:.0f} ratio={ratio:.3f} "
          f"at_limits_rps={at_limits:.0f}")


if __name__ == "__main__":
    main()
