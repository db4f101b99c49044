"""`nexus health`, scheduled health checks and the stored last check, against the paged
simulator (real Redis, real SQLite, in-process RQ workers)."""

import json

import pytest
from click.testing import CliRunner
from loguru import logger

from nexus_core import Health, hookimpl
from nexus_core.cli import cli


class SimHealth:
    """A health_check for the ``sim`` provider: reads the first page of the simulator (a 5xx
    there is an unreachable provider, a 401 revoked credentials)."""

    @hookimpl
    def health_check(self, ctx):
        from nexus_core.errors import AuthError

        resp = ctx.http.get(ctx.config["base_url"] + "/records", params={"cursor": "0"})
        if resp.status_code == 401:
            raise AuthError("the simulator refused the credentials", needs_reauth=True)
        return Health(healthy=True, auth_valid=True, api_accessible=True)


@pytest.fixture
def env(sync_env):
    sync_env.registry.register(SimHealth(), "sim-health")
    return sync_env


def nexus(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    logger.remove()  # the CLI logged to CliRunner's (now closed) stderr
    return result


def test_nexus_health_checks_now_and_installs_list_and_show_show_the_result(env):
    env.install()
    ok = nexus("health", "sim", "--tenant", "t1", "--install", "i1")
    assert ok.exit_code == 0, ok.output
    assert "sim installation i1 of tenant t1: healthy" in ok.output
    assert "authValid=true apiAccessible=true" in ok.output
    listed = nexus("installs", "list").output
    assert "HEALTH" in listed and " ok 20" in listed

    env.sim.fail_page(1, 503, times=1)
    bad = nexus("health", "sim", "--tenant", "t1", "--install", "i1", "--json")
    assert bad.exit_code == 1
    answer = json.loads(bad.stdout)
    assert answer["healthy"] is False and answer["api_accessible"] is False
    assert answer["error_count"] == 1 and "503" in answer["details"]["error"]

    assert "BAD 20" in nexus("installs", "list").output
    shown = json.loads(nexus("installs", "show", "--tenant", "t1", "--install", "i1",
                             "--json").output)
    assert shown["health"]["healthy"] is False and shown["health"]["checked_at"]
    text = nexus("installs", "show", "--tenant", "t1", "--install", "i1").output
    assert "health" in text and "BAD" in text and "apiAccessible=false" in text
    rows = json.loads(nexus("installs", "list", "--json").output)
    assert rows[0]["health"]["api_accessible"] is False


def test_nexus_health_of_an_unknown_installation_is_one_line(env):
    result = nexus("health", "sim", "--tenant", "t1", "--install", "nope")
    assert result.exit_code == 1
    assert "installation 'nope' not found for tenant 't1'" in result.output
    assert "Traceback" not in result.output


def test_an_installation_turning_unhealthy_is_logged_once_at_warning(env, nexus_logs):
    env.install()
    service = env.service()
    assert service.health_check_immediate("sim", "t1", "i1").healthy
    env.sim.fail_page(1, 503, times=3)
    for _ in range(3):
        assert not service.health_check_immediate("sim", "t1", "i1").healthy
    warnings = [msg for level, msg, _ in nexus_logs.records if level == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "sim installation i1 of tenant t1 is unhealthy" in warnings[0]
    assert "503" in warnings[0]

    assert service.health_check_immediate("sim", "t1", "i1").healthy
    assert any("i1 of tenant t1 is healthy again" in msg
               for level, msg, _ in nexus_logs.records if level == "INFO")
    env.sim.fail_page(1, 503, times=1)
    service.health_check_immediate("sim", "t1", "i1")
    assert len([1 for level, _, _ in nexus_logs.records if level == "WARNING"]) == 2


def test_revoked_credentials_say_who_must_reconnect(env, nexus_logs):
    env.install()
    env.sim.fail_page(1, 401, times=1)
    health = env.service().health_check_immediate("sim", "t1", "i1")
    assert not health.auth_valid and health.details["needs_reauth"] is True
    warning = next(msg for level, msg, _ in nexus_logs.records if level == "WARNING")
    assert "needs reauthorization" in warning
    assert "nexus auth link sim --tenant t1 --install i1" in warning


def test_nexus_health_says_when_credentials_are_revoked(env):
    env.install()
    env.sim.fail_page(1, 401, times=1)
    result = nexus("health", "sim", "--tenant", "t1", "--install", "i1")
    assert result.exit_code == 1
    assert "UNHEALTHY: the simulator refused the credentials (needs reauthorization)" \
        in result.stdout


def test_health_schedule_runs_on_a_worker_and_stores_the_result(env):
    env.install()
    result = nexus("health", "sim", "--tenant", "t1", "--install", "i1", "--schedule",
                   "--json")
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job_id"]
    assert job_id.startswith("nexus__health__sim__t1__i1")
    assert env.store.get_health("t1", "i1") is None  # not checked in the CLI's process
    env.work(["health"])
    stored = env.store.get_health("t1", "i1")
    assert stored is not None and stored.healthy and stored.api_accessible


def test_the_scheduler_spreads_health_checks_of_every_active_installation(env):
    """One health check per active installation and slot, each at its own phase in the
    interval; a second scheduler (or tick) in the same slot writes nothing; the due ones run
    on a health worker and their results are stored."""
    from datetime import UTC

    from rq.registry import ScheduledJobRegistry

    from nexus_core import queues
    from nexus_core.sync import cron
    from nexus_core.sync.enqueue import SyncOptions

    for n in range(20):
        env.install(install=f"i{n}")
    env.store.set_status("t1", "i19", "disabled")
    interval = 600
    now = 1_800_000_000.0  # a slot start: every phase lies ahead
    slot = int(now // interval)
    first = cron.DeltaScheduler(env.redis, env.service().settings, interval=300,
                                health_interval=interval, store=env.store)
    fanned = first.tick_health(now=now)
    assert fanned is not None and len(fanned.jobs) == 19 and fanned.installations == 19
    assert first.tick_health(now=now + 5) is None  # this slot is done
    second = cron.DeltaScheduler(env.redis, env.service().settings, interval=300,
                                 health_interval=interval, store=env.store)
    assert second.tick_health(now=now + 1).jobs == []  # another scheduler: nothing twice

    registry = ScheduledJobRegistry(queues.HEALTH, connection=env.redis)
    due = sorted(registry.get_scheduled_time(jid).replace(tzinfo=UTC).timestamp()
                 for jid in fanned.jobs)
    assert all(slot * interval <= t < (slot + 1) * interval for t in due)
    assert len({round(t) for t in due}) >= 15  # spread, not a herd at the boundary
    assert due[-1] - due[0] > interval / 2
    assert set(fanned.jobs) == {queues.slot_job_id(cron.health_sync("sim", "t1", f"i{n}"), slot)
                                for n in range(19)}
    # Checks still waiting for their phase: the next slot skips those installations.
    later = cron.fan_out(env.redis, env.store, slot + 1, interval=interval,
                         opts=SyncOptions.from_settings(env.service().settings),
                         kind=cron.HEALTH_CHECKS, now=now + interval)
    assert later.jobs == [] and later.skipped == 19


def test_scheduled_health_checks_that_are_due_run_on_a_worker_and_are_stored(env):
    from nexus_core.sync import cron
    from nexus_core.sync.enqueue import SyncOptions

    for n in range(5):
        env.install(install=f"i{n}")
    env.store.set_status("t1", "i4", "disabled")
    # A slot already over: every check is due at once.
    past = cron.fan_out(env.redis, env.store, 1000, interval=60,
                        opts=SyncOptions.from_settings(env.service().settings),
                        kind=cron.HEALTH_CHECKS)
    assert len(past.jobs) == 4
    env.work(["health"])
    checks = env.store.health_of(("t1", f"i{n}") for n in range(5))
    assert sorted(checks) == [("t1", f"i{n}") for n in range(4)]
    assert all(h.healthy and h.api_accessible for h in checks.values())


def test_health_interval_zero_schedules_no_checks(env):
    from nexus_core.sync import cron

    env.install()
    scheduler = cron.DeltaScheduler(env.redis, env.service().settings, interval=300,
                                    health_interval=0, store=env.store)
    assert scheduler.tick_health(now=1_800_000_000.0) is None


def test_health_interval_is_a_validated_setting():
    from nexus_core.config import load_settings
    from nexus_core.errors import ConfigError

    assert load_settings({}, env_file=None).health_interval == 900
    assert load_settings({"NEXUS_HEALTH_INTERVAL": "0"}, env_file=None).health_interval == 0
    with pytest.raises(ConfigError, match="NEXUS_HEALTH_INTERVAL"):
        load_settings({"NEXUS_HEALTH_INTERVAL": "soon"}, env_file=None)


# -- operator input, property-based -------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenant=st.text(max_size=300), install=st.text(max_size=40),
       provider=st.sampled_from(["sim", "nope", ""]))
def test_nexus_health_with_any_ids_answers_in_one_line(env, tenant, install, provider):
    """Unknown, empty, huge or control-character ids: exit 1 (or a usage error) with one line
    naming what is wrong, never a traceback."""
    result = nexus("health", provider, "--tenant", tenant, "--install", install)
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1, result.output


@settings(max_examples=200)
@given(raw=st.one_of(st.text(max_size=12), st.integers(-10, 10**7).map(str)))
def test_health_interval_parses_or_refuses_in_one_line(raw):
    from nexus_core.config import load_settings
    from nexus_core.errors import ConfigError

    try:
        value = load_settings({"NEXUS_HEALTH_INTERVAL": raw}, env_file=None).health_interval
    except ConfigError as exc:
        assert "NEXUS_HEALTH_INTERVAL" in str(exc) and "\n" not in exc.message
        return
    assert isinstance(value, int) and 0 <= value <= 7 * 86400


def test_a_running_scheduler_keeps_a_heartbeat_that_expires(env):
    import os
    import time

    from nexus_core.sync import cron

    scheduler = cron.DeltaScheduler(env.redis, env.service().settings, interval=300,
                                    health_interval=0, store=env.store)
    assert cron.running_schedulers(env.redis) == []
    scheduler.heartbeat()
    (name,) = cron.running_schedulers(env.redis)
    assert name.endswith(f":{os.getpid()}")
    later = time.time() + cron.HEARTBEAT_TTL + 1
    assert cron.running_schedulers(env.redis, now=later) == []  # a dead one is not counted


def test_a_scheduled_check_whose_token_cannot_be_refreshed_is_stored_unhealthy(
        redis_url, tmp_path, monkeypatch):
    """The check's proactive refresh is refused (revoked grant, token expired): the worker
    stores an unhealthy answer and marks the installation needs_reauth; the job itself
    succeeds (an answer, not a dead-letter entry)."""
    from datetime import UTC, datetime, timedelta

    import attrs
    from nexus_example.simulator import ExampleSimulator

    from nexus_core.testing.suite import Harness

    with ExampleSimulator() as sim:
        sim.add_account()
        nexus = Harness("example", sim, redis_url, tmp_path, monkeypatch)
        try:
            nexus.connect("t1", "main", sim.default_account)
            creds = nexus.store.get_credentials("t1", "main")
            nexus.store.save_credentials("t1", "main", attrs.evolve(
                creds, expires_at=datetime.now(UTC) - timedelta(minutes=1)))
            sim.oauth.revoke(sim.default_account)
            job_id = nexus.service.schedule_health_check("example", "t1", "main")
            nexus.run()  # the connect's first backfill fails too (needs_reauth): not this job
            assert job_id not in nexus.failed_jobs()
            stored = nexus.store.get_health("t1", "main")
            assert stored is not None and not stored.healthy and not stored.auth_valid
            assert stored.details["needs_reauth"] is True
            assert nexus.store.get_installation("t1", "main").status == "needs_reauth"
        finally:
            nexus.close()
            logger.remove()
