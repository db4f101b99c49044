"""Backfill: page → sinks → commit, continuations, one active backfill, delta handover."""

from nexus_core import queues
from nexus_core.sync import BACKFILL_DONE


def test_backfill_delivers_every_page_then_commits_and_hands_over_delta_cursor(sync_env):
    sync_env.install()
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    assert sync_env.work()
    assert len(sync_env.sink.ids) == 1000 and set(sync_env.sink.ids.values()) == {1}
    cp = sync_env.store.get_checkpoint("t1", "i1", "records", "backfill")
    assert (cp.cursor, cp.seq) == (BACKFILL_DONE, 10)
    assert sync_env.store.get_checkpoint("t1", "i1", "records", "delta").cursor == "delta-0"
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert (run.status, run.pages, run.records, run.job_id) == ("succeeded", 10, 1000, job_id)


def test_second_start_backfill_returns_the_active_job_id(sync_env):
    sync_env.install()
    service = sync_env.service()
    first = service.start_backfill("sim", "t1", "i1")
    assert service.start_backfill("sim", "t1", "i1") == first
    assert service.start_backfill("sim", "t1", "i1", "records") != first  # another stream key
    assert len(sync_env.store.list_runs("t1", "i1")) == 2


def test_time_budget_ends_a_chunk_with_a_continuation_that_resumes(sync_env, monkeypatch):
    from nexus_core.config import reset_settings

    monkeypatch.setenv("NEXUS_BACKFILL_TIME_BUDGET", "0.001")
    reset_settings()
    sync_env.install()
    first = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    # one page per chunk: ten chunks, each a job of its own, one run, every record once
    assert len(sync_env.sink.pages) == 10 and set(sync_env.sink.ids.values()) == {1}
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert (run.status, run.pages, run.records) == ("succeeded", 10, 1000)
    assert first.endswith("__0")
    from nexus_core.sync import BACKFILL_DONE

    sync = queues.sync_key("backfill", "sim", "t1", "i1", None)
    assert queues.active_job_id(sync_env.redis, sync) is None
    assert sync_env.store.get_checkpoint("t1", "i1", "records", "backfill").cursor == BACKFILL_DONE


def test_completed_backfill_started_again_is_a_full_resync(sync_env):
    sync_env.install()
    service = sync_env.service()
    service.start_backfill("sim", "t1", "i1")
    sync_env.work()
    service.start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert set(sync_env.sink.ids.values()) == {2}
    cp = sync_env.store.get_checkpoint("t1", "i1", "records", "delta")
    assert cp.seq == 2 and cp.cursor == "delta-0"


def test_sink_failure_does_not_advance_the_cursor_and_the_retry_resumes(sync_env):
    sync_env.install()
    sync_env.sink.fail_on_page, sync_env.sink.fail_times = 4, 1
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    # pages 1-3 delivered once, page 4 failed then delivered by the retry, the rest once
    assert len(sync_env.sink.ids) == 1000 and set(sync_env.sink.ids.values()) == {1}
    assert sync_env.sim.hits[4] == 2 and sync_env.sim.hits[3] == 1


def test_permanent_provider_error_fails_fast_into_the_dead_letter_queue(sync_env):
    from rq.serializers import JSONSerializer


    sync_env.install()
    sync_env.sim.fail_page(2, 404, times=10)
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    failed = queues.queue(queues.BACKFILL, sync_env.redis).failed_job_registry
    assert failed.get_job_ids() == [job_id]
    assert sync_env.sim.hits[2] == 1  # not retried: a 404 will not go away
    from rq.job import Job

    assert Job.fetch(job_id, sync_env.redis, serializer=JSONSerializer).retries_left == 0
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert run.status == "failed" and "404" in run.error and run.pages == 1
    assert len(sync_env.sink.ids) == 100


