"""Slack's errors arrive as HTTP 200 ``{"ok": false, "error": ...}`` (addendum 2): each code
maps to what it means, through a real backfill on a worker against the simulator."""

from __future__ import annotations

import pytest


def _backfill(nexus):
    """Run the backfill the OAuth callback enqueued (every stream)."""
    nexus.run()


def _connect(nexus, sim, **config):
    inst = nexus.connect("tenant-1", "main", sim.default_account)
    if config:
        nexus.service.update_installation("tenant-1", "main", changes=config)
    return inst


@pytest.mark.parametrize("code", ["invalid_auth", "token_expired"])
def test_an_expired_or_invalid_token_is_refreshed_and_the_sync_goes_on(nexus, sim, code):
    _connect(nexus, sim)
    sim.error_next(code, method="users.list")
    _backfill(nexus)
    assert sim.oauth.refreshes == 1 and sim.oauth.refused_reuse == 0
    assert set(nexus.delivered("tenant-1", "main", "users")) == \
        sim.expected_ids("users", sim.default_account)
    assert nexus.failed_jobs() == []


@pytest.mark.parametrize("code", ["token_revoked", "account_inactive"])
def test_a_revoked_token_or_inactive_account_needs_reauth_without_retries(nexus, sim, code):
    _connect(nexus, sim)
    sim.error_next(code, method="users.list", times=10)
    _backfill(nexus)
    assert nexus.store.get_installation("tenant-1", "main").status == "needs_reauth"
    assert sim.oauth.refreshes == 0
    assert len(sim.requests("/api/users.list")) == 1, "retried a dead grant"
    (run,) = nexus.store.list_runs("tenant-1", "main")
    assert run.status == "failed" and code in (run.error or ""), run


def test_another_error_fails_the_page_with_its_code_in_the_runs_error(nexus, sim):
    _connect(nexus, sim)
    sim.error_next("missing_scope", method="users.list", times=10)
    _backfill(nexus)
    (run,) = nexus.store.list_runs("tenant-1", "main")
    assert run.status == "failed" and "missing_scope" in (run.error or ""), run
    assert nexus.store.get_installation("tenant-1", "main").status == "active"
    assert nexus.delivered("tenant-1", "main", "users") == []


def test_a_transient_error_inside_a_200_is_retried(nexus, sim):
    _connect(nexus, sim)
    sim.error_next("internal_error", method="users.list")
    _backfill(nexus)
    assert set(nexus.delivered("tenant-1", "main", "users")) == \
        sim.expected_ids("users", sim.default_account)
    assert nexus.failed_jobs() == []


def test_ratelimited_429_waits_for_retry_after(nexus, sim):
    _connect(nexus, sim)
    sim.faults.rate_limit_next(retry_after=1, body={"ok": False, "error": "ratelimited"},
                               path="/api/users.list")
    _backfill(nexus)
    calls = sim.requests("/api/users.list")
    assert calls[0].status == 429 and calls[1].at - calls[0].at >= 0.95
    assert set(nexus.delivered("tenant-1", "main", "users")) == \
        sim.expected_ids("users", sim.default_account)


def test_a_channel_the_bot_is_not_in_is_skipped_with_a_note_not_a_failure(
    nexus, sim, nexus_logs
):
    _connect(nexus, sim)
    member = [sim.channel_id(i) for i in sim.member_channels()]
    # One member channel answers not_in_channel too (the bot was removed after the listing).
    sim.error_next("not_in_channel", method="conversations.history")
    _backfill(nexus)
    assert nexus.failed_jobs() == []
    (run,) = nexus.store.list_runs("tenant-1", "main")
    assert run.status == "succeeded"
    history = sim.requests("/api/conversations.history")
    assert len(history) >= len(member)
    skipped_first = member[0]
    got = set(nexus.delivered("tenant-1", "main", "messages"))
    want = sim.expected_ids("messages", sim.default_account)
    assert got == {i for i in want if not i.startswith(skipped_first + ":")}
    notes = [m for _, m, _ in nexus_logs.records if "skipped" in m]
    not_members = [sim.channel_id(i) for i in range(sim.data.sizes["channels"])
                   if not sim.is_member(i)]
    assert any(skipped_first in n and "invite" in n for n in notes), notes
    assert all(any(c in n for n in notes) for c in not_members), notes
