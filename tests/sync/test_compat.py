"""Jobs enqueued by the previous release still run.

RQ stores a job's function and failure callback by dotted name (``nexus_core.jobs.run_backfill``,
``nexus_core.jobs.on_job_failure``, ...). The hashes in tests/fixtures/previous_release/jobs.json
were written by the release before the engine moved into ``nexus_core.sync`` (commit ac229ad;
see capture.py there); they are put back into Redis byte for byte and a worker runs them.
"""

import base64
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from nexus_core import queues

JOBS = json.loads((Path(__file__).parents[1] / "fixtures" / "previous_release" /
                   "jobs.json").read_text())
QUEUES = {"backfill": queues.BACKFILL, "delta": queues.DELTA, "webhook": queues.WEBHOOK,
          "health": queues.HEALTH}


def _restore(redis, kind):
    """What the previous release left in Redis for one queued job: its hash, the queue list
    entry and the queue's registration."""
    entry = JOBS[kind]
    fields = {k: base64.b64decode(v) for k, v in entry["hash"].items()}
    redis.hset(f"rq:job:{entry['job_id']}", mapping=fields)
    redis.rpush(f"rq:queue:{QUEUES[kind]}", entry["job_id"])
    redis.sadd("rq:queues", f"rq:queue:{QUEUES[kind]}")
    return entry["job_id"]


def _run_row(store, kind):
    from nexus_core.models import utcnow
    from nexus_core.store import schema

    with store.engine.begin() as conn:
        conn.execute(sa.insert(schema.sync_runs).values(
            run_id=JOBS[kind]["run_id"], tenant_id="t1", install_id="i1", kind=kind,
            stream=None if kind == "backfill" else "records", status="running",
            job_id=JOBS[kind]["job_id"], started_at=utcnow(), records=0, pages=0))


def test_the_captured_jobs_name_the_historical_paths(redis_client):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    names = set()
    for kind in QUEUES:
        raw = {k.encode(): base64.b64decode(v) for k, v in JOBS[kind]["hash"].items()}
        job = Job("x", connection=redis_client, serializer=JSONSerializer)
        job.restore(raw)
        names.add(job.func_name)
        assert raw[b"failure_callback_name"] == b"nexus_core.jobs.on_job_failure"
    assert names == {queues.JOB_BACKFILL, queues.JOB_DELTA, queues.JOB_WEBHOOK, queues.JOB_HEALTH}


def test_the_historical_paths_resolve_to_the_sync_package():
    from rq.utils import import_attribute

    from nexus_core.sync import engine, harness, health, webhook

    assert import_attribute(queues.JOB_BACKFILL) is engine.run_backfill
    assert import_attribute(queues.JOB_DELTA) is engine.run_delta
    assert import_attribute(queues.JOB_WEBHOOK) is webhook.run_webhook
    assert import_attribute(queues.JOB_HEALTH) is health.run_health_check
    assert import_attribute(queues.ON_FAILURE) is harness.on_job_failure


@pytest.mark.parametrize("fork", [False, True], ids=["simple-worker", "fork-worker"])
def test_jobs_enqueued_by_the_previous_release_run(sync_env, fork):
    import json as json_

    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import Health, WebhookEvent, hookimpl

    class Hooks:
        @hookimpl
        def handle_webhook(self, ctx, request):
            assert request.headers == {"X-Test": "1"}
            return [WebhookEvent(id=e["id"], type="x", provider="sim")
                    for e in json_.loads(request.body)]

        @hookimpl
        def health_check(self, ctx):
            return Health(healthy=True, api_accessible=True)

    sync_env.registry.register(Hooks(), "hooks")
    sync_env.install()
    _run_row(sync_env.store, "backfill")
    _run_row(sync_env.store, "delta")
    ids = {kind: _restore(sync_env.redis, kind) for kind in QUEUES}
    if fork:
        from nexus_core.worker import NexusWorker, resolve_queues

        NexusWorker(resolve_queues(None), connection=sync_env.redis).work(
            burst=True, logging_level="WARNING")
    else:
        sync_env.work()

    def job(kind):
        return Job.fetch(ids[kind], sync_env.redis, serializer=JSONSerializer)

    for kind in QUEUES:
        assert job(kind).get_status().value == "finished", kind
    assert job("webhook").return_value() == {"events": 1}
    assert job("health").return_value()["healthy"] is True
    runs = {r.kind: r for r in sync_env.store.list_runs("t1", "i1")}
    assert (runs["backfill"].status, runs["backfill"].records) == ("succeeded", 1000)
    assert runs["backfill"].run_id == JOBS["backfill"]["run_id"]
    # the delta ran before any backfill had left its cursor: cancelled, as it always was
    assert runs["delta"].status == "cancelled"
    if not fork:  # the sink is this process's: a forked horse's deliveries stay in the horse
        assert len(sync_env.sink.ids) == 1000
        assert [e.id for e in sync_env.sink.events] == ["e1"]
