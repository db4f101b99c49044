"""What one Redis sustains: Redis CPU per webhook delivery (ingress + its job) and per delta job,
measured from Redis's own counters (``INFO cpu``, main thread), for the capacity model in
docs/operations.md.

Redis runs commands on one thread, so it saturates at about one core: 1 s / (Redis CPU per
unit) is the most units per second one Redis can take whatever the number of web and worker
machines around it (the application processes scale out; Redis does not). The rest of this
machine's CPU does not matter for this figure: Redis's CPU per command hardly depends on load.

* webhook: a signed HubSpot-v3-style delivery (1 event, and 100 events) through the web app's
  ingress in-process (verify, route, dedupe, one Lua-scripted enqueue), then its job run by a
  `--no-fork` nexus worker in-process (the fork-per-job worker sends Redis the same commands).
* delta: one installation's delta: its claim and enqueue (``start_delta``; the scheduler's
  claim and ``schedule_job`` cost about the same) and its job on the worker (lease, shared rate
  limiter and breaker, checkpoint in SQLite, the finish), against the local paged simulator
  answering an empty page.

Each side runs N units, ``--repeat`` rounds; medians with raw values.

    python benchmarks/redis_capacity.py [--quick] [-n N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, report, simulator  # noqa: E402

SECRET = "bench-client-secret"
PUBLIC_URL = "http://bench.local"


def redis_cpu(client) -> float:
    """Seconds of CPU Redis's main thread has used (all threads on Redis < 7)."""
    info = client.info("cpu")
    if "used_cpu_user_main_thread" in info:
        return info["used_cpu_user_main_thread"] + info["used_cpu_sys_main_thread"]
    return info["used_cpu_user"] + info["used_cpu_sys"]


def _delivery(seq: int, events: int) -> tuple[bytes, dict[str, str]]:
    from nexus_core.webhooks import hubspot_uri, sign_hubspot_v3

    body = json.dumps([
        {"eventId": seq * 1000 + i, "subscriptionId": 1, "portalId": 1234,
         "occurredAt": 1564113600000, "subscriptionType": "contact.propertyChange",
         "attemptNumber": 0, "objectId": 5000 + i, "changeSource": "CRM", "appId": 1}
        for i in range(events)]).encode()
    ts = str(int(time.time() * 1000))
    sig = sign_hubspot_v3(SECRET, "POST", hubspot_uri(PUBLIC_URL + "/webhooks/hubspot-bench"),
                          body, ts)
    return body, {"Content-Type": "application/json", "X-HubSpot-Signature-v3": sig,
                  "X-HubSpot-Request-Timestamp": ts}


def _bench_provider():
    """A HubSpot-v3-style webhook provider whose ``handle_webhook`` builds one event per item."""
    from nexus_core import BaseConnector, Provider, SyncPage, WebhookConfig, WebhookEvent

    class BenchHubSpot(BaseConnector):
        provider = Provider(
            id="hubspot-bench", name="HubSpot-style (benchmark)", version="0",
            auth_type="none", streams=("events",),
            webhook=WebhookConfig(scheme="hubspot-v3", secret_envs=("BENCH_WEBHOOK_SECRET",),
                                  account_id_field="portalId", delivery_id_field="eventId"),
        )

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def handle_webhook(self, ctx, request):
            return [WebhookEvent(id=str(e["eventId"]), type=e["subscriptionType"],
                                 provider="hubspot-bench", payload=e)
                    for e in json.loads(request.body)]

    return BenchHubSpot


def _setup(extra_providers=()):
    from nexus_core import runtime
    from nexus_core.config import reset_settings
    from nexus_core.plugins import PluginRegistry, set_registry

    reset_settings()
    runtime.reset()
    registry = PluginRegistry()
    info = registry.register(_bench_provider(), "hubspot-bench")
    assert info.status == "ok", info.reason
    for plugin, name in extra_providers:
        registry.register(plugin, name)
    set_registry(registry)
    return registry


def webhook_round(n: int, events: int) -> tuple[float, float]:
    """(Redis µs per delivery at the ingress, Redis µs per webhook job at the worker)."""
    with environment(BENCH_WEBHOOK_SECRET=SECRET, NEXUS_PUBLIC_URL=PUBLIC_URL,
                     NEXUS_EMBEDDED_REDIS="off"):
        from falcon import testing

        from nexus_core import runtime
        from nexus_core.config import get_settings
        from nexus_core.web import create_app
        from nexus_core.worker import NexusSimpleWorker

        registry = _setup()
        store = runtime.get_store()
        store.add_installation("tenant-1", "install-1", "hubspot-bench", account_id="1234")
        redis = runtime.get_redis()
        client = testing.TestClient(create_app(settings=get_settings(), store=store,
                                               redis=redis, registry=registry))
        requests = [_delivery(seq, events) for seq in range(1, n + 1)]
        client.simulate_post("/webhooks/hubspot-bench", body=requests[0][0],
                             headers=requests[0][1])  # warm-up: scripts loaded, caches filled
        before = redis_cpu(redis)
        for body, headers in requests[1:]:
            resp = client.simulate_post("/webhooks/hubspot-bench", body=body, headers=headers)
            assert resp.status_code == 200 and resp.json["enqueued"] == 1, resp.text
        ingress = (redis_cpu(redis) - before) / (n - 1)
        worker = NexusSimpleWorker(["integration-webhook"], connection=redis)
        before = redis_cpu(redis)
        worker.work(burst=True, logging_level="WARNING")
        jobs = (redis_cpu(redis) - before) / n
        runtime.reset()
        return ingress * 1e6, jobs * 1e6


