"""Per-method rate-limit tiers (providers.md 4, addendum 2.1): Tier 2 (conversations.list,
users.list) and Tier 3 (conversations.history) are separate budgets per workspace — shared by
every worker through Redis, each with its own 429 cool-down — and the limited history of new
non-Marketplace apps (1 per minute, 15 per page)."""

from __future__ import annotations

import pytest
from nexus_slack import tiers

from nexus_core.errors import RateLimited
from nexus_core.http import ProviderSession
from nexus_core.models import Credentials


def _session(nexus, sim, account, install="main"):
    config = sim.install_config(account)
    issued = sim.oauth.issue_tokens(account)
    return ProviderSession(nexus.provider, tenant_id="t", install_id=install, account_id=account,
                           redis=nexus.redis, registry=nexus.registry, config=config,
                           settings=nexus.settings,
                           credentials=lambda: Credentials(access_token=issued["access_token"]))


def test_the_tiers_keep_every_minute_within_slacks_limits():
    for minute in (60.0, 1.0):
        limits = tiers.budgets(minute)
        for bucket, per_minute in (("tier2", 20), ("tier3", 50)):
            b = limits.bucket(bucket)
            assert b.burst_size + b.requests_per_second * minute <= per_minute
        assert limits.burst_size + limits.requests_per_second * minute <= 100
    assert tiers.METHOD_BUCKETS["conversations.history"] == "tier3"
    assert tiers.METHOD_BUCKETS["users.list"] == tiers.METHOD_BUCKETS["conversations.list"] \
        == "tier2"


def test_a_full_backfill_at_the_tiers_gets_no_429(nexus, sim):
    """Slack's tiers on a one-second minute: the shared budgets keep every tier under the
    simulator's limits (a fixed window per workspace and tier)."""
    sim.data.create(sim.default_account, "messages", 200)  # more history than one minute's
    nexus.connect("tenant-1", "main", sim.default_account)
    nexus.service.update_installation("tenant-1", "main", changes={"page_size": 5})
    nexus.run()
    assert nexus.failed_jobs() == []
    assert sim.app.rate_limit.rejected == 0
    assert len(sim.requests("/api/conversations.history")) > 50  # past one tier-3 minute


def test_a_tier2_429_cools_down_tier2_only(nexus, sim):
    account = sim.default_account
    http = _session(nexus, sim, account)
    sim.faults.rate_limit_next(retry_after=1, body={"ok": False, "error": "ratelimited"},
                               path="/api/users.list")
    assert http.get("/users.list", rate_limit_bucket="tier2").json()["ok"] is True
    listed = sim.requests("/api/users.list")
    assert [r.status for r in listed] == [429, 200]
    assert listed[1].at - listed[0].at >= 0.95  # Retry-After obeyed
    # A long Tier 2 cool-down (past NEXUS_RATE_LIMIT_MAX_WAIT: the job would be deferred)...
    sim.faults.rate_limit_next(retry_after=30, body={"ok": False, "error": "ratelimited"},
                               path="/api/conversations.list")
    with pytest.raises(RateLimited) as err:
        http.get("/conversations.list", rate_limit_bucket="tier2")
    assert err.value.retry_after >= 29
    # ...holds every Tier 2 call of the workspace, in any process, without sending it...
    other = _session(nexus, sim, account, install="other")
    sent = len(sim.requests("/api/users.list"))
    with pytest.raises(RateLimited):
        other.get("/users.list", rate_limit_bucket="tier2")
    assert len(sim.requests("/api/users.list")) == sent
    # ...and no Tier 3 call.
    answer = other.get("/conversations.history", params={"channel": sim.channel_id(0)},
                       rate_limit_bucket="tier3")
    assert answer.json()["ok"] is True
    http.close()
    other.close()


def test_the_buckets_are_per_workspace(nexus, sim):
    a, b = sim.default_account, sim.add_account()
    http_a, http_b = _session(nexus, sim, a), _session(nexus, sim, b, install="b")
    sim.faults.rate_limit_next(retry_after=30, body={"ok": False, "error": "ratelimited"},
                               path="/api/users.list")
    with pytest.raises(RateLimited):
        http_a.get("/users.list", rate_limit_bucket="tier2")
    assert http_b.get("/users.list", rate_limit_bucket="tier2").json()["ok"] is True
    assert [r.account for r in sim.requests("/api/users.list") if r.status == 200] == [b]
    http_a.close()
    http_b.close()


def test_limited_history_apps_read_15_per_page_at_one_a_minute(make_sim, harness):
    # Two channels of 20 messages: two pages each at 15 per page, four calls a minute apart
    # (a one-second minute: the spacing leaves 0.1 s for arrival jitter on a loaded machine).
    sim = make_sim(limited_history=True, minute=1.0,
                   sizes={"channels": 2, "users": 3, "messages": 40})
    nexus = harness(sim)
    nexus.connect("tenant-1", "main", sim.default_account)
    nexus.run()
    assert nexus.failed_jobs() == [] and sim.app.rate_limit.rejected == 0
    history = sim.requests("/api/conversations.history")
    assert len(history) >= len(sim.member_channels())
    gaps = [b.at - a.at for a, b in zip(history, history[1:], strict=False)]
    assert len(history) == 4 and min(gaps) >= 0.9, "more than one history call a minute"
    assert set(nexus.delivered("tenant-1", "main", "messages")) == \
        sim.expected_ids("messages", sim.default_account)
    pages = [r for r in nexus.recorder.rows("page") if r["stream"] == "messages"]
    assert max(p["n"] for p in pages) == tiers.LIMITED_PAGE_SIZE
