"""The engine's series: what a sync, a failure, a deferral, a dead-lettered job and a
needs_reauth add to the metrics (in-process workers, real Redis and SQLite, the simulator); the
series read when scraped; per-tenant statistics from the run history."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from nexus_core import metrics, queues

#: Series with a tenant_id label (empty unless NEXUS_METRICS_TENANT_LABELS is on).
TENANT_LABELLED = ("nexus_operation_duration", "nexus_sync_", "nexus_webhook_events")


def sample(name, **labels):
    if name.startswith(TENANT_LABELLED):
        labels.setdefault("tenant_id", "")
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Figures of the default registry, as differences from when it was made."""

    def __init__(self, *keys):
        self.keys = keys
        self.before = {k: sample(k[0], **dict(k[1:])) for k in keys}

    def __call__(self, name, **labels):
        key = (name, *sorted(labels.items()))
        return sample(name, **labels) - self.before.get(key, 0.0)


def key(name, **labels):
    return (name, *sorted(labels.items()))


def state(redis, store):
    """{(name, labels): value} of the scrape-time series."""
    from nexus_core.exporter import StateCollector

    out = {}
    for family in StateCollector(redis, lambda: store).collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(autouse=True)
def _no_tenant_labels():
    metrics.reset_tenant_labels(False)
    yield
    metrics.reset_tenant_labels(None)


def test_a_backfill_counts_pages_records_its_duration_and_its_queue_wait(sync_env):
    d = Delta(
        key("nexus_sync_pages_total", provider="sim", operation="backfill"),
        key("nexus_sync_records_total", provider="sim", operation="backfill"),
        key("nexus_operation_duration_seconds_count", provider="sim", operation="backfill",
            outcome="succeeded"),
        key("nexus_queue_wait_seconds_count", queue=queues.BACKFILL),
    )
    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_sync_pages_total", provider="sim", operation="backfill") == 10
    assert d("nexus_sync_records_total", provider="sim", operation="backfill") == 1000
    assert d("nexus_operation_duration_seconds_count", provider="sim", operation="backfill",
             outcome="succeeded") == 1
    assert d("nexus_queue_wait_seconds_count", queue=queues.BACKFILL) == 1


def test_tenant_labels_are_added_only_when_switched_on(sync_env):
    metrics.reset_tenant_labels(True)
    d = Delta(key("nexus_sync_records_total", provider="sim", operation="backfill",
                  tenant_id="t1"))
    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_sync_records_total", provider="sim", operation="backfill",
             tenant_id="t1") == 1000
    assert metrics.tenant_label("t1") == "t1"
    metrics.reset_tenant_labels(False)
    assert metrics.tenant_label("t1") == ""


def test_a_permanent_failure_is_dead_lettered_and_shows_in_the_dlq_depth(sync_env):
    d = Delta(
        key("nexus_jobs_dead_lettered_total", provider="sim", operation="backfill",
            reason="permanent"),
        key("nexus_operation_duration_seconds_count", provider="sim", operation="backfill",
            outcome="failed"),
    )
    sync_env.install()
    sync_env.sim.fail_page(2, 404, times=10)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_jobs_dead_lettered_total", provider="sim", operation="backfill",
             reason="permanent") == 1
    assert d("nexus_operation_duration_seconds_count", provider="sim", operation="backfill",
             outcome="failed") == 1
    got = state(sync_env.redis, sync_env.store)
    assert got[("nexus_dlq_jobs", (("queue", queues.BACKFILL),))] == 1
    assert got[("nexus_dlq_jobs", (("queue", queues.DELTA),))] == 0
    assert got[("nexus_metrics_source_up", (("source", "redis"),))] == 1


def test_transient_failures_count_retries_then_an_exhausted_dead_letter(sync_env):
    d = Delta(key("nexus_job_retries_total", provider="sim", operation="backfill"),
              key("nexus_jobs_dead_lettered_total", provider="sim", operation="backfill",
                  reason="exhausted"))
    sync_env.install()
    sync_env.sim.fail_page(3, 503, times=10)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_job_retries_total", provider="sim", operation="backfill") == 2
    assert d("nexus_jobs_dead_lettered_total", provider="sim", operation="backfill",
             reason="exhausted") == 1


