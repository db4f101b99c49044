"""Jobs a worker took off their queue but never started (it lost Redis in a failover, or died,
between RQ's dequeue and its work-horse marking the job started): the recovery sweep
(nexus_core.sync.lease.recover_unstarted, via rq_adapter.requeue_unstarted) puts them back at
the front of their queue after one lease TTL — where RQ would fail them at its 10-minute
maintenance — leaving RQ's keys as RQ's own ``enqueue(at_front=True)`` does."""

import pytest
import redis as redis_lib
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from nexus_core.sync.lease import recover_unstarted

TTL = 2.0


@pytest.fixture
def conn(redis_url):
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


def _queue(conn, name="unstarted"):
    return Queue(name, connection=conn, serializer=JSONSerializer)


def _worker(q):
    return SimpleWorker([q], connection=q.connection, serializer=JSONSerializer)


def _taken(q, *, prepared):
    """Enqueue a job and another behind it; a worker dequeues the first (RQ's BLMOVE into the
    intermediate list: one queue) and, with ``prepared``, records its execution in the
    StartedJobRegistry — then stops there, as a worker that lost Redis does."""
    q.enqueue_call("json.dumps", args=[1], job_id="taken")
    q.enqueue_call("json.dumps", args=[2], job_id="behind")
    worker = _worker(q)
    job, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert job.id == "taken"
    if prepared:
        worker.prepare_execution(job)
    assert job.get_status() == JobStatus.QUEUED and "taken" not in q.job_ids
    return job


@pytest.mark.parametrize("prepared", [False, True], ids=["intermediate-list", "started-registry"])
def test_a_job_taken_but_never_started_goes_back_to_the_front_after_one_lease_ttl(conn, prepared):
    q = _queue(conn)
    _taken(q, prepared=prepared)
    assert ("taken" in q.intermediate_queue.get_job_ids()) is True
    assert (q.started_job_registry.count == 1) is prepared
    t0 = 1_000_000.0
    assert recover_unstarted(conn, [q.name], lease_ttl=TTL, now=t0) == []  # first seen
    assert recover_unstarted(conn, [q.name], lease_ttl=TTL, now=t0 + TTL / 2) == []
    assert recover_unstarted(conn, [q.name], lease_ttl=TTL, now=t0 + TTL) == ["taken"]
    assert q.job_ids == ["taken", "behind"]
    assert q.intermediate_queue.get_job_ids() == [] and q.started_job_registry.count == 0
    assert recover_unstarted(conn, [q.name], lease_ttl=TTL, now=t0 + 10 * TTL) == []  # once
    assert q.job_ids == ["taken", "behind"]
    _worker(q).work(burst=True)
    job = Job.fetch("taken", connection=conn, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "1"


def test_a_started_job_and_a_job_queued_again_are_left_alone(conn):
    q = _queue(conn)
    job = _taken(q, prepared=True)
    _worker(q).prepare_job_execution(job)  # its work-horse marked it started: leases cover it
    assert job.get_status() == JobStatus.STARTED
    t0 = 2_000_000.0
    for now in (t0, t0 + 10 * TTL):
        assert recover_unstarted(conn, [q.name], lease_ttl=TTL, now=now) == []
    other = _queue(conn, "unstarted-2")
    _taken(other, prepared=False)
    other.connection.lpush(other.key, "taken")  # queued again meanwhile (a requeue)
    for now in (t0, t0 + 10 * TTL):
        assert recover_unstarted(conn, [other.name], lease_ttl=TTL, now=now) == []
    assert other.job_ids.count("taken") == 1


def test_the_requeued_job_leaves_rq_keys_as_enqueue_at_front_does(conn, redis_url):
    from urllib.parse import urlsplit

    theirs = redis_lib.Redis.from_url(urlsplit(redis_url)._replace(path="/14").geturl())
    theirs.flushdb()
    try:
        ours_q = _queue(conn)
        _taken(ours_q, prepared=True)
        recover_unstarted(conn, [ours_q.name], lease_ttl=TTL, now=0.0)
        recover_unstarted(conn, [ours_q.name], lease_ttl=TTL, now=TTL)
        their_q = _queue(theirs)
        their_q.enqueue_call("json.dumps", args=[2], job_id="behind")
        their_q.enqueue_call("json.dumps", args=[1], job_id="taken", at_front=True)

        def state(q):
            job = Job.fetch("taken", connection=q.connection, serializer=JSONSerializer)
            return (q.job_ids, q.intermediate_queue.get_job_ids(), q.started_job_registry.count,
                    job.get_status(), job.args)

        assert state(ours_q) == state(their_q)
        assert not [k for k in conn.keys("nexus:unstarted:*")]
    finally:
        theirs.flushdb()
        theirs.close()
