"""OAuth with HubSpot: the authorize URL (space-joined scopes, optional scopes, state, PKCE,
the consent host), the token form and answer (hub_id → the account id), refresh ahead of
expiry, 401 EXPIRED_AUTHENTICATION mid-backfill, BAD_REFRESH_TOKEN → needs_reauth."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from nexus_hubspot import PROVIDER


def _consent_url(nexus, tenant="t1", install="main"):
    link = nexus.service.create_connect_link("hubspot", tenant, install)
    parts = urlsplit(link.url)
    start = nexus.client.simulate_get(parts.path, query_string=parts.query)
    assert start.status_code == 302, start.text
    return start.headers["location"]


def test_the_authorize_url_is_hubspots_on_the_consent_host(sim, nexus):
    url = _consent_url(nexus)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == sim.url  # HUBSPOT_AUTH_URL, not the API host
    assert parts.path == "/oauth/authorize"
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert q["client_id"] == "hubspot-sim-client"
    assert q["scope"] == ("oauth crm.objects.contacts.read crm.objects.companies.read "
                          "crm.objects.deals.read")
    assert q["optional_scope"] == "tickets e-commerce"
    assert q["redirect_uri"] == "http://nexus.test/integrations/hubspot/callback"
    assert len(q["state"]) >= 40 and q["code_challenge_method"] == "S256"


def test_the_callback_stores_the_portal_id_as_the_account_and_tokens_that_expire(sim, nexus):
    inst = nexus.connect("t1", "main", sim.default_account)
    assert inst.account_id == sim.default_account  # from the token answer's hub_id
    creds = nexus.store.get_credentials("t1", "main")
    lifetime = (creds.expires_at - inst.updated_at).total_seconds()
    assert 1790 <= lifetime <= 1801  # expires_in 1800
    assert creds.token_type == "Bearer" and creds.refresh_token.startswith("rt-")
    (token_call,) = [r for r in sim.requests("/oauth/v1/token$")]
    assert token_call.method == "POST"


def test_tokens_are_refreshed_ahead_of_expiry_so_no_request_meets_a_401(sim, harness):
    nexus = harness(sim, NEXUS_REFRESH_MARGIN="1800")  # every job finds the token "expiring"
    nexus.connect("t1", "main", sim.default_account)
    nexus.service.start_backfill("hubspot", "t1", "main")
    nexus.run()
    assert sim.oauth.refreshes >= 1
    assert [r for r in sim.requests() if r.status == 401] == []
    assert nexus.failed_jobs() == []


def test_a_token_expiring_mid_backfill_gets_401_expired_authentication_then_one_refresh(
    sim, nexus
):
    account = sim.default_account
    nexus.connect("t1", "main", account)
    sim.oauth.expire_after(3)  # HubSpot's session ends during the backfill
    nexus.service.start_backfill("hubspot", "t1", "main")
    nexus.run()
    expired = [r for r in sim.requests() if r.status == 401]
    assert len(expired) == 1 and sim.oauth.refreshes == 1
    for stream in ("contacts", "companies", "deals"):
        got = nexus.delivered("t1", "main", stream)
        assert sorted(got) == sorted(sim.expected_ids(stream, account))
    assert nexus.failed_jobs() == []


def test_bad_refresh_token_marks_the_installation_needs_reauth_without_retries(sim, nexus):
    account = sim.default_account
    nexus.connect("t1", "main", account)
    sim.oauth.revoke(account)  # the app was uninstalled from the portal
    nexus.service.start_backfill("hubspot", "t1", "main")
    nexus.run()
    assert nexus.store.get_installation("t1", "main").status == "needs_reauth"
    assert len(nexus.failed_jobs()) == 1
    refreshes = [r for r in sim.requests("/oauth/v1/token$")]
    assert [r.status for r in refreshes] == [200, 400]  # the exchange, one refusal: no retry
    # the answer was HubSpot's own shape
    import requests

    answer = requests.post(f"{sim.url}/oauth/v1/token", timeout=5, data={
        "grant_type": "refresh_token", "refresh_token": "rt-unknown",
        "client_id": "hubspot-sim-client", "client_secret": "hubspot-sim-client-secret"})
    assert answer.json()["status"] == "BAD_REFRESH_TOKEN"


def test_an_unknown_code_is_bad_auth_code_and_nothing_is_stored(sim, nexus):
    resp = nexus.callback("t1", "main", sim.default_account, code="not-a-code")
    assert resp.status_code in (400, 502)
    assert "BAD_AUTH_CODE" in resp.text
    assert nexus.store.list_installations("t1") == []


def test_the_declared_variables_are_hubspots(sim, nexus):
    names = {v.name: v for v in PROVIDER.variables()}
    assert {"HUBSPOT_CLIENT_ID", "HUBSPOT_CLIENT_SECRET", "HUBSPOT_REDIRECT_URI",
            "HUBSPOT_WEBHOOK_SECRET", "HUBSPOT_BASE_URL", "HUBSPOT_AUTH_URL"} <= set(names)
    assert names["HUBSPOT_CLIENT_SECRET"].secret and names["HUBSPOT_WEBHOOK_SECRET"].secret
    assert names["HUBSPOT_CLIENT_ID"].required
