"""The Slack simulator answers in Slack's shapes (providers.md, addendum 2), checked with plain
HTTP — the connector's tests are only as good as the simulator is true."""

from __future__ import annotations

import base64

import requests


def _get(sim, method, token=None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{sim.url}/api/{method}", params=params, headers=headers, timeout=10)


def _token(sim, account=None):
    return sim.oauth.issue_tokens(account or sim.default_account)["access_token"]


def test_auth_errors_come_as_http_200_with_slacks_codes(sim):
    assert _get(sim, "auth.test").json() == {"ok": False, "error": "not_authed"}
    assert _get(sim, "auth.test", "xoxb-never-issued").json()["error"] == "invalid_auth"
    token = _token(sim)
    sim.oauth.expire_access_tokens()
    expired = _get(sim, "auth.test", token)
    assert expired.status_code == 200 and expired.json()["error"] == "token_expired"
    sim.oauth.revoke(sim.default_account)
    assert _get(sim, "auth.test", token).json()["error"] == "token_revoked"


def test_auth_test_names_the_workspace_and_the_bot(sim):
    resp = _get(sim, "auth.test", _token(sim))
    body = resp.json()
    assert body["ok"] is True and body["team_id"] == sim.default_account
    assert {"url", "team", "user", "user_id", "bot_id"} <= set(body)
    assert "channels:read" in resp.headers["x-oauth-scopes"]


def test_conversations_list_pages_with_a_team_cursor_until_an_empty_one(sim):
    token, cursor, ids = _token(sim), None, []
    while True:
        body = _get(sim, "conversations.list", token, limit=3,
                    **({"cursor": cursor} if cursor else {})).json()
        assert body["ok"] is True
        ids += [c["id"] for c in body["channels"]]
        assert {"id", "name", "is_member", "is_channel", "updated"} <= set(body["channels"][0])
        cursor = body["response_metadata"]["next_cursor"]
        if cursor == "":
            break
        assert base64.b64decode(cursor).decode().startswith("team:")
    assert ids == [sim.channel_id(i) for i in range(sim.data.sizes["channels"])]
    assert _get(sim, "conversations.list", token, cursor="bogus").json()["error"] == \
        "invalid_cursor"


def test_history_is_newest_first_with_exclusive_oldest_and_next_ts_cursors(sim):
    token = _token(sim)
    channel = sim.channel_id(sim.member_channels()[0])
    first = _get(sim, "conversations.history", token, channel=channel, limit=5).json()
    ts = [float(m["ts"]) for m in first["messages"]]
    assert ts == sorted(ts, reverse=True) and first["has_more"] is True
    assert base64.b64decode(first["response_metadata"]["next_cursor"]).decode().startswith(
        "next_ts:")
    second = _get(sim, "conversations.history", token, channel=channel, limit=5,
                  cursor=first["response_metadata"]["next_cursor"]).json()
    assert max(float(m["ts"]) for m in second["messages"]) < min(ts)
    newest = first["messages"][0]["ts"]
    assert _get(sim, "conversations.history", token, channel=channel,
                oldest=newest).json()["messages"] == []
    inclusive = _get(sim, "conversations.history", token, channel=channel, oldest=newest,
                     inclusive="true").json()["messages"]
    assert [m["ts"] for m in inclusive] == [newest]


def test_history_of_a_channel_the_bot_is_not_in_or_that_does_not_exist(sim):
    token = _token(sim)
    outside = next(i for i in range(sim.data.sizes["channels"]) if not sim.is_member(i))
    assert _get(sim, "conversations.history", token,
                channel=sim.channel_id(outside)).json() == {"ok": False,
                                                             "error": "not_in_channel"}
    assert _get(sim, "conversations.history", token, channel="C999").json()["error"] == \
        "channel_not_found"


def test_replies_start_with_the_parent(sim):
    token = _token(sim)
    channel = sim.channel_id(sim.channel_of(0))
    parent = sim.ts(sim.default_account, 0)
    body = _get(sim, "conversations.replies", token, channel=channel, ts=parent).json()
    assert [m["ts"] for m in body["messages"]][0] == parent
    assert all(m["thread_ts"] == parent for m in body["messages"])
    assert len(body["messages"]) == 3


def test_a_tier_over_its_minute_is_429_ratelimited_with_retry_after(make_sim):
    sim = make_sim(minute=60.0)
    token = _token(sim)
    answers = [_get(sim, "users.list", token, limit=1) for _ in range(21)]
    assert [a.status_code for a in answers[:20]] == [200] * 20
    assert answers[20].status_code == 429
    assert answers[20].json() == {"ok": False, "error": "ratelimited"}
    assert 1 <= int(answers[20].headers["Retry-After"]) <= 60
    # Tier 3 is another budget: still open.
    channel = sim.channel_id(sim.member_channels()[0])
    assert _get(sim, "conversations.history", token, channel=channel).status_code == 200


def test_oauth_v2_access_errors_are_http_200(sim):
    url = sim.url + "/api/oauth.v2.access"
    bad_code = requests.post(url, data={"grant_type": "authorization_code", "code": "nope"},
                             auth=(sim.oauth.client_id, sim.oauth.client_secret), timeout=10)
    assert bad_code.status_code == 200 and bad_code.json() == {"ok": False,
                                                               "error": "invalid_code"}
    bad_secret = requests.post(url, data={"grant_type": "authorization_code", "code": "x"},
                               auth=(sim.oauth.client_id, "wrong"), timeout=10)
    assert bad_secret.json()["error"] == "bad_client_secret"
