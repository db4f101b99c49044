"""Delta from the stored cursor, periodic deltas on RQ's cron scheduler, webhooks and health."""

from nexus_core import queues


def _backfilled(sync_env, **config):
    sync_env.install(**config)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    sync_env.sink.pages.clear()
    sync_env.sink.ids.clear()


def test_delta_is_skipped_until_a_backfill_has_set_the_delta_cursor(sync_env):
    sync_env.install()
    sync_env.sim.changes = [{"id": "rec-0000001", "index": 1}]
    sync_env.service().start_delta("sim", "t1", "i1")
    sync_env.work()
    assert sync_env.sink.pages == []
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert run.status == "cancelled" and "no completed backfill yet" in run.error


def test_delta_reads_from_the_stored_cursor_and_commits_after_the_sink(sync_env):
    _backfilled(sync_env)
    sync_env.sim.changes = [{"id": "rec-0000007", "index": 7}, {"id": "rec-0000008", "index": 8}]
    sync_env.sink.fail_on_page, sync_env.sink.fail_times = 1, 1
    sync_env.sink.calls = 0
    service = sync_env.service()
    job_id = service.start_delta("sim", "t1", "i1")
    assert service.start_delta("sim", "t1", "i1") == job_id  # one active delta
    sync_env.work()
    # the first attempt's sink failed: the cursor stayed; the retry delivered the page once
    assert sync_env.sink.pages == [["rec-0000007", "rec-0000008"]]
    cp = sync_env.store.get_checkpoint("t1", "i1", "records", "delta")
    assert cp.seq == 2  # backfill handover + this delta's page
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert (run.kind, run.status, run.records) == ("delta", "succeeded", 2)


def test_each_cron_slot_is_enqueued_once_even_with_two_schedulers(sync_env):
    import time

    from nexus_core.scheduler import DeltaScheduler, enqueue_slot
    from nexus_core.sync import SyncOptions

    _backfilled(sync_env)
    sync_env.install(tenant="t2", install="i9")
    sync_env.store.add_installation("t3", "off", "sim", config={})
    sync_env.store.set_status("t3", "off", "disabled")
    opts = SyncOptions()
    # slot 42 is long over: its deltas are due at once
    first = enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=opts)
    second = enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=opts)
    assert len(first) == 2 and second == []
    delta_q = queues.queue(queues.DELTA, sync_env.redis)
    assert delta_q.count == 2
    sync_env.work()
    # the jobs are gone from the queue but their ids stay taken for the slot
    assert enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=opts) == []
    assert len(enqueue_slot(sync_env.redis, sync_env.store, 43, interval=300, opts=opts)) == 2
    sync_env.work()

    # two schedulers ticking in the current slot: one delta per installation, at its phase
    from nexus_core.config import get_settings

    now = time.time()
    a, b = (DeltaScheduler(sync_env.redis, get_settings(), interval=300, store=sync_env.store)
            for _ in range(2))
    ran_a, ran_b = a.tick(now), b.tick(now)
    assert len(ran_a.jobs) == 2 and ran_b.jobs == [] and ran_b.taken == 2
    assert a.tick(now) is None  # once per slot
    ids = delta_q.scheduled_job_registry.get_job_ids() + delta_q.job_ids
    assert sorted(ids) == sorted(ran_a.jobs)
    job = delta_q.fetch_job(ids[0])
    assert "__slot" in job.id and job.serializer.__name__ == "JSONSerializer"


def _installs(store, n, start=0):
    """``n`` active installations in one statement (add_installation commits one by one)."""
    import sqlalchemy as sa

    from nexus_core.models import utcnow
    from nexus_core.store import schema

    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(schema.installations), [
            {"tenant_id": f"t{i % 7}", "install_id": f"i{i:05d}", "provider": "sim",
             "account_id": None, "status": "active", "config": "{}", "created_at": now,
             "updated_at": now} for i in range(start, start + n)])


