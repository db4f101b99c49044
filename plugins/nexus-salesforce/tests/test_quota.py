"""The org's daily API quota: ``403 REQUEST_LIMIT_EXCEEDED`` pauses the installation's syncs
(deferred jobs, no retries spent, no request sent, shown by health and ``nexus stats``) until
the quota has room, then they resume where they were; the share kept free for the org's other
integrations; ``Sforce-Limit-Info`` (per-app form too) in health checks."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from click.testing import CliRunner
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from nexus_core import queues
from nexus_core.cli import cli


def delivered(nexus, stream=None):
    return [r["id"] for r in nexus.recorder.rows("record")
            if stream is None or r["stream"] == stream]


def api_requests(sim):
    return [status for *_, status in sim.api_log]


def pass_time(nexus, job_id):
    """What waiting for the pause to end looks like: the shared cool-down has run out and RQ's
    scheduler moves the deferred job to its queue."""
    for key in nexus.redis.scan_iter("nexus:rl:salesforce__*"):
        nexus.redis.delete(key)
    registry = ScheduledJobRegistry(queues.BACKFILL, connection=nexus.redis,
                                    serializer=JSONSerializer)
    job = Job.fetch(job_id, connection=nexus.redis, serializer=JSONSerializer)
    registry.schedule(job, datetime.now(UTC))


def test_a_used_up_quota_pauses_the_orgs_syncs_then_they_resume_where_they_were(sim, nexus):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    # This customer lets the connector use the whole quota (no share kept free), and the
    # org's other integrations left four requests today.
    nexus.service.update_installation("t1", "main", changes={"quota": {"reserve": 0}})
    sim.set_daily_limit(org, 4)
    before = time.time()
    job_id = nexus.service.start_backfill("salesforce", "t1", "main")
    from nexus_core.worker import NexusSimpleWorker, resolve_queues

    NexusSimpleWorker(resolve_queues(None), connection=nexus.redis).work(
        burst=True, logging_level="WARNING", with_scheduler=False)
    assert api_requests(sim) == [200, 200, 200, 200, 403]  # one 403, then nothing
    assert len(delivered(nexus)) == 450 + 200  # the pages before it reached the sinks

    registry = ScheduledJobRegistry(queues.BACKFILL, connection=nexus.redis,
                                    serializer=JSONSerializer)
    assert registry.get_job_ids() == [job_id]  # deferred, not failed
    due = registry.get_scheduled_time(job_id).timestamp()
    assert before + 3599 <= due <= time.time() + 3601  # the provider's Quota.pause (RQ: s)
    job = Job.fetch(job_id, connection=nexus.redis, serializer=JSONSerializer)
    assert job.retries_left == 2  # INTEGRATION_MAX_RETRIES: none spent on the quota
    assert nexus.failed_jobs() == []

    # Visible: a health check (which sends nothing either) and `nexus stats`.
    health = nexus.service.health_check_immediate("salesforce", "t1", "main")
    assert health.details["rate_limited_for"] > 3500
    assert "REQUEST_LIMIT_EXCEEDED" in health.details["rate_limited"]
    stats = CliRunner().invoke(cli, ["stats"])
    assert stats.exit_code == 0, stats.output
    assert f"paused: salesforce account {org}" in stats.output
    assert "REQUEST_LIMIT_EXCEEDED" in stats.output and "deferred, not failed" in stats.output
    paused = json.loads(CliRunner().invoke(cli, ["stats", "--json"]).output)["queues"]["paused"]
    assert {p["account"] for p in paused} == {org} and all(p["seconds"] > 3500 for p in paused)
    assert api_requests(sim) == [200, 200, 200, 200, 403]
    assert nexus.store.list_runs("t1", "main")[0].status != "failed"

    # A day later the quota has room again: the backfill goes on from its last page.
    sim.reset_daily(org)
    sim.set_daily_limit(org, 100_000)
    pass_time(nexus, job_id)
    nexus.run()
    assert nexus.failed_jobs() == []
    for stream in ("Account", "Contact", "Opportunity"):
        got = delivered(nexus, stream)
        # each exactly once; on failure say what happened (seen once under heavy load)
        assert sorted(got) == sorted(sim.expected_ids(stream, org)), (
            stream, len(got), len(sim.expected_ids(stream, org)), api_requests(sim),
            [(p["stream"], p["n"]) for p in nexus.recorder.rows("page")],
            nexus.store.list_runs("t1", "main"))
    (run,) = nexus.store.list_runs("t1", "main")
    assert run.status == "succeeded"


def test_a_share_of_the_quota_is_left_to_the_orgs_other_integrations(sim, harness):
    org = sim.default_account
    nexus = harness(sim)
    nexus.connect("t1", "main", org)
    sim.set_daily_limit(org, 100)
    sim.org(org).used = 77  # what the org's other integrations used today
    nexus.service.start_backfill("salesforce", "t1", "main")
    from nexus_core.worker import NexusSimpleWorker, resolve_queues

    NexusSimpleWorker(resolve_queues(None), connection=nexus.redis).work(
        burst=True, logging_level="WARNING", with_scheduler=False)
    # 78, 79, 80 of 100: the third answer reaches the 80 % this connector may use
    assert api_requests(sim) == [200, 200, 200]
    assert sim.org(org).used == 80 and nexus.failed_jobs() == []
    health = nexus.service.health_check_immediate("salesforce", "t1", "main")
    assert "quota reserve reached: 80 of 100 used, 20% kept free" in health.details[
        "rate_limited"]
    assert "quota_used=80" in health.rate_limit_status and "quota_max=100" in \
        health.rate_limit_status
    assert len(api_requests(sim)) == 3  # the health check sent nothing either


def test_an_installation_keeps_a_larger_share_free(sim, harness):
    org = sim.default_account
    nexus = harness(sim)
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={"quota": {"reserve": 0.5}})
    sim.set_daily_limit(org, 100)
    sim.org(org).used = 48
    nexus.service.start_backfill("salesforce", "t1", "main")
    from nexus_core.worker import NexusSimpleWorker, resolve_queues

    NexusSimpleWorker(resolve_queues(None), connection=nexus.redis).work(
        burst=True, logging_level="WARNING", with_scheduler=False)
    assert api_requests(sim) == [200, 200] and sim.org(org).used == 50


def test_health_reads_the_limits_and_the_per_app_usage(make_sim, harness):
    sim = make_sim()
    org = sim.add_account(per_app_limit=250)
    nexus = harness(sim)
    nexus.connect("t1", "main", org)
    health = nexus.service.health_check_immediate("salesforce", "t1", "main")
    assert health.healthy and health.auth_valid and health.api_accessible
    assert health.details["daily_api_requests"] == {"max": 100_000, "remaining": 99_999,
                                                    "used": 1}
    assert health.details["org_id"] == org
    assert health.details["instance_url"] == sim.org(org).instance_url
    status = dict(part.split("=", 1) for part in health.rate_limit_status.split())
    assert status == {"quota_used": "1", "quota_max": "100000", "per_app_used": "1",
                      "per_app_max": "250", "app": "nexus-sim"}