def test_needs_reauth_is_counted_and_the_installations_by_status_show_it(sync_env):
    from nexus_core import AuthError, hookimpl

    class Revoked:
        @hookimpl(wrapper=True)
        def backfill(self, ctx, stream, cursor):
            raise AuthError("refresh token revoked", needs_reauth=True)
            yield  # a wrapper is a generator

    sync_env.registry.register(Revoked(), "revoked")
    d = Delta(key("nexus_needs_reauth_total", provider="sim", source="job"),
              key("nexus_operation_duration_seconds_count", provider="sim",
                  operation="backfill", outcome="needs_reauth"))
    sync_env.install()
    sync_env.install(install="i2")
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_needs_reauth_total", provider="sim", source="job") == 1
    assert d("nexus_operation_duration_seconds_count", provider="sim", operation="backfill",
             outcome="needs_reauth") == 1
    got = state(sync_env.redis, sync_env.store)
    assert got[("nexus_installations", (("status", "needs_reauth"),))] == 1
    assert got[("nexus_installations", (("status", "active"),))] == 1


def test_a_rate_limited_job_is_a_deferral_not_a_failure(sync_env):
    d = Delta(key("nexus_job_deferrals_total", provider="sim", operation="backfill",
                  reason="rate_limited"),
              key("nexus_operation_duration_seconds_count", provider="sim",
                  operation="backfill", outcome="deferred"),
              key("nexus_job_retries_total", provider="sim", operation="backfill"))
    sync_env.install()
    sync_env.sim.rate_limit_page(5, retry_after=30)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_job_deferrals_total", provider="sim", operation="backfill",
             reason="rate_limited") == 1
    assert d("nexus_operation_duration_seconds_count", provider="sim", operation="backfill",
             outcome="deferred") == 1
    assert d("nexus_job_retries_total", provider="sim", operation="backfill") == 0
    got = state(sync_env.redis, sync_env.store)
    assert got[("nexus_queue_jobs", (("queue", queues.BACKFILL), ("state", "scheduled")))] == 1


def test_an_open_breaker_defers_and_shows_in_the_breaker_series(sync_env, monkeypatch):
    from nexus_core import runtime
    from nexus_core.config import reset_settings

    monkeypatch.setenv("NEXUS_BREAKER_FAILURE_THRESHOLD", "2")
    monkeypatch.setenv("NEXUS_BREAKER_COOLDOWN", "600")
    reset_settings()
    runtime.reset()
    d = Delta(key("nexus_job_deferrals_total", provider="sim", operation="backfill",
                  reason="breaker_open"))
    sync_env.install()
    sync_env.sim.fail_page(1, 503, times=10)
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    assert d("nexus_job_deferrals_total", provider="sim", operation="backfill",
             reason="breaker_open") == 1
    got = state(sync_env.redis, sync_env.store)
    assert got[("nexus_breakers", (("provider", "sim"), ("state", "open")))] == 1


def test_the_scheduler_heartbeat_shows_a_running_scheduler(sync_env):
    from nexus_core.config import get_settings
    from nexus_core.sync.cron import DeltaScheduler

    assert state(sync_env.redis, sync_env.store)[("nexus_scheduler_up", ())] == 0
    DeltaScheduler(sync_env.redis, get_settings()).heartbeat()
    assert state(sync_env.redis, sync_env.store)[("nexus_scheduler_up", ())] == 1


def test_the_oldest_queued_job_age_is_measured_from_its_enqueue(sync_env):
    import time

    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    time.sleep(0.3)
    age = state(sync_env.redis, sync_env.store)[
        ("nexus_queue_oldest_job_age_seconds", (("queue", queues.BACKFILL),))]
    assert 0.25 <= age < 30
    sync_env.work()
    assert state(sync_env.redis, sync_env.store)[
        ("nexus_queue_oldest_job_age_seconds", (("queue", queues.BACKFILL),))] == 0


def test_an_unreachable_redis_leaves_its_series_out_and_says_so(sync_env):
    import redis

    from nexus_core.testing import free_port

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.3)
    got = state(dead, sync_env.store)
    assert got[("nexus_metrics_source_up", (("source", "redis"),))] == 0
    assert not any(name == "nexus_dlq_jobs" for name, _ in got)
    assert got[("nexus_metrics_source_up", (("source", "store"),))] == 1


# -- per tenant: the run history -------------------------------------------------------------


def test_tenant_stats_give_success_rate_durations_records_and_the_last_error(sync_env):
    sync_env.install()
    sync_env.install(tenant="t2", install="other")
    service = sync_env.service()
    service.start_backfill("sim", "t1", "i1")
    sync_env.work()
    service.start_backfill("sim", "t2", "other")
    sync_env.work()
    sync_env.sim.fail_page(1, 404, times=10)
    service.start_backfill("sim", "t1", "i1")  # a completed backfill starts over
    sync_env.work()

    stats = service.get_connector_stats(tenant_id="t1")["tenant"]
    assert stats["tenant_id"] == "t1" and stats["installations"] == {"active": 1}
    (row,) = stats["by_installation"]
    assert row["install_id"] == "i1" and row["provider"] == "sim"
    backfill = row["operations"]["backfill"]
    assert backfill["runs"] == 2 and backfill["succeeded"] == 1 and backfill["failed"] == 1
    assert backfill["success_rate"] == 0.5
    assert backfill["records"] == 1000
    assert 0 <= backfill["p50_seconds"] <= backfill["p95_seconds"]
    assert "404" in backfill["last_error"]["error"]
    # only this tenant's runs: t2's backfill is not in t1's figures
    assert stats["runs_considered"] == 2
    other = service.get_tenant_stats("t2")
    assert other["overall"]["success_rate"] == 1.0 and other["overall"]["last_error"] is None