def test_periodic_deltas_are_spread_over_the_interval_at_a_stable_phase(sync_env):
    from nexus_core.scheduler import fan_out
    from nexus_core.sync import SyncOptions

    _installs(sync_env.store, 400)
    interval, slot = 300, 10_000_000
    start = slot * interval
    out = fan_out(sync_env.redis, sync_env.store, slot, interval=interval, opts=SyncOptions(),
                  batch_size=150, now=start)
    assert len(out.jobs) == out.installations == 400
    registry = queues.queue(queues.DELTA, sync_env.redis).scheduled_job_registry
    due = dict(sync_env.redis.zrange(registry.key, 0, -1, withscores=True))
    assert len(due) + queues.queue(queues.DELTA, sync_env.redis).count == 400
    offsets = sorted(score - start for score in due.values())
    assert offsets[0] >= 0 and offsets[-1] < interval
    tenths = [sum(1 for o in offsets if k * 30 <= o < (k + 1) * 30) for k in range(10)]
    assert min(tenths) >= 15 and max(tenths) <= 70, tenths  # ~40 each: no herd
    # the next slot puts every installation at the same offset again
    sync_env.redis.delete(*(queues.active_key(queues.sync_key("delta", "sim", f"t{i % 7}",
                                                              f"i{i:05d}", None))
                            for i in range(400)))
    fan_out(sync_env.redis, sync_env.store, slot + 1, interval=interval, opts=SyncOptions(),
            now=start + interval)
    later = dict(sync_env.redis.zrange(registry.key, 0, -1, withscores=True))
    for member, score in due.items():
        twin = member.replace(f"slot{slot}".encode(), f"slot{slot + 1}".encode())
        assert abs(later[twin] - score - interval) < 0.01


def test_a_scheduler_starting_mid_slot_spreads_the_passed_phases_over_what_is_left(sync_env):
    from nexus_core.scheduler import fan_out
    from nexus_core.sync import SyncOptions

    _installs(sync_env.store, 200)
    interval, slot = 300, 10_000_000
    now = slot * interval + 200  # two thirds in
    fan_out(sync_env.redis, sync_env.store, slot, interval=interval, opts=SyncOptions(), now=now)
    delta_q = queues.queue(queues.DELTA, sync_env.redis)
    due = [s for _m, s in sync_env.redis.zrange(delta_q.scheduled_job_registry.key, 0, -1,
                                                 withscores=True)]
    assert len(due) + delta_q.count == 200
    assert all(now <= s < (slot + 1) * interval for s in due)
    assert delta_q.count < 10  # at once: only those due within the next second


def test_an_installation_whose_last_delta_still_runs_skips_the_slot(sync_env):
    from nexus_core.scheduler import fan_out
    from nexus_core.sync import SyncOptions

    sync_env.install()
    first = fan_out(sync_env.redis, sync_env.store, 42, interval=300, opts=SyncOptions())
    assert len(first.jobs) == 1  # queued, no worker yet
    second = fan_out(sync_env.redis, sync_env.store, 43, interval=300, opts=SyncOptions())
    assert second.jobs == [] and second.skipped == 1