def handwritten_round(n: int, events: int) -> tuple[float, float]:
    """The same with RQ alone (benchmarks/_handwritten.py ``webhook``): ``Queue.enqueue`` of the
    body, then RQ's ``SimpleWorker``; and the bare limit: one LPUSH + one LPOP per delivery."""
    import redis as redis_lib
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    with environment() as (_env, url, _tmp):
        redis = redis_lib.Redis.from_url(url)
        q = Queue("handwritten", connection=redis, serializer=JSONSerializer)
        bodies = [_delivery(seq, events)[0].decode() for seq in range(n)]
        q.enqueue_call("_handwritten.webhook", args=[bodies[0]])
        SimpleWorker([q], connection=redis, serializer=JSONSerializer).work(burst=True)
        before = redis_cpu(redis)
        for body in bodies:
            q.enqueue_call("_handwritten.webhook", args=[body])
        enqueue = (redis_cpu(redis) - before) / n
        before = redis_cpu(redis)
        SimpleWorker([q], connection=redis, serializer=JSONSerializer).work(
            burst=True, logging_level="WARNING")
        work = (redis_cpu(redis) - before) / n
        assert q.finished_job_registry.count == n + 1, q.failed_job_registry.get_job_ids()
        before = redis_cpu(redis)
        for body in bodies:
            redis.lpush("bare", body)
        for _ in bodies:
            redis.lpop("bare")
        bare = (redis_cpu(redis) - before) / n
        redis.close()
        return (enqueue + work) * 1e6, bare * 1e6


def delta_round(n: int, url: str) -> float:
    """Redis µs per delta: its claim and enqueue (``start_delta``) and its job on a worker."""
    with environment(NEXUS_EMBEDDED_REDIS="off"):
        from nexus_core import runtime
        from nexus_core.service import IntegrationService
        from nexus_core.testing.simulator import paged_provider
        from nexus_core.worker import NexusSimpleWorker

        registry = _setup([(paged_provider(), "sim")])
        store = runtime.get_store()
        service = IntegrationService(registry=registry)
        for i in range(n):
            store.add_installation(f"t{i}", "i1", "sim", config={"base_url": url})
        redis = runtime.get_redis()
        # deltas need a completed backfill: run one backfill per installation first
        for i in range(n):
            service.start_backfill("sim", f"t{i}", "i1")
        NexusSimpleWorker(["integration-backfill"], connection=redis).work(
            burst=True, logging_level="WARNING")
        worker = NexusSimpleWorker(["integration-delta"], connection=redis)
        before = redis_cpu(redis)
        for i in range(n):  # the claim of the sync's marker and the enqueue, as the scheduler's
            service.start_delta("sim", f"t{i}", "i1")
        worker.work(burst=True, logging_level="WARNING")
        per_job = (redis_cpu(redis) - before) / n
        runs = store.list_runs(limit=5)
        assert all(r.status in ("succeeded", "cancelled") for r in runs), runs
        runtime.reset()
        return per_job * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=None, help="units per round")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 1000)
    repeat = args.repeat or (1 if args.quick else 3)
    from nexus_core.log import configure_logging

    configure_logging("WARNING")
    out: dict[str, list[float]] = {}
    for _ in range(repeat):
        for events in (1, 100):
            ingress, job = webhook_round(n, events)
            out.setdefault(f"ingress_{events}", []).append(ingress)
            out.setdefault(f"job_{events}", []).append(job)
            out.setdefault(f"total_{events}", []).append(ingress + job)
            hand, bare = handwritten_round(n, events)
            out.setdefault(f"hand_{events}", []).append(hand)
            out.setdefault(f"bare_{events}", []).append(bare)
            out.setdefault(f"ratio_hand_{events}", []).append((ingress + job) / hand)
            out.setdefault(f"ratio_bare_{events}", []).append((ingress + job) / bare)
    with simulator(100) as url:
        for _ in range(repeat):
            out.setdefault("delta", []).append(delta_round(min(n, 300), url))
    print(f"Redis CPU (main thread) per unit, {n} units per round, {repeat} rounds")
    for events in (1, 100):
        report(f"  webhook delivery of {events} event(s), ingress (us)", out[f"ingress_{events}"])
        report("  its job on a worker (us)", out[f"job_{events}"])
        total = report("  delivery end to end (us)", out[f"total_{events}"])
        report("  hand-written RQ enqueue + SimpleWorker job (us)", out[f"hand_{events}"])
        report("  bare LPUSH + LPOP of the body (us)", out[f"bare_{events}"])
        report("  Redis cost nexus / hand-written", out[f"ratio_hand_{events}"])
        report("  Redis cost nexus / bare", out[f"ratio_bare_{events}"])
        print(f"  => one Redis at 100% of a core: ~{1e6 / total:,.0f} deliveries/s "
              f"({events} event(s) each: ~{events * 1e6 / total:,.0f} events/s)")
    delta = report("  delta: claim, enqueue and its job on a worker (us)", out["delta"])
    print(f"  => one Redis at 100% of a core: ~{1e6 / delta:,.0f} delta jobs/s")


if __name__ == "__main__":
    main()