def test_nexus_stats_tenant_prints_the_tenant_table(sync_env):
    import json

    from click.testing import CliRunner

    from nexus_core.cli import cli as main

    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    runner = CliRunner()
    out = runner.invoke(main, ["stats", "--tenant", "t1"])
    assert out.exit_code == 0, out.output
    assert "i1" in out.output and "100.0%" in out.output and "1000" in out.output
    out = runner.invoke(main, ["stats", "--tenant", "t1", "--json"])
    data = json.loads(out.output)
    assert data["by_installation"][0]["operations"]["backfill"]["records"] == 1000
    out = runner.invoke(main, ["stats", "--tenant", "nobody"])
    assert out.exit_code == 0 and "no installations" in out.output


# -- the dashboard and the alert rules query what the code exports ----------------------------


def _exported(sync_env):
    """{sample name: label names} of the live registry and the scrape-time series, after a
    sync, a failing sync, a deferral and a webhook have run through the code."""
    from nexus_core import web  # noqa: F401 - the ingress registers its series on import
    from nexus_core.exporter import StateCollector

    sync_env.install()
    sync_env.service().start_backfill("sim", "t1", "i1")
    sync_env.work()
    sync_env.install(install="i2")
    sync_env.sim.fail_page(1, 404, times=5)
    sync_env.service().start_backfill("sim", "t1", "i2")
    sync_env.work()
    families = list(REGISTRY.collect())
    families += list(StateCollector(sync_env.redis, lambda: sync_env.store).collect())
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum",
                                                                 "_created"),
                "gauge": ("",), "summary": ("_count", "_sum", "_created")}
    out: dict[str, set[str]] = {}
    for family in families:
        labels = {k for s in family.samples for k in s.labels} - {"le"}
        for suffix in suffixes.get(family.type, ("",)):
            out.setdefault(family.name + suffix, set()).update(labels)
    return out


def _selectors(expr):
    """(metric name, label names in its selector) for every nexus_* name of a PromQL text."""
    import re

    for m in re.finditer(r"\b(nexus_[a-z0-9_]+)(\{[^}]*\})?", expr):
        labels = re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2) or "")
        yield m.group(1), labels


def test_dashboard_and_alert_rules_query_only_exported_series(sync_env):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "dashboards", Path(__file__).parents[1] / "metrics" / "test_dashboards.py")
    dashboards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dashboards)
    exported = _exported(sync_env)
    used = 0
    for source, exprs in (("dashboard", dashboards.dashboard_queries()),
                          ("alert rules", dashboards.rule_exprs())):
        for expr in exprs:
            for name, labels in _selectors(expr):
                used += 1
                assert name in exported, f"{source} queries {name}, which nothing exports"
                known = exported[name]
                if known:  # a family with samples: its label names are known
                    assert set(labels) <= known, f"{source}: {name} has no label {labels}"
    assert used > 30


def test_every_exported_series_is_documented(sync_env):
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    exported = _exported(sync_env)
    families = {name.removesuffix("_count") if f"{name.removesuffix('_count')}_bucket"
                in exported else name for name in exported
                if not name.endswith(("_created", "_bucket", "_sum"))}
    assert "nexus_operation_duration_seconds" in families
    missing = sorted(n for n in families if n.startswith("nexus_") and f"`{n}`" not in doc
                     and f"`{n.removesuffix('_total')}" not in doc)
    assert not missing, f"docs/metrics.md does not list {missing}"


@given(values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
       q=st.sampled_from([50, 95, 99, 100]))
def test_the_percentile_is_the_nearest_rank(values, q):
    from nexus_core.stats import percentile

    got = percentile(values, q)
    assert got in values
    at_most = sum(v <= got for v in values)
    below = sum(v < got for v in values)
    assert at_most >= q / 100 * len(values) > below or at_most == len(values)
    assert percentile([], q) is None


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(tenant=st.text(max_size=40))
def test_tenant_stats_of_any_tenant_id_are_an_answer_never_an_error(sync_env, tenant):
    stats = sync_env.service().get_tenant_stats(tenant)
    assert stats["tenant_id"] == tenant and stats["by_installation"] == []
    assert stats["overall"]["runs"] == 0 and stats["overall"]["success_rate"] is None
