"""Contract tests for every use of RQ beyond its public API (nexus_core.sync.rq_adapter): each
compares what we do with what RQ itself does. Run against the newest RQ release by
``tox -e contract-latest``; a failure here means the adapter must follow an RQ change.

Where a comparison needs the same job id twice, RQ's own side runs in a second database of the
same Redis server."""

import time

import pytest
import redis as redis_lib
from rq import Callback, Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from nexus_core.sync import rq_adapter

#: Fields that hold the moment they were written: compared for presence, not value.
TIMESTAMPS = {"created_at", "enqueued_at"}


@pytest.fixture
def dbs(redis_url):
    from urllib.parse import urlsplit

    ours = redis_lib.Redis.from_url(redis_url)
    url = urlsplit(redis_url)
    theirs = redis_lib.Redis.from_url(url._replace(path="/15").geturl())
    assert theirs.connection_pool.connection_kwargs["db"] != \
        ours.connection_pool.connection_kwargs.get("db", 0)
    theirs.flushdb()
    yield ours, theirs
    theirs.flushdb()
    ours.close()
    theirs.close()


def _queue(connection, name="contract"):
    return Queue(name, connection=connection, serializer=JSONSerializer)


def _options(ttl):
    return {
        "kwargs": {"provider": "p", "tenant_id": "t", "install_id": "i", "request": {"a": 1}},
        "job_id": "contract-job", "description": "webhook p t/i",
        "retry": Retry(max=2, interval=[1, 2]), "on_failure": Callback("json.dumps"),
        **({"ttl": ttl} if ttl else {}),
    }


@pytest.mark.parametrize("ttl", [None, 600])
def test_enqueue_unless_marked_writes_the_job_enqueue_call_writes(dbs, ttl):
    ours, theirs = dbs
    q = _queue(ours)
    job = q.create_job("json.dumps", status=JobStatus.QUEUED, **_options(ttl))
    assert rq_adapter.enqueue_unless_marked(ours, q, job, mark_key="mark", mark_ttl=60,
                                            extra={"extra_field": b"raw \x00 bytes"}) == 1
    _queue(theirs).enqueue_call("json.dumps", **_options(ttl))

    mine, rqs = ours.hgetall("rq:job:contract-job"), theirs.hgetall("rq:job:contract-job")
    assert mine.pop(b"extra_field") == b"raw \x00 bytes"
    assert mine.keys() == rqs.keys()
    for field in mine:
        if field.decode() in TIMESTAMPS:
            assert mine[field] and rqs[field], field
        else:
            assert mine[field] == rqs[field], field
    assert ours.lrange("rq:queue:contract", 0, -1) == theirs.lrange("rq:queue:contract", 0, -1)
    assert ours.smembers("rq:queues") == theirs.smembers("rq:queues")
    assert (ours.ttl("rq:job:contract-job") > 0) == (theirs.ttl("rq:job:contract-job") > 0)
    assert ours.ttl("mark") > 0
    # and RQ reads our job back as its own
    a = Job.fetch("contract-job", connection=ours, serializer=JSONSerializer)
    b = Job.fetch("contract-job", connection=theirs, serializer=JSONSerializer)
    for attr in ("func_name", "args", "kwargs", "description", "origin", "timeout", "ttl",
                 "retries_left", "retry_intervals", "result_ttl", "failure_ttl"):
        assert getattr(a, attr) == getattr(b, attr), attr
    assert a.get_status() == b.get_status() == JobStatus.QUEUED
    assert a.failure_callback is b.failure_callback


def test_enqueue_unless_marked_does_nothing_when_marked(dbs):
    ours, _ = dbs
    q = _queue(ours)
    ours.set("mark", b"done")
    job = q.create_job("json.dumps", status=JobStatus.QUEUED, **_options(None))
    assert rq_adapter.enqueue_unless_marked(ours, q, job, mark_key="mark", mark_ttl=60) == 0
    assert not ours.exists("rq:job:contract-job") and q.count == 0


def test_a_dequeued_job_is_restored_from_the_hash_the_dequeue_read(dbs):
    ours, _ = dbs
    q = _queue(ours)
    job = q.create_job("json.dumps", status=JobStatus.QUEUED, **_options(None))
    rq_adapter.enqueue_unless_marked(ours, q, job, mark_key="mark", mark_ttl=60,
                                     extra={"extra_field": b"body"})
    ours.config_resetstat()
    cls = rq_adapter.job_class_keeping("extra_field")
    dequeued, _ = Queue.dequeue_any([q], timeout=None, connection=ours, job_class=cls,
                                    serializer=JSONSerializer)
    assert isinstance(dequeued, cls) and dequeued.extra_fields == {"extra_field": b"body"}
    assert "cmdstat_hget" not in ours.info("commandstats")  # the dequeue's HGETALL, no more
    fetched = cls.fetch("contract-job", connection=ours, serializer=JSONSerializer)
    assert fetched.extra_fields == {"extra_field": b"body"}


