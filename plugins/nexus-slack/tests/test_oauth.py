"""OAuth v2 as Slack runs it (providers.md 2, addendum 2.4): the consent page with comma-joined
scopes, ``oauth.v2.access`` with the client credentials as HTTP Basic, a bot token that
expires in 12 hours with a rotating refresh token, ``team.id`` as the account."""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from nexus_slack.simulator import CLIENT_ID, CLIENT_SECRET

from nexus_core.models import utcnow


def _record_token_requests(sim):
    seen = []
    for i, (method, regex, fn, auth) in enumerate(sim.app.routes):
        if regex.pattern.endswith("oauth.v2.access$"):
            def wrapped(req, fn=fn):
                seen.append((req.header("authorization"), req.form()))
                return fn(req)
            sim.app.routes[i] = (method, regex, wrapped, auth)
    return seen


def test_the_consent_page_asks_for_comma_joined_scopes(nexus, sim):
    link = nexus.service.create_connect_link("slack", "tenant-1", "main")
    parts = urlsplit(link.url)
    start = nexus.client.simulate_get(parts.path, query_string=parts.query)
    assert start.status_code == 302
    target = urlsplit(start.headers["location"])
    assert target.path == "/oauth/v2/authorize"
    query = parse_qs(target.query)
    assert query["scope"] == ["channels:read,channels:history,groups:read,groups:history,"
                              "users:read"]
    assert query["client_id"] == [CLIENT_ID] and query["state"]


def test_the_code_exchange_sends_the_client_as_http_basic_and_reads_slacks_answer(nexus, sim):
    seen = _record_token_requests(sim)
    inst = nexus.connect("tenant-1", "main", sim.default_account)
    assert inst.account_id == sim.default_account  # team.id
    ((authorization, form),) = seen
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert authorization == f"Basic {expected}"
    assert "client_secret" not in form and form["grant_type"] == "authorization_code"
    creds = nexus.store.get_credentials("tenant-1", "main")
    assert creds.token_type == "Bearer"  # Slack answers "bot"
    assert timedelta(hours=11, minutes=59) < creds.expires_at - utcnow() <= timedelta(hours=12)
    assert creds.extra["bot_user_id"] == "U0BOTUSER1" and creds.extra["team_name"]
    assert creds.refresh_token == sim.oauth.current_refresh_token(sim.default_account)


def test_a_refresh_is_http_basic_too_and_rotates(nexus, sim):
    from nexus_core import oauth

    nexus.connect("tenant-1", "main", sim.default_account)
    seen = _record_token_requests(sim)
    before = nexus.store.get_credentials("tenant-1", "main")
    fresh = oauth.refresh_credentials(nexus.store, nexus.redis, nexus.registry, "tenant-1",
                                      "main", stale=before, settings=nexus.settings)
    ((authorization, form),) = seen
    assert authorization.startswith("Basic ") and form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == before.refresh_token
    assert fresh.refresh_token != before.refresh_token
    assert fresh.extra["account_id"] == sim.default_account  # kept across refreshes


def test_a_wrong_client_secret_is_refused_and_nothing_is_stored(harness, sim):
    nexus = harness(sim, SLACK_CLIENT_SECRET="not-the-secret")
    resp = nexus.callback("tenant-1", "main", sim.default_account)
    assert resp.status_code in (400, 502)
    assert "bad_client_secret" in resp.text
    assert nexus.store.list_installations("tenant-1") == []
