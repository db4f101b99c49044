"""A worker reads a webhook job's installation from its own copy, dropped when the installation
changes — whichever process changed it."""

import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from nexus_core import queues


@pytest.fixture
def installation_reads(sync_env):
    """SELECTs of the installations table this process sends."""
    seen = []

    def record(conn, cursor, statement, params, context, executemany):
        warm_up = "(nexus warm-up)" in str(params)  # Store.warm_up compiling the SQL
        if statement.lstrip().upper().startswith("SELECT") and \
                "FROM nexus_installations" in statement and not warm_up:
            seen.append(statement)

    sa.event.listen(sync_env.store.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sync_env.store.engine, "before_cursor_execute", record)


@pytest.fixture
def hooks(sync_env):
    from nexus_core import WebhookEvent, hookimpl

    class Hooks:
        seen = []

        @hookimpl
        def handle_webhook(self, ctx, request):
            self.seen.append(ctx.config.get("colour"))
            return [WebhookEvent(id="e", type="x", provider="sim")]

    sync_env.registry.register(Hooks(), "hooks")
    return Hooks


def _deliver(sync_env, n):
    from nexus_core import WebhookRequest

    service = sync_env.service()
    return service.schedule_webhook_job("sim", "t1", "i1", WebhookRequest(
        "POST", "http://x/webhooks/sim/i1", {}, json.dumps([{"n": n}]).encode()))


def _wait_for(predicate, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_reads_an_installation_once_until_it_changes(sync_env, installation_reads,
                                                              hooks):
    from nexus_core.sync import installations

    sync_env.store.add_installation("t1", "i1", "sim", config={"colour": "red"})
    for n in range(3):
        _deliver(sync_env, n)
    installation_reads.clear()
    sync_env.work(["webhook"])
    assert hooks.seen == ["red"] * 3
    assert len(installation_reads) == 1  # one read for three jobs
    cache = installations.cache(sync_env.redis)
    seen = cache.changes_seen
    sync_env.store.update_installation("t1", "i1", config={"colour": "blue"})
    _wait_for(lambda: cache.changes_seen > seen, "the change to be announced")
    _deliver(sync_env, 3)
    installation_reads.clear()
    sync_env.work(["webhook"])
    assert hooks.seen[-1] == "blue" and len(installation_reads) == 1


def test_a_change_made_by_another_process_reaches_the_worker(sync_env, hooks, tmp_path):
    from nexus_core.config import get_settings
    from nexus_core.sync import installations

    sync_env.store.add_installation("t1", "i1", "sim", config={})
    _deliver(sync_env, 1)
    sync_env.work(["webhook"])
    cache = installations.cache(sync_env.redis)
    seen = cache.changes_seen
    settings = get_settings()
    out = subprocess.run(
        [sys.executable, "-m", "nexus_core.cli", "installs", "disable", "--tenant", "t1",
         "--install", "i1"],
        env={**os.environ, "REDIS_URL": settings.redis_url,
             "NEXUS_DATABASE_URL": settings.database_url}, capture_output=True, text=True,
        timeout=60)
    assert out.returncode == 0, out.stderr
    _wait_for(lambda: cache.changes_seen > seen, "the CLI's change to be announced")
    job_id = _deliver(sync_env, 2)
    sync_env.work(["webhook"])
    # the worker saw the installation disabled: the job was refused, not processed
    failed = queues.queue(queues.WEBHOOK, sync_env.redis).failed_job_registry
    assert failed.get_job_ids() == [job_id] and len(hooks.seen) == 1


def test_a_forking_worker_reads_through_its_copy_before_the_fork(sync_env, installation_reads):
    from nexus_core.worker import NexusWorker

    sync_env.store.add_installation("t1", "i1", "sim", config={})
    for n in range(3):
        _deliver(sync_env, n)
    installation_reads.clear()
    NexusWorker(["integration-webhook"], connection=sync_env.redis).work(
        burst=True, logging_level="WARNING")
    done = queues.queue(queues.WEBHOOK, sync_env.redis).finished_job_registry
    assert len(done.get_job_ids()) == 3
    assert len(installation_reads) == 1  # in this (the worker's) process; horses read nothing
