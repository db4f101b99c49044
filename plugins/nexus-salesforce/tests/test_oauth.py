"""OAuth with Salesforce: PKCE at the installation's login host (production, sandbox, My
Domain), the token answer's signature, its instance URL and org id, the session lifetime the
answer does not state, refresh-token rotation and ``invalid_grant`` — through the connect
link, the OAuth routes and real refreshes against the simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from nexus_core import oauth


def refresh(nexus, tenant="t1", install="main"):
    stale = nexus.store.get_credentials(tenant, install)
    return oauth.refresh_credentials(nexus.store, nexus.redis, nexus.registry, tenant, install,
                                     stale=stale, settings=nexus.settings)


def test_the_signed_answer_gives_the_org_its_instance_and_a_session_of_the_orgs_timeout(
    sim, nexus
):
    org = sim.default_account
    link = nexus.service.create_connect_link("salesforce", "t1", "main")
    start = nexus.client.simulate_get(urlsplit(link.url).path,
                                      query_string=urlsplit(link.url).query)
    consent = parse_qs(urlsplit(start.headers["location"]).query)
    assert consent["code_challenge_method"] == ["S256"] and consent["scope"] == [
        "api refresh_token"]
    before = datetime.now(UTC)
    inst = nexus.connect("t1", "main", org)
    assert (inst.status, inst.account_id) == ("active", org)  # the org id of the id URL
    creds = nexus.store.get_credentials("t1", "main")
    assert creds.extra["instance_url"] == sim.org(org).instance_url
    assert creds.extra["identity_url"].endswith(f"/id/{org}/0055g000004SimUAAU")
    # no expires_in: the org's session timeout (2 h) from issued_at
    assert before - timedelta(seconds=2) <= creds.expires_at - timedelta(seconds=7200) \
        <= datetime.now(UTC)
    assert [(host, what) for host, what, _ in sim.oauth_log] == [
        ("login", "authorize"), ("login", "authorization_code")]


@pytest.mark.parametrize("broken", ["signature", "instance_url"])
def test_a_token_answer_with_a_bad_signature_or_a_foreign_instance_is_refused(
    sim, nexus, broken
):
    if broken == "signature":
        sim.signature_key = "not-the-consumer-secret"
    else:
        sim.instance_url_override = "https://instance.evil.example"
    resp = nexus.callback("t1", "main", sim.default_account)
    assert resp.status_code == 400, resp.text
    assert ("signature does not match" if broken == "signature" else "not a Salesforce host") \
        in resp.text
    assert nexus.store.list_installations("t1") == []


def test_a_sandbox_org_logs_in_and_refreshes_at_its_login_host_only(sim, nexus):
    sandbox = sim.add_account(sandbox=True)
    production = sim.default_account
    nexus.connect("t1", "main", production)
    inst = nexus.connect("t1", "sandbox", sandbox)  # its config names sim.sandbox_url
    assert inst.config["login_url"] == sim.sandbox_url and inst.account_id == sandbox
    refresh(nexus, install="sandbox")
    refresh(nexus, install="main")
    assert [(host, what) for host, what, _ in sim.oauth_log] == [
        ("login", "authorize"), ("login", "authorization_code"),
        ("test", "authorize"), ("test", "authorization_code"), ("test", "refresh_token"),
        ("login", "refresh_token")]
    # Without its login host, a sandbox org cannot log in at all.
    link = nexus.service.create_connect_link("salesforce", "t1", "other")
    start = nexus.client.simulate_get(urlsplit(link.url).path,
                                      query_string=urlsplit(link.url).query)
    import requests

    refused = requests.get(start.headers["location"] + f"&account={sandbox}",
                           allow_redirects=False, timeout=10)
    assert refused.status_code == 400 and "does not log in at this host" in refused.text


def test_my_domain_is_the_login_host_for_flows_and_refreshes(sim, nexus):
    org = sim.default_account
    my_domain = sim.org(org).instance_url
    link = nexus.service.create_connect_link("salesforce", "t1", "main",
                                             config={"login_url": my_domain})
    start = nexus.client.simulate_get(urlsplit(link.url).path,
                                      query_string=urlsplit(link.url).query)
    assert start.headers["location"].startswith(my_domain + "/services/oauth2/authorize?")
    import requests

    consent = requests.get(start.headers["location"] + f"&account={org}",
                           allow_redirects=False, timeout=10)
    back = urlsplit(consent.headers["Location"])
    done = nexus.client.simulate_get(back.path, params=dict(
        (k, v[0]) for k, v in parse_qs(back.query).items()))
    assert done.status_code == 200, done.text
    refresh(nexus)
    assert [host for host, _, _ in sim.oauth_log] == [f"org:{org}"] * 3


def test_a_login_host_that_is_not_salesforces_is_refused_before_anything_is_sent(sim, nexus):
    from nexus_core.errors import ConfigError

    with pytest.raises(ConfigError, match="login_url"):
        nexus.service.create_connect_link("salesforce", "t1", "main",
                                          config={"login_url": "https://login.evil.example"})
    check = nexus.service.validate_connector_config(
        "salesforce", {"login_url": "https://acme.my.salesforce.com/extra/path"})
    assert not check.valid and "scheme and host only" in check.errors[0]
    assert nexus.service.validate_connector_config(
        "salesforce", {"login_url": "https://acme--dev.sandbox.my.salesforce.com"}).valid
    assert sim.oauth_log == []


def test_refresh_keeps_the_refresh_token_unless_the_app_rotates_them(sim, nexus):
    nexus.connect("t1", "main", sim.default_account)
    first = nexus.store.get_credentials("t1", "main")
    fresh = refresh(nexus)
    assert fresh.access_token != first.access_token
    assert fresh.refresh_token == first.refresh_token  # the answer carried none
    assert fresh.extra["instance_url"] == first.extra["instance_url"]
    sim.oauth.rotate_refresh = True  # the connected app's refresh token rotation
    rotated = refresh(nexus)
    assert rotated.refresh_token not in (None, first.refresh_token)
    assert nexus.store.get_credentials("t1", "main").refresh_token == \
        sim.oauth.current_refresh_token(sim.default_account)
    refresh(nexus)  # the stored (rotated) one works; the old one was never sent again
    assert sim.oauth.refused_reuse == 0


def test_a_revoked_grant_is_invalid_grant_and_the_installation_needs_reauth(sim, nexus):
    from nexus_core.errors import AuthError

    nexus.connect("t1", "main", sim.default_account)
    sim.oauth.revoke(sim.default_account)
    with pytest.raises(AuthError) as err:
        refresh(nexus)
    assert err.value.needs_reauth and "expired access/refresh token" in err.value.message
    assert nexus.store.get_installation("t1", "main").status == "needs_reauth"


def test_the_session_lifetime_is_the_installations_and_is_refreshed_ahead(
    sim, harness
):
    nexus = harness(sim, NEXUS_REFRESH_MARGIN="1000")
    org = sim.default_account
    link = nexus.service.create_connect_link("salesforce", "t1", "main",
                                             config={"session_timeout": 900,
                                                     "streams": ["Opportunity"],
                                                     "batch_size": 200})
    parts = urlsplit(link.url)
    start = nexus.client.simulate_get(parts.path, query_string=parts.query)
    import requests

    consent = requests.get(start.headers["location"] + f"&account={org}",
                           allow_redirects=False, timeout=10)
    back = urlsplit(consent.headers["Location"])
    assert nexus.client.simulate_get(back.path, params=dict(
        (k, v[0]) for k, v in parse_qs(back.query).items())).status_code == 200
    creds = nexus.store.get_credentials("t1", "main")
    left = (creds.expires_at - datetime.now(UTC)).total_seconds()
    assert 880 < left <= 900  # the org's 15-minute timeout, not the default 2 h
    # 15 minutes is within the 1000 s refresh margin: every job refreshes before its first
    # request, so none is sent with a session about to end (no 401 at all).
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    assert sim.oauth.refreshes >= 1 and nexus.failed_jobs() == []
    assert all(status != 401 for *_, status in sim.api_log)
    assert sorted(nexus.delivered("t1", "main")) == sorted(
        sim.expected_ids("Opportunity", org))
