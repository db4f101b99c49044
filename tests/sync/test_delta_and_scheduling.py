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
    from nexus_core.scheduler import build_scheduler, enqueue_slot
    from nexus_core.sync import SyncOptions

    _backfilled(sync_env)
    sync_env.install(tenant="t2", install="i9")
    sync_env.store.add_installation("t3", "off", "sim", config={})
    sync_env.store.set_status("t3", "off", "disabled")
    opts = SyncOptions()
    first = enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=opts)
    second = enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=opts)
    assert len(first) == 2 and second == []
    assert queues.queue(queues.DELTA, sync_env.redis).count == 2
    sync_env.work()
    # the jobs are gone from the queue but their ids stay taken for the slot
    assert enqueue_slot(sync_env.redis, sync_env.store, 42, interval=300, opts=opts) == []
    assert len(enqueue_slot(sync_env.redis, sync_env.store, 43, interval=300, opts=opts)) == 2

    # RQ's CronScheduler with our fan-out entry: two schedulers, one enqueue per installation
    a, b = build_scheduler(sync_env.redis), build_scheduler(sync_env.redis)
    for s in (a, b):
        s.get_jobs()[0].next_enqueue_time = s.get_jobs()[0].next_enqueue_time.replace(year=2000)
        assert s.enqueue_jobs()
    assert queues.queue(queues.DELTA, sync_env.redis).count == 2
    job = queues.queue(queues.DELTA, sync_env.redis).jobs[0]
    assert "__slot" in job.id and job.serializer.__name__ == "JSONSerializer"


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
