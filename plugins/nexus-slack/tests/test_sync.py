"""The walks of nexus_slack.sync against the simulator, on a worker: history paged newest
first, deltas from each channel's newest ts (``oldest``, exclusive), thread replies when
configured, channels and users by ``updated``, and the config the connector reads."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nexus_slack.connector import config_problems


@pytest.fixture
def logged(sim):
    """The query string of every conversations.history call (the simulator's log keeps paths
    only): wraps the route."""
    seen = []
    for i, (method, regex, fn, auth) in enumerate(sim.app.routes):
        if regex.pattern.endswith("conversations.history$"):
            def wrapped(req, fn=fn):
                seen.append(dict(req.query))
                return fn(req)
            sim.app.routes[i] = (method, regex, wrapped, auth)
    return seen


def test_history_is_paged_newest_first_and_every_message_comes_once(nexus, sim, logged):
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    nexus.service.update_installation("tenant-1", "main", changes={"page_size": 7})
    nexus.run()
    got = nexus.delivered("tenant-1", "main", "messages")
    assert sorted(got) == sorted(sim.expected_ids("messages", account))
    assert any(q.get("cursor") for q in logged), "history was never paged"
    assert all(q.get("limit") in ("7", "200") for q in logged)


def test_a_delta_asks_each_channel_for_what_is_newer_than_its_newest_message(
    nexus, sim, logged
):
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    nexus.run()
    newest = {}
    for row in nexus.recorder.rows("record"):
        if row["stream"] == "messages":
            ch, ts = row["data"]["channel"], row["data"]["ts"]
            newest[ch] = max(newest.get(ch, ts), ts, key=float)
    logged.clear()
    nexus.recorder.clear()
    posted = sim.mutate("messages", account, 4)
    nexus.service.start_delta("slack", "tenant-1", "main", stream="messages")
    nexus.run()
    assert set(nexus.delivered("tenant-1", "main", "messages")) == posted
    oldest = {q["channel"]: q.get("oldest") for q in logged}
    assert oldest == newest, "a delta must ask from each channel's newest ts"
    # Nothing new: nothing delivered, the same marks asked again.
    nexus.recorder.clear()
    nexus.service.start_delta("slack", "tenant-1", "main", stream="messages")
    nexus.run()
    assert nexus.delivered("tenant-1", "main", "messages") == []


def test_thread_replies_are_read_when_configured(nexus, sim):
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    nexus.run()
    without = set(nexus.delivered("tenant-1", "main", "messages"))
    assert without == sim.expected_ids("messages", account)
    assert sim.requests("/api/conversations.replies") == []
    nexus.recorder.clear()
    nexus.service.update_installation("tenant-1", "main", changes={"threads": True})
    nexus.service.start_backfill("slack", "tenant-1", "main", stream="messages")
    nexus.run()
    got = nexus.delivered("tenant-1", "main", "messages")
    want = sim.expected_ids("messages", account) | sim.expected_reply_ids(account)
    assert sorted(got) == sorted(want)
    replies = [r for r in nexus.recorder.rows("record") if r["stream"] == "messages"
               and r["data"].get("parent_user_id")]
    assert replies and all(r["data"]["thread_ts"] != r["data"]["ts"] for r in replies)


def test_channels_and_users_deltas_deliver_what_changed_since_the_last_walk(nexus, sim):
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    nexus.run()
    nexus.recorder.clear()
    changed_channels = sim.mutate("channels", account, 2)
    changed_users = sim.mutate("users", account, 3)
    nexus.service.start_delta("slack", "tenant-1", "main")
    nexus.run()
    assert set(nexus.delivered("tenant-1", "main", "channels")) == changed_channels
    assert set(nexus.delivered("tenant-1", "main", "users")) == changed_users
    assert len(sim.requests("/api/users.list")) >= 2  # the whole list, walked again


def test_the_simulator_is_registered_for_nexus_simulate():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="nexus_simulators") if e.name == "slack"]
    assert ep.load().__name__ == "SlackSimulator"


@pytest.mark.parametrize(("config", "problem"), [
    ({"page_size": 0}, "page_size"), ({"page_size": "10"}, "page_size"),
    ({"page_size": True}, "page_size"), ({"threads": "yes"}, "threads"),
    ({"channel_types": ["public_channel", "dm"]}, "channel_types"),
    ({"channel_types": []}, "channel_types"), ({"team_id": "C123"}, "team_id"),
    ({"team_id": 7}, "team_id"),
])
def test_a_bad_config_is_refused_when_stored(nexus, sim, config, problem):
    result = nexus.service.validate_connector_config("slack", config)
    assert not result.valid and any(problem in e for e in result.errors), result


@given(st.dictionaries(st.sampled_from(["page_size", "threads", "channel_types", "team_id"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5),
                                 st.lists(st.text(max_size=15), max_size=3))))
def test_config_problems_never_raise_and_name_the_key(config):
    for problem in config_problems(config):
        assert any(key in problem for key in config)


def test_a_backfill_reads_every_channel_in_full(nexus, sim, logged):
    nexus.connect("tenant-1", "main", sim.default_account)
    nexus.run()
    member = {sim.channel_id(i) for i in sim.member_channels()}
    assert {q["channel"] for q in logged} == member  # never one the bot is not in
    assert all("oldest" not in q for q in logged)


def test_an_org_wide_installation_reads_the_workspace_its_config_names(nexus, sim):
    seen = []
    for i, (method, regex, fn, auth) in enumerate(sim.app.routes):
        if regex.pattern.endswith(("conversations.list$", "users.list$")):
            def wrapped(req, fn=fn):
                seen.append(req.query.get("team_id"))
                return fn(req)
            sim.app.routes[i] = (method, regex, wrapped, auth)
    org = sim.add_account("E0SIMORG02")
    nexus.connect("tenant-org", "main", org)
    nexus.service.update_installation("tenant-org", "main", changes={"team_id": "T0WS000042"})
    nexus.store.reset_checkpoint("tenant-org", "main", "users", "backfill")
    seen.clear()
    nexus.service.start_backfill("slack", "tenant-org", "main", stream="users")
    nexus.run()
    assert seen and set(seen) == {"T0WS000042"}
    assert set(nexus.delivered("tenant-org", "main", "users")) == sim.expected_ids("users", org)