def _started(connection, *, limit_key):
    """A job as a worker leaves it while running it (dequeued, execution prepared), plus a
    second job waiting for the same one-slot rate limit."""
    from rq import RateLimit

    q = _queue(connection)
    for n in (1, 2):
        q.enqueue_call("json.dumps", args=[n], job_id=f"limited-{n}",
                       rate_limit=RateLimit(limit_key, 1))
    worker = SimpleWorker([q], connection=connection, serializer=JSONSerializer)
    job, _queue_ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert job.get_status() == JobStatus.STARTED
    return q, job


def test_fail_abandoned_leaves_the_job_as_rq_cleanup_of_an_abandoned_job_does(dbs):
    from rq.rate_limit import RateLimitRegistry

    ours, theirs = dbs
    q_ours, job = _started(ours, limit_key="contract-limit")
    q_theirs, _ = _started(theirs, limit_key="contract-limit")

    # ours (nexus_core.sync.lease.recover_abandoned, minus the requeue)
    execution_ids = [e for j, e in q_ours.started_job_registry.get_job_and_execution_ids()
                     if j == job.id]
    with ours.pipeline() as pipe:
        pipe.zrem(q_ours.started_job_registry.key, f"{job.id}:{execution_ids[0]}")
        rq_adapter.fail_abandoned(job, "abandoned: test", pipe)
        pipe.execute()
    promoted = rq_adapter.release_rate_limit_slot(job)
    # RQ's, for a job without retries whose execution expired
    q_theirs.started_job_registry.cleanup(timestamp=time.time() + 10_000)

    def state(conn, q):
        failed = Job.fetch(job.id, connection=conn, serializer=JSONSerializer)
        limits = RateLimitRegistry("contract-limit", connection=conn)
        return {
            "status": failed.get_status(), "result": failed.latest_result().type.name,
            "ended_at set": failed.ended_at is not None, "failed": q.failed_job_registry.get_job_ids(),
            "started": q.started_job_registry.get_job_ids(), "queued": q.job_ids,
            "waiting for a slot": limits.get_rate_limited_job_count(),
            "waiting job": Job.fetch("limited-2", connection=conn,
                                     serializer=JSONSerializer).get_status(),
        }

    assert state(ours, q_ours) == state(theirs, q_theirs)
    assert state(ours, q_ours)["status"] == JobStatus.FAILED
    assert state(ours, q_ours)["queued"] == ["limited-2"]  # the slot went to the waiting job
    assert promoted == ["limited-2"]
    mine = Job.fetch(job.id, connection=ours, serializer=JSONSerializer).latest_result()
    assert "abandoned: test" in mine.exc_string


def test_traceback_once_per_job_still_runs_the_workers_exception_handlers(redis_client, caplog):
    class Worker(rq_adapter.TracebackOncePerJob, SimpleWorker):
        pass

    seen = []

    def handler(job, exc_type, exc_value, tb):
        seen.append(exc_type)

    q = _queue(redis_client)
    q.enqueue_call("builtins.int", args=["not a number"], job_id="always-fails",
                   retry=Retry(max=2))
    Worker([q], connection=redis_client, serializer=JSONSerializer,
           exception_handlers=[handler]).work(burst=True)
    assert seen == [ValueError] * 3  # every attempt reached the handlers
    job = Job.fetch("always-fails", connection=redis_client, serializer=JSONSerializer)
    assert job.meta[rq_adapter.FAILURES_META] == 3
    assert job.get_status() == JobStatus.FAILED
    tracebacks = [r for r in caplog.records if "Traceback (most recent call last)" in
                  r.getMessage()]
    assert len(tracebacks) == 1  # RQ's own message, at the first failure only


def test_the_claim_scripts_read_rqs_job_status_field(redis_client):
    """queues.CLAIM_ACTIVE_LUA and the cron fan-out's claim read ``<job key>`` field
    ``status`` with RQ's status names."""
    from datetime import timedelta

    from nexus_core import queues

    q = _queue(redis_client)
    queued = q.enqueue_call("json.dumps", args=[1], job_id="s-queued")
    scheduled = q.enqueue_in(timedelta(hours=1), "json.dumps", 1, job_id="s-scheduled")
    for job in (queued, scheduled):
        assert job.key == Job.redis_job_namespace_prefix + job.id
        raw = redis_client.hget(Job.redis_job_namespace_prefix + job.id, "status")
        assert raw.decode() == job.get_status(refresh=True).value
    assert {s.value for s in JobStatus} >= set(queues.ACTIVE_STATUSES)
    assert scheduled.get_status().value in queues.ACTIVE_STATUSES