def test_a_manual_delta_runs_the_scheduled_periodic_delta_now(sync_env):
    import time

    from nexus_core.scheduler import fan_out
    from nexus_core.sync import SyncOptions

    _backfilled(sync_env)
    interval = 3600
    slot = int(time.time() // interval)
    now = slot * interval  # every phase still ahead
    out = fan_out(sync_env.redis, sync_env.store, slot, interval=interval, opts=SyncOptions(),
                  now=now)
    delta_q = queues.queue(queues.DELTA, sync_env.redis)
    assert delta_q.count == 0  # t1/i1's phase is ~1,085 s into the hour
    assert delta_q.scheduled_job_registry.get_job_ids() == out.jobs
    assert sync_env.service().start_delta("sim", "t1", "i1") == out.jobs[0]
    assert delta_q.job_ids == out.jobs and delta_q.scheduled_job_registry.count == 0
    sync_env.work()
    assert delta_q.finished_job_registry.get_job_ids() == out.jobs


def test_webhook_job_normalizes_the_delivery_and_hands_events_to_the_sinks(sync_env):
    import json

    from nexus_core import WebhookEvent, WebhookRequest, hookimpl
    from nexus_core.converters import unstructure

    class Hooks:
        @hookimpl
        def handle_webhook(self, ctx, request):
            assert ctx.account_id == "acct-1"
            return [WebhookEvent(id=e["id"], type="x", provider="sim")
                    for e in json.loads(request.body)]

    sync_env.registry.register(Hooks(), "hooks")
    sync_env.store.add_installation("t1", "i1", "sim", account_id="acct-1", config={})
    req = WebhookRequest("POST", "http://x/webhooks/sim", {"a": "b"},
                         json.dumps([{"id": "e1"}, {"id": "e2"}]).encode())
    jid = sync_env.service().schedule_webhook_job("sim", "t1", "i1", req)
    assert sync_env.service().schedule_webhook_job("sim", "t1", "i1", req) == jid
    # what the web app enqueues: the request, its raw body in the job's hash
    from nexus_core.jobs import webhook_request_of

    queued = webhook_request_of(queues.queue(queues.WEBHOOK, sync_env.redis).jobs[0])
    assert unstructure(queued) == unstructure(req)
    sync_env.redis.config_resetstat()
    sync_env.work()
    assert [e.id for e in sync_env.sink.events] == ["e1", "e2"]
    # the body came with the worker's own HGETALL of the job: no second read of the hash
    assert "cmdstat_hget" not in sync_env.redis.info("commandstats")


def test_a_webhook_result_delivers_fetched_records_by_stream_before_its_events(sync_env):
    import json

    from nexus_core import Record, WebhookEvent, WebhookRequest, WebhookResult, hookimpl

    order = []

    class Hooks:
        @hookimpl
        def handle_webhook(self, ctx, request):
            events = [WebhookEvent(id=e["id"], type="x", provider="sim", object_id=e["obj"])
                      for e in json.loads(request.body)]
            return WebhookResult(events=events, records=[
                Record(id="c1", stream="contacts", data={"name": "fetched"}),
                Record(id="d1", stream="deals", deleted=True),
                Record(id="c2", stream="contacts")])

        @hookimpl
        def process_records(self, ctx, stream, records):
            order.append((stream, [(r.id, r.deleted) for r in records]))

        @hookimpl
        def process_events(self, ctx, events):
            order.append(("events", [e.id for e in events]))

    sync_env.registry.register(Hooks(), "hooks")
    sync_env.store.add_installation("t1", "i1", "sim", config={})
    body = json.dumps([{"id": "e1", "obj": "c1"}]).encode()
    jid = sync_env.service().schedule_webhook_job(
        "sim", "t1", "i1", WebhookRequest("POST", "http://x/webhooks/sim", {}, body))
    sync_env.work(["webhook"])
    assert order == [("contacts", [("c1", False), ("c2", False)]), ("deals", [("d1", True)]),
                     ("events", ["e1"])]
    from rq.job import Job
    from rq.serializers import JSONSerializer

    assert Job.fetch(jid, sync_env.redis, serializer=JSONSerializer).return_value() == {
        "events": 1, "records": 3}


def test_a_failed_webhook_job_keeps_its_body_and_succeeds_when_requeued(sync_env):
    """The raw body lives in the job's hash: a job moved to the dead-letter queue and requeued
    (RQ re-saves the job) still carries it."""
    import json

    from rq.registry import FailedJobRegistry

    from nexus_core import WebhookEvent, WebhookRequest, hookimpl

    attempts = []

    class Hooks:
        @hookimpl
        def handle_webhook(self, ctx, request):
            attempts.append(request.body)
            if len(attempts) == 1:
                raise PermissionError("sink down")  # not retryable: straight to the DLQ
            return [WebhookEvent(id=e["id"], type="x", provider="sim")
                    for e in json.loads(request.body)]

    sync_env.registry.register(Hooks(), "hooks")
    sync_env.store.add_installation("t1", "i1", "sim", config={})
    body = json.dumps([{"id": "e1"}]).encode()
    jid = sync_env.service().schedule_webhook_job(
        "sim", "t1", "i1", WebhookRequest("POST", "http://x/webhooks/sim", {}, body))
    sync_env.redis.hset(f"rq:job:{jid}", "retries_left", 0)  # no automatic retry
    sync_env.work(["webhook"])
    failed = FailedJobRegistry(queues.WEBHOOK, connection=sync_env.redis,
                               serializer=queues.queue(queues.WEBHOOK, sync_env.redis).serializer)
    assert failed.get_job_ids() == [jid]
    failed.requeue(jid)
    sync_env.work(["webhook"])
    assert attempts == [body, body]
    assert [e.id for e in sync_env.sink.events] == ["e1"]


def test_health_check_job_returns_the_health(sync_env):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import Health, hookimpl

    class Healthy:
        @hookimpl
        def health_check(self, ctx):
            return Health(healthy=True, api_accessible=True)

    sync_env.registry.register(Healthy(), "healthy")
    sync_env.install()
    jid = sync_env.service().schedule_health_check("sim", "t1", "i1")
    sync_env.work()
    result = Job.fetch(jid, sync_env.redis, serializer=JSONSerializer).return_value()
    assert result["healthy"] is True and result["api_accessible"] is True


def test_queue_stats_and_connector_stats(sync_env):
    sync_env.install()
    service = sync_env.service()
    service.start_backfill("sim", "t1", "i1")
    stats = service.get_queue_stats()
    assert stats["queues"][queues.BACKFILL]["queued"] == 1
    assert stats["rate_limits"]["nexus-backfill-t1"]["running"] == 1
    sync_env.work()
    stats = service.get_queue_stats()
    assert stats["queues"][queues.BACKFILL]["finished"] == 1
    assert set(stats["queues"]) == set(queues.ALL_QUEUES)
    conn = service.get_connector_stats(sync=True)
    assert conn["installations"] == {"active": 1} and conn["recent_runs"] == {"succeeded": 1}


def test_a_job_in_the_workers_own_process_writes_a_lease_only_once_it_runs_long(sync_env,
                                                                                 monkeypatch):
    """``--no-fork``: one keeper thread per process refreshes the leases of jobs running longer
    than TTL/3; a short job writes none (recovery only looks at jobs older than one TTL)."""
    import time

    from nexus_core import hookimpl
    from nexus_core.config import reset_settings

    monkeypatch.setenv("NEXUS_JOB_LEASE_TTL", "0.6")
    reset_settings()
    seen = []

    class SlowSink:
        @hookimpl
        def process_records(self, ctx, stream, records):
            key = queues.lease_key(ctx.metadata["job_id"])
            if records[0].id == "rec-0000000":
                seen.append(("start", sync_env.redis.exists(key)))
                time.sleep(0.5)
                seen.append(("after 0.5 s", sync_env.redis.exists(key)))

    sync_env.registry.register(SlowSink(), "slow-sink")
    sync_env.install()
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert seen == [("start", 0), ("after 0.5 s", 1)]
    assert not sync_env.redis.exists(queues.lease_key(job_id))  # released at the end
    # a short job: no lease write at all (Redis reports every write to a lease key)
    sync_env.registry.unregister(name="slow-sink")
    sync_env.redis.config_set("notify-keyspace-events", "KA")
    watch = sync_env.redis.pubsub()
    watch.psubscribe("__keyspace@*__:nexus:lease:*")
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    events = []
    while (message := watch.get_message(timeout=0.2)) is not None:
        events.append(message)
    watch.close()
    assert [e["type"] for e in events] == ["psubscribe"]


def test_a_periodic_delta_without_records_moves_its_cursor_and_records_no_run(sync_env):
    from nexus_core.scheduler import enqueue_slot
    from nexus_core.sync import SyncOptions

    _backfilled(sync_env)
    runs = len(sync_env.store.list_runs("t1", "i1"))
    sync_env.sim.moving_delta_cursor = True
    sync_env.store.commit_page("t1", "i1", "records", "delta", "7", seq=2)
    enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=SyncOptions())
    sync_env.work()
    cp = sync_env.store.get_checkpoint("t1", "i1", "records", "delta")
    assert (cp.cursor, cp.seq) == ("8", 3)
    assert len(sync_env.store.list_runs("t1", "i1")) == runs  # nothing read, no run
    sync_env.sim.changes = [{"id": "rec-0000001", "index": 1}]
    enqueue_slot(sync_env.redis, sync_env.store, 43, interval=300, opts=SyncOptions())
    sync_env.work()
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert (run.kind, run.status, run.records, run.pages) == ("delta", "succeeded", 1, 1)
