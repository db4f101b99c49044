"""`nexus dlq`, `nexus runs list`, `nexus stats`, `nexus sync` against real Redis and SQLite."""

import json

from click.testing import CliRunner

from nexus_core.cli import cli


def nexus(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def test_dlq_list_requeue_and_purge(sync_env):
    sync_env.install()
    sync_env.sim.fail_page(2, 404, times=1)
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    listed = json.loads(nexus("dlq", "list", "--json").output)
    assert [j["job_id"] for j in listed] == [job_id]
    assert listed[0]["queue"] == "integration-backfill" and "404" in listed[0]["error"]
    assert "ProviderError" in listed[0]["traceback"]
    assert job_id in nexus("dlq", "list", "--queue", "backfill").output
    assert nexus("dlq", "list", "--queue", "delta").output.strip() == \
        "The dead-letter queue is empty."

    assert nexus("dlq", "purge", "--older-than", "1h").output.startswith("deleted 0 job(s)")
    result = nexus("dlq", "requeue", job_id)
    assert result.exit_code == 0 and f"requeued {job_id}" in result.output
    sync_env.work()  # the 404 is gone: it resumes after page 1 and completes
    assert len(sync_env.sink.ids) == 1000 and set(sync_env.sink.ids.values()) == {1}
    assert json.loads(nexus("dlq", "list", "--json").output) == []
    run = sync_env.store.list_runs("t1", "i1")[0]
    assert (run.status, run.pages) == ("succeeded", 10)

    sync_env.sim.fail_page(1, 404, times=1)
    sync_env.service().start_backfill("sim", "t1", "i1")  # complete: a full re-sync
    sync_env.work()
    assert nexus("dlq", "requeue").exit_code == 2  # neither ids nor --all
    assert "deleted 0" in nexus("dlq", "purge", "--older-than", "1h").output
    assert "deleted 1" in nexus("dlq", "purge", "--older-than", "0s").output
    assert json.loads(nexus("dlq", "list", "--json").output) == []


def test_dlq_list_shows_the_error_not_its_hint(sync_env):
    sync_env.install()
    job_id = sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.store.set_status("t1", "i1", "pending_authorization")
    sync_env.work()
    (listed,) = json.loads(nexus("dlq", "list", "--json").output)
    assert listed["job_id"] == job_id
    assert listed["error"].startswith("NexusError: installation is waiting for its OAuth "
                                      "authorization; not syncing [provider=sim")
    assert "hint:" in listed["traceback"]
    table = nexus("dlq", "list").output
    assert "NexusError: installation is waiting" in table and "hint:" not in table


def test_dlq_requeue_all(sync_env):
    sync_env.install()
    sync_env.install(install="i2")
    sync_env.sim.fail_page(1, 404, times=2)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.service().start_backfill("sim", "t1", "i2")
    sync_env.work()
    assert len(json.loads(nexus("dlq", "list", "--json").output)) == 2
    assert nexus("dlq", "requeue", "--all").output.count("requeued") == 2
    sync_env.work()
    assert sync_env.sink.ids["rec-0000999"] == 2


def test_sync_command_runs_list_and_stats(sync_env):
    sync_env.install()
    job_id = nexus("sync", "backfill", "sim", "--tenant", "t1", "--install", "i1").output.strip()
    assert job_id.startswith("nexus__backfill__sim__t1__i1__all__")
    again = nexus("sync", "backfill", "sim", "-t", "t1", "-i", "i1", "--json").output
    assert json.loads(again) == {"job_id": job_id}
    stats = json.loads(nexus("stats", "--json").output)
    assert stats["queues"]["queues"]["integration-backfill"]["queued"] == 1
    sync_env.work()
    runs = json.loads(nexus("runs", "list", "--json").output)
    assert runs[0]["status"] == "succeeded" and runs[0]["records"] == 1000
    table = nexus("runs", "list", "--tenant", "t1").output
    assert "backfill" in table and "succeeded" in table and "1000" in table
    out = nexus("stats").output
    assert "integration-backfill" in out and "FAILED(DLQ)" in out
    bad = nexus("sync", "delta", "nope", "-t", "t1", "-i", "i1")
    assert bad.exit_code == 1 and "unknown provider 'nope'" in bad.output
    assert nexus("runs", "list", "--install", "i1").exit_code == 2
