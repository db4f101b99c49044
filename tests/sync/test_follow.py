"""`nexus sync ... --wait`: the sync's progress stream, read as it is written."""

import json

from nexus_core import queues


def _events(redis, key):
    return [json.loads(fields[b"e"]) for _id, fields in redis.xrange(key)]


def test_a_sync_started_with_redis_alone_checks_records_and_reports_through_its_stream(
        sync_env, monkeypatch):
    from nexus_core.commands.sync import _wait
    from nexus_core.config import reset_settings
    from nexus_core.sync import SyncOptions
    from nexus_core.sync.enqueue import start_sync_by_job
    from nexus_core.sync.follow import PREFIX

    monkeypatch.setenv("NEXUS_BACKFILL_TIME_BUDGET", "0.001")  # a chunk per page
    reset_settings()
    sync_env.install()
    job_id = start_sync_by_job(sync_env.redis, "backfill", "sim", "t1", "i1", opts=SyncOptions())
    assert sync_env.store.list_runs("t1", "i1") == []  # nothing written to the store yet
    sync_env.work()
    events = _events(sync_env.redis, PREFIX + job_id)
    kinds = [e["type"] for e in events]
    assert kinds.count("continued") == 9 and kinds[-1] == "done"
    assert events[-1]["status"] == "succeeded" and events[-1]["records"] == 1000
    # the job recorded the run itself; the follower gets the totals across all ten chunks
    (run,) = sync_env.store.list_runs("t1", "i1")
    assert (run.status, run.pages, run.records) == ("succeeded", 10, 1000)
    result = _wait(sync_env.redis, job_id, quiet=True)
    assert (result["status"], result["pages"], result["records"], result["run_id"]) == \
        ("succeeded", 10, 1000, run.run_id)
    # a second start of a completed backfill is a full re-sync, decided by the job
    again = start_sync_by_job(sync_env.redis, "backfill", "sim", "t1", "i1", opts=SyncOptions())
    sync_env.work()
    assert _wait(sync_env.redis, again, quiet=True)["records"] == 1000
    assert set(sync_env.sink.ids.values()) == {2}


def test_a_problem_found_by_the_job_ends_the_followed_sync_with_its_reason(sync_env):
    from nexus_core.commands.sync import _wait
    from nexus_core.sync import SyncOptions
    from nexus_core.sync.enqueue import start_sync_by_job

    sync_env.install()
    sync_env.store.set_status("t1", "i1", "disabled")
    job_id = start_sync_by_job(sync_env.redis, "delta", "sim", "t1", "i1", opts=SyncOptions())
    sync_env.work()
    result = _wait(sync_env.redis, job_id, quiet=True)
    assert result["status"] == "failed" and "disabled" in result["error"]
    missing = start_sync_by_job(sync_env.redis, "backfill", "sim", "t1", "nope",
                                opts=SyncOptions())
    sync_env.work()
    result = _wait(sync_env.redis, missing, quiet=True)
    assert result["status"] == "failed" and "not found" in result["error"]


def test_a_job_that_published_nothing_is_followed_through_rq(sync_env):
    """A job run by a worker of an older release writes no progress stream: the follower
    reads RQ's own record of it once nothing came for a while."""
    from nexus_core.commands.sync import _wait
    from nexus_core.sync.follow import PREFIX

    sync_env.install()
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    sync_env.redis.delete(PREFIX + job_id)
    result = _wait(sync_env.redis, job_id, quiet=True)
    assert (result["status"], result["records"]) == ("succeeded", 1000)
    assert queues.queue(queues.BACKFILL, sync_env.redis).finished_job_registry.count == 1