def test_transient_errors_are_retried_then_dead_lettered_when_exhausted(sync_env):

    sync_env.install()
    sync_env.sim.fail_page(3, 503, times=10)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert sync_env.sim.hits[3] == 3  # first try + INTEGRATION_MAX_RETRIES=2
    assert queues.queue(queues.BACKFILL, sync_env.redis).failed_job_registry.count == 1
    assert sync_env.store.list_runs("t1", "i1")[0].status == "failed"


def test_auth_error_needing_reauth_fails_fast_and_marks_the_installation(sync_env):
    from nexus_core import AuthError, hookimpl

    class Revoked:
        @hookimpl(wrapper=True)
        def backfill(self, ctx, stream, cursor):
            raise AuthError("refresh token revoked", needs_reauth=True)
            yield  # a wrapper is a generator

    assert sync_env.registry.register(Revoked(), "revoked").status == "ok"
    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert queues.queue(queues.BACKFILL, sync_env.redis).failed_job_registry.count == 1
    assert sync_env.store.get_installation("t1", "i1").status == "needs_reauth"
    assert sync_env.store.list_runs("t1", "i1")[0].status == "failed"
    # and nothing is started for it any more
    import pytest

    with pytest.raises(AuthError, match="needs re-authorization"):
        sync_env.service().start_backfill("sim", "t1", "i1")


def test_rate_limited_page_reschedules_without_consuming_a_retry(sync_env):
    import time

    from rq.job import Job
    from rq.serializers import JSONSerializer

    sync_env.install()
    sync_env.sim.rate_limit_page(5, retry_after=1)
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    job = Job.fetch(job_id, sync_env.redis, serializer=JSONSerializer)
    assert job.get_status().value == "scheduled"
    assert job.retries_left == 2 and job.number_of_retries == 1
    assert len(sync_env.sink.ids) == 400
    time.sleep(1.1)
    from nexus_core.worker import NexusSimpleWorker, resolve_queues

    # A burst worker moves due jobs only when it wins RQ's scheduler lock; a scheduler of a worker
    # still stopping elsewhere may hold it (and enqueue the job itself), so poll a few seconds.
    deadline = time.monotonic() + 10
    while len(sync_env.sink.ids) < 1000 and time.monotonic() < deadline:
        NexusSimpleWorker(resolve_queues(None), connection=sync_env.redis).work(
            burst=True, with_scheduler=True, logging_level="WARNING")
        time.sleep(0.2)
    assert len(sync_env.sink.ids) == 1000 and set(sync_env.sink.ids.values()) == {1}
    assert sync_env.store.list_runs("t1", "i1")[0].status == "succeeded"


def test_multi_stream_backfill_and_one_stream_backfill(sync_env):
    from nexus_core.testing.simulator import paged_provider

    sync_env.registry.register(paged_provider("multi", ("a", "b")), "multi")
    sync_env.install(provider="multi")
    sync_env.service().start_backfill("multi", "t1", "i1", "b")
    sync_env.work()
    assert len(sync_env.sink.pages) == 10
    assert sync_env.store.get_checkpoint("t1", "i1", "a", "backfill").seq == 0
    sync_env.service().start_backfill("multi", "t1", "i1")
    sync_env.work()
    assert len(sync_env.sink.pages) == 20  # b was complete: only a ran


def test_a_provider_repeating_its_cursor_is_a_permanent_error_not_an_endless_loop(sync_env):
    from nexus_core import Record, SyncPage, hookimpl
    from nexus_core.testing.simulator import paged_provider

    class Stuck:
        provider = paged_provider("stuck").provider

        @hookimpl
        def nexus_provider(self):
            return self.provider

        @hookimpl
        def backfill(self, ctx, stream, cursor):
            return SyncPage(records=[Record(id="x", stream=stream)], next_cursor="same")

    sync_env.registry.register(Stuck(), "stuck")
    sync_env.store.add_installation("t1", "s1", "stuck", config={})
    sync_env.service().start_backfill("stuck", "t1", "s1")
    sync_env.work()
    run = sync_env.store.list_runs("t1", "s1")[0]
    assert run.status == "failed" and "paging loop" in run.error
    assert run.pages == 1  # the first page was delivered and committed, then it stopped
