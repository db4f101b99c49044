"""The OAuth2 flow against a real local token endpoint: authorization URL, one-time state,
PKCE, code exchange, token parsing, refresh, needs_reauth, proactive refresh."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

from nexus_core import BaseConnector, OAuthConfig, Provider, SyncPage, oauth
from nexus_core.config import load_settings
from nexus_core.errors import AuthError, ConfigError, ProviderError
from nexus_core.models import Credentials
from nexus_core.plugins import registered
from nexus_core.store import Conflict


def _query(link: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


def _start(store, registry, settings, tenant="t1", install="i1") -> dict[str, str]:
    return _query(oauth.authorization_url(store, registry, "acme", tenant, install,
                                          settings=settings))


def _connect(store, registry, settings, server, tenant="t1", install="i1"):
    q = _start(store, registry, settings, tenant, install)
    server.add_code(f"code-{tenant}-{install}", q["code_challenge"])
    return oauth.complete_authorization(store, registry, "acme", f"code-{tenant}-{install}",
                                        q["state"], settings=settings)


# -- authorization URL ---------------------------------------------------------------------


def test_authorization_url_carries_client_scopes_one_time_state_and_pkce_s256(
    store, acme_registry, settings, fakes
):
    link = oauth.authorization_url(store, acme_registry, "acme", "t1", "i1", settings=settings)
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://app.acme.test/oauth/authorize"
    q = _query(link)
    assert q["response_type"] == "code"
    assert q["client_id"] == fakes.CLIENT_ID
    assert q["redirect_uri"] == fakes.REDIRECT_URI
    assert q["scope"] == "crm.read crm.write"
    assert q["code_challenge_method"] == "S256"
    assert len(q["code_challenge"]) == 43 and "=" not in q["code_challenge"]
    assert len(q["state"]) >= 40
    assert fakes.CLIENT_SECRET not in link
    other = _query(oauth.authorization_url(store, acme_registry, "acme", "t1", "i1",
                                           settings=settings))
    assert other["state"] != q["state"] and other["code_challenge"] != q["code_challenge"]


def test_authorization_url_needs_the_client_id_and_an_oauth_provider(
    store, acme_registry, fakes, token_server, keys
):
    env = fakes.settings_env(token_server.url, keys)
    del env["ACME_CLIENT_ID"]
    settings = load_settings(environ=env, env_file=None)
    with pytest.raises(ConfigError, match="ACME_CLIENT_ID is not set"):
        oauth.authorization_url(store, acme_registry, "acme", "t", "i", settings=settings)
    with pytest.raises(Exception, match="unknown provider 'nope'; known providers: acme"):
        oauth.authorization_url(store, acme_registry, "nope", "t", "i", settings=settings)


def test_authorization_url_refuses_an_install_id_taken_by_another_provider(
    store, acme_registry, settings
):
    store.add_installation("t1", "i1", "slack")
    with pytest.raises(Conflict, match="belongs to provider 'slack'"):
        oauth.authorization_url(store, acme_registry, "acme", "t1", "i1", settings=settings)


def test_token_url_overrides_base_url_env_then_explicit_variable(fakes, keys):
    base = load_settings(environ={"ACME_BASE_URL": "http://127.0.0.1:9/sim"}, env_file=None)
    assert oauth.endpoint(fakes.ACME, "token", base) == "http://127.0.0.1:9/sim/oauth/v1/token"
    assert oauth.endpoint(fakes.ACME, "authorize", base) == fakes.ACME.oauth.authorize_url
    explicit = load_settings(environ={"ACME_BASE_URL": "http://x", "ACME_TOKEN_URL": "http://y/t"},
                             env_file=None)
    assert oauth.endpoint(fakes.ACME, "token", explicit) == "http://y/t"


def test_authorize_base_url_env_moves_the_consent_page_and_optional_scopes_are_asked_for(
    store, acme_registry, settings, fakes
):
    moved = attrs.evolve(fakes.ACME, id="movable", oauth=attrs.evolve(
        fakes.ACME.oauth, authorize_url="https://app.acme.test/oauth/authorize?x=1",
        authorize_base_url_env="MOVABLE_AUTH_URL",
        optional_scopes=("crm.export", "crm.files")))
    assert "MOVABLE_AUTH_URL" in [v.name for v in moved.variables()]
    env = {"MOVABLE_AUTH_URL": "http://127.0.0.1:9/sim/", "MOVABLE_BASE_URL": "http://other"}
    moved_settings = load_settings(environ=env, env_file=None)
    assert oauth.endpoint(moved, "authorize", moved_settings) == \
        "http://127.0.0.1:9/sim/oauth/authorize?x=1"
    # the API's base URL override does not move it; <ID>_AUTHORIZE_URL still wins
    assert oauth.endpoint(moved, "authorize", load_settings(
        environ={"MOVABLE_BASE_URL": "http://other"}, env_file=None)) == \
        moved.oauth.authorize_url
    assert oauth.endpoint(moved, "authorize", load_settings(
        environ={**env, "MOVABLE_AUTHORIZE_URL": "https://eu.acme.test/a"}, env_file=None)) == \
        "https://eu.acme.test/a"

    class Movable(BaseConnector):
        provider = moved

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    env_all = {**fakes.settings_env("http://127.0.0.1:9", "k"), "MOVABLE_CLIENT_ID": "cid",
               "MOVABLE_REDIRECT_URI": fakes.REDIRECT_URI, **env}
    env_all.pop("NEXUS_ENCRYPTION_KEYS")
    with registered(Movable, "movable", registry=acme_registry):
        link = oauth.authorization_url(store, acme_registry, "movable", "t1", "i9",
                                       settings=load_settings(environ=env_all, env_file=None))
    assert link.startswith("http://127.0.0.1:9/sim/oauth/authorize?x=1&")
    q = _query(link)
    assert q["scope"] == "crm.read crm.write" and q["optional_scope"] == "crm.export crm.files"


# -- completing the flow -------------------------------------------------------------------


def test_complete_authorization_exchanges_the_code_with_pkce_and_stores_everything(
    store, acme_registry, settings, token_server, fakes
):
    inst = _connect(store, acme_registry, settings, token_server)
    assert (inst.tenant_id, inst.install_id, inst.provider) == ("t1", "i1", "acme")
    assert (inst.status, inst.account_id) == ("active", "62515")  # HubSpot-style hub_id
    call = token_server.calls[-1]
    assert call["path"] == "/oauth/v1/token"  # ACME_BASE_URL override reached the endpoint
    assert call["grant_type"] == "authorization_code"
    assert call["redirect_uri"] == fakes.REDIRECT_URI
    assert len(call["code_verifier"]) >= 43
    creds = store.get_credentials("t1", "i1")
    assert creds.access_token == token_server.issued_access[-1]
    assert creds.refresh_token == token_server.issued_refresh[-1]
    assert creds.scopes == ("crm.read", "crm.write")
    assert creds.extra["account_id"] == "62515"
    lifetime = (creds.expires_at - datetime.now(UTC)).total_seconds()
    assert 1790 < lifetime <= 1800


def test_reconnecting_reactivates_a_needs_reauth_installation(
    store, acme_registry, settings, token_server
):
    _connect(store, acme_registry, settings, token_server)
    store.set_status("t1", "i1", "needs_reauth")
    store.update_installation("t1", "i1", config={"keep": True})
    inst = _connect(store, acme_registry, settings, token_server)
    assert inst.status == "active" and inst.config == {"keep": True}


def test_a_reused_state_is_rejected_and_nothing_is_stored(
    store, acme_registry, settings, token_server
):
    q = _start(store, acme_registry, settings)
    token_server.add_code("c1", q["code_challenge"])
    oauth.complete_authorization(store, acme_registry, "acme", "c1", q["state"], settings=settings)
    before = store.get_credentials("t1", "i1")
    token_server.add_code("c2", q["code_challenge"])
    with pytest.raises(AuthError, match="unknown or already used"):
        oauth.complete_authorization(store, acme_registry, "acme", "c2", q["state"],
                                     settings=settings)
    assert token_server.count("authorization_code") == 1
    assert store.get_credentials("t1", "i1") == before


def test_an_expired_state_is_rejected_and_nothing_is_stored(
    store, acme_registry, fakes, token_server, keys
):
    env = fakes.settings_env(token_server.url, keys, NEXUS_OAUTH_STATE_TTL="0.001")
    settings = load_settings(environ=env, env_file=None)
    q = _start(store, acme_registry, settings)
    time.sleep(0.01)
    token_server.add_code("c", q["code_challenge"])
    with pytest.raises(AuthError, match="expired"):
        oauth.complete_authorization(store, acme_registry, "acme", "c", q["state"],
                                     settings=settings)
    assert token_server.calls == []
    assert store.list_installations("t1") == []


def test_a_foreign_state_is_rejected_and_nothing_is_stored(
    store, acme_registry, settings, token_server, fakes
):
    q = _start(store, acme_registry, settings, "t1", "i1")
    token_server.add_code("c", q["code_challenge"])
    with pytest.raises(AuthError, match="another provider or installation"):
        oauth.complete_authorization(store, acme_registry, "acme", "c", q["state"],
                                     settings=settings, tenant_id="t2")
    q2 = _start(store, acme_registry, settings, "t1", "i1")

    class Other(BaseConnector):
        provider = Provider(id="other", name="Other", version="1", oauth=fakes.ACME.oauth,
                            streams=("s",))

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    with registered(Other, "other", registry=acme_registry):
        with pytest.raises(AuthError, match="another provider"):
            oauth.complete_authorization(store, acme_registry, "other", "c", q2["state"],
                                         settings=settings)
    with pytest.raises(AuthError, match="unknown or already used"):
        oauth.complete_authorization(store, acme_registry, "acme", "c", "made-up",
                                     settings=settings)
    assert token_server.calls == []
    assert store.list_installations("t1") == [] and store.list_installations("t2") == []


def test_a_refused_code_is_an_auth_error_and_nothing_is_stored(
    store, acme_registry, settings, token_server
):
    q = _start(store, acme_registry, settings)
    with pytest.raises(AuthError, match="refused the authorization: invalid_grant: bad code"):
        oauth.complete_authorization(store, acme_registry, "acme", "wrong", q["state"],
                                     settings=settings)
    assert store.list_installations("t1") == []


def test_a_wrong_pkce_verifier_is_refused_by_the_endpoint(
    store, acme_registry, settings, token_server
):
    q = _start(store, acme_registry, settings)
    token_server.add_code("c", "challenge-of-another-verifier")
    with pytest.raises(AuthError, match="PKCE"):
        oauth.complete_authorization(store, acme_registry, "acme", "c", q["state"],
                                     settings=settings)


def test_the_authorize_hook_runs_first_and_the_standard_exchange_is_skipped(
    store, nexus_registry, settings, token_server, fakes
):
    seen: dict[str, Any] = {}

    class Custom(BaseConnector):
        provider = fakes.ACME

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def authorize(self, ctx, code, redirect_uri, code_verifier):
            seen.update(tenant=ctx.tenant_id, code=code, verifier=code_verifier)
            return Credentials(access_token="hook-token", extra={"account_id": "org-9"})

    with registered(Custom, "custom", registry=nexus_registry):
        q = _start(store, nexus_registry, settings)
        inst = oauth.complete_authorization(store, nexus_registry, "acme", "abc", q["state"],
                                            settings=settings)
    assert token_server.calls == []
    assert inst.account_id == "org-9"
    assert seen["tenant"] == "t1" and seen["code"] == "abc"
    digest = hashlib.sha256(seen["verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).decode().rstrip("=") == q["code_challenge"]
    assert store.get_credentials("t1", "i1").access_token == "hook-token"


# -- refresh -------------------------------------------------------------------------------


def test_refresh_stores_the_rotated_refresh_token(
    store, acme_registry, settings, token_server, redis_client
):
    _connect(store, acme_registry, settings, token_server)
    old = store.get_credentials("t1", "i1")
    new = oauth.refresh_credentials(store, redis_client, acme_registry, "t1", "i1", stale=old,
                                    settings=settings)
    assert new.access_token == token_server.issued_access[-1] != old.access_token
    assert new.refresh_token == token_server.issued_refresh[-1] != old.refresh_token
    assert store.get_credentials("t1", "i1") == new
    assert token_server.calls[-1]["refresh_token"] == old.refresh_token
    assert new.extra["account_id"] == "62515"
    # a caller holding the old token gets the stored new one without another refresh
    again = oauth.refresh_credentials(store, redis_client, acme_registry, "t1", "i1", stale=old,
                                      settings=settings)
    assert again == new and token_server.count("refresh_token") == 1
    assert not redis_client.keys("nexus:lock:*")  # the lock was released


def test_invalid_grant_marks_needs_reauth_logs_and_is_not_retried(
    store, acme_registry, settings, token_server, redis_client, captured_logs
):
    _connect(store, acme_registry, settings, token_server)
    token_server.valid_refresh.clear()  # the grant was revoked at the provider
    creds = store.get_credentials("t1", "i1")
    with pytest.raises(AuthError) as err:
        oauth.refresh_credentials(store, redis_client, acme_registry, "t1", "i1", stale=creds,
                                  settings=settings)
    assert err.value.needs_reauth
    assert "invalid_grant" in str(err.value)
    assert store.get_installation("t1", "i1").status == "needs_reauth"
    assert any(line.startswith("ERROR") and "needs_reauth" in line and "nexus auth url" in line
               for line in captured_logs)
    assert store.get_credentials("t1", "i1") == creds  # nothing overwritten
    calls = token_server.count("refresh_token")
    with pytest.raises(AuthError) as again:
        oauth.refresh_credentials(store, redis_client, acme_registry, "t1", "i1", stale=creds,
                                  settings=settings)
    assert again.value.needs_reauth
    assert token_server.count("refresh_token") == calls  # not retried against the provider


def test_a_provider_outage_is_retryable_and_changes_nothing(
    store, acme_registry, settings, token_server, redis_client
):
    _connect(store, acme_registry, settings, token_server)
    creds = store.get_credentials("t1", "i1")
    token_server.fail_with = (503, {"error": "temporarily_unavailable"})
    with pytest.raises(ProviderError) as err:
        oauth.refresh_credentials(store, redis_client, acme_registry, "t1", "i1", stale=creds,
                                  settings=settings)
    assert err.value.retryable and err.value.status == 503
    assert store.get_installation("t1", "i1").status == "active"
    assert store.get_credentials("t1", "i1") == creds


def test_the_refresh_hook_runs_first_and_its_needs_reauth_marks_the_installation(
    store, nexus_registry, settings, token_server, redis_client, fakes
):
    class Custom(BaseConnector):
        provider = fakes.ACME
        answer: Any = None

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def refresh(self, ctx):
            if Custom.answer is None:
                raise AuthError("BAD_REFRESH_TOKEN", needs_reauth=True)
            return Custom.answer

    store.add_installation("t1", "i1", "acme",
                           credentials=Credentials(access_token="a0", refresh_token="r0"))
    with registered(Custom, "custom", registry=nexus_registry):
        Custom.answer = Credentials(access_token="a1")  # no new refresh token: keep r0
        got = oauth.refresh_credentials(store, redis_client, nexus_registry, "t1", "i1",
                                        settings=settings)
        assert (got.access_token, got.refresh_token) == ("a1", "r0")
        Custom.answer = None
        with pytest.raises(AuthError):
            oauth.refresh_credentials(store, redis_client, nexus_registry, "t1", "i1",
                                      settings=settings)
    assert token_server.calls == []
    assert store.get_installation("t1", "i1").status == "needs_reauth"


def test_ensure_fresh_refreshes_only_within_the_margin(
    store, acme_registry, fakes, token_server, keys, redis_client
):
    settings = load_settings(
        environ=fakes.settings_env(token_server.url, keys, NEXUS_REFRESH_MARGIN="600"),
        env_file=None,
    )
    seed = token_server.seed_refresh_token()
    soon = datetime.now(UTC) + timedelta(seconds=300)
    later = datetime.now(UTC) + timedelta(hours=2)
    store.add_installation("t1", "i1", "acme", credentials=Credentials(
        access_token="a0", refresh_token=seed, expires_at=later))
    store.add_installation("t1", "bare", "acme")
    assert oauth.ensure_fresh(store, redis_client, acme_registry, "t1", "bare",
                              settings=settings) is None
    kept = oauth.ensure_fresh(store, redis_client, acme_registry, "t1", "i1", settings=settings)
    assert kept.access_token == "a0" and token_server.calls == []
    store.save_credentials("t1", "i1", Credentials(access_token="a0", refresh_token=seed,
                                                   expires_at=soon))
    fresh = oauth.ensure_fresh(store, redis_client, acme_registry, "t1", "i1", settings=settings)
    assert fresh.access_token == token_server.issued_access[-1]
    assert token_server.count("refresh_token") == 1
    # an explicit margin smaller than the remaining lifetime does not refresh
    assert oauth.ensure_fresh(store, redis_client, acme_registry, "t1", "i1", margin=60,
                              settings=settings) == fresh


def test_slack_style_basic_auth_and_200_ok_false_errors(
    store, nexus_registry, fakes, keys, redis_client
):
    slack = Provider(
        id="slackish", name="Slackish", version="1", base_url="https://slack.test/api",
        streams=("channels",),
        base_url_env="SLACKISH_BASE_URL", scopes=("channels:read", "chat:write"),
        oauth=OAuthConfig(authorize_url="https://slack.test/oauth/v2/authorize",
                          token_url="https://slack.test/api/oauth.v2.access",
                          scope_separator=",", client_auth="basic",
                          client_id_env="SL_ID", client_secret_env="SL_SECRET",
                          redirect_uri_env="SL_REDIRECT",
                          # what a Slack plugin declares: errors inside HTTP 200, its grant-is-
                          # dead codes, the team id as account, a "bot" token sent as Bearer
                          ok_field="ok",
                          reauth_errors=("invalid_refresh_token", "token_revoked",
                                         "invalid_grant"),
                          account_id_field="team.id",
                          extra_fields={"bot_user_id": "bot_user_id", "team_name": "team.name"},
                          token_type="Bearer"),
    )

    class Slackish(BaseConnector):
        provider = slack

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    server = fakes.TokenServer(style="slack").start()
    try:
        settings = load_settings(environ={
            "SLACKISH_BASE_URL": server.url + "/api", "SL_ID": fakes.CLIENT_ID,
            "SL_SECRET": fakes.CLIENT_SECRET, "SL_REDIRECT": "https://cb",
            "NEXUS_ENCRYPTION_KEYS": keys}, env_file=None)
        with registered(Slackish, "slackish", registry=nexus_registry):
            link = oauth.authorization_url(store, nexus_registry, "slackish", "t", "i",
                                           settings=settings)
            q = _query(link)
            assert link.startswith(server.url + "/oauth/v2/authorize?")  # same-host rewrite
            assert q["scope"] == "channels:read,chat:write" and "code_challenge" not in q
            server.add_code("c")
            inst = oauth.complete_authorization(store, nexus_registry, "slackish", "c",
                                                q["state"], settings=settings)
            assert server.calls[-1]["auth"].startswith("Basic ")
            assert "client_secret" not in server.calls[-1]
            assert server.calls[-1]["path"] == "/api/oauth.v2.access"
            assert inst.account_id == "T0TEAM"
            creds = store.get_credentials("t", "i")
            assert creds.token_type == "Bearer" and creds.extra["bot_user_id"] == "U0BOT"
            assert creds.extra["team_name"] == "Team"
            assert creds.scopes == ("channels:read", "chat:write")
            server.valid_refresh.clear()
            with pytest.raises(AuthError, match="invalid_refresh_token") as err:
                oauth.refresh_credentials(store, redis_client, nexus_registry, "t", "i",
                                          stale=creds, settings=settings)
            assert err.value.needs_reauth
            assert store.get_installation("t", "i").status == "needs_reauth"
    finally:
        server.stop()


def test_salesforce_style_tokens_get_the_configured_lifetime_and_org_id(fakes):
    sf = Provider(
        id="sf", name="SF", version="1",
        oauth=OAuthConfig(authorize_url="https://login.sf.test/services/oauth2/authorize",
                          token_url="https://login.sf.test/services/oauth2/token",
                          default_token_lifetime=7200,
                          account_id_field="id", account_id_pattern=r"/id/([^/]+)/",
                          extra_fields={"instance_url": "instance_url"}),
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    previous = Credentials(access_token="old", refresh_token="keep-me",
                           extra={"custom": 1})
    creds = oauth.parse_token_response(sf, {
        "access_token": "00D!AQ", "instance_url": "https://na1.sf.test",
        "id": "https://login.sf.test/id/00Dxx0000001gPFEAY/005xx000001SwiUAAS",
        "token_type": "Bearer", "issued_at": "1278448832702", "signature": "sig",
    }, previous=previous, now=now)
    assert creds.expires_at == now + timedelta(hours=2)
    assert creds.refresh_token == "keep-me"  # no rotation: keep the old refresh token
    assert creds.extra == {"custom": 1, "account_id": "00Dxx0000001gPFEAY",
                           "instance_url": "https://na1.sf.test"}
    with pytest.raises(ProviderError, match="no access_token"):
        oauth.parse_token_response(sf, {"token_type": "Bearer"})


HUBSPOT_LIKE = {"error_field": "status", "error_description_field": "message",
                "reauth_errors": ("BAD_REFRESH_TOKEN", "invalid_grant")}
SLACK_LIKE = {"ok_field": "ok", "reauth_errors": ("invalid_refresh_token", "token_revoked")}


@pytest.mark.parametrize(
    ("declared", "status", "body", "needs_reauth", "message"),
    [
        ({}, 400, {"error": "invalid_grant", "error_description": "expired access/refresh token"},
         True, "invalid_grant: expired access/refresh token"),
        (HUBSPOT_LIKE, 400,
         {"status": "BAD_REFRESH_TOKEN", "message": "missing or invalid refresh token"}, True,
         "(BAD_REFRESH_TOKEN: "),
        (SLACK_LIKE, 200, {"ok": False, "error": "token_revoked"}, True, "token_revoked"),
        (SLACK_LIKE, 200, {"ok": False, "error": "invalid_client_id"}, False, "invalid_client_id"),
        # an "ok": false with an access token is still an error when the provider declares ok
        (SLACK_LIKE, 200, {"ok": False, "access_token": "x"}, False, "ok_false"),
        # plain RFC 6749 by default: a code the provider did not declare is not "reconnect"
        ({}, 200, {"ok": False, "error": "token_revoked"}, False, "token_revoked"),
        ({}, 400, {"status": "BAD_REFRESH_TOKEN"}, False, "HTTP 400"),
        ({}, 401, {"error": "invalid_client"}, False, "invalid_client"),  # our app, not the tenant
        ({}, 400, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}], False,
         "unexpected_response"),
        ({"error_field": "0.errorCode", "error_description_field": "0.message",
          "reauth_errors": "INVALID_SESSION_ID"}, 400,
         [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}], True,
         "INVALID_SESSION_ID: Session expired"),
        ({}, 200, {"token_type": "bearer"}, False, "no_access_token"),
        # several places to look, in order: HubSpot answers either shape
        ({"error_field": ("status", "error"), "error_description_field": ("message",
                                                                          "error_description"),
          "reauth_errors": ("BAD_REFRESH_TOKEN", "invalid_grant")}, 400,
         {"error": "invalid_grant", "error_description": "refresh token is invalid"}, True,
         "invalid_grant: refresh token is invalid"),
    ],
)
def test_refresh_error_answers_are_classified_as_each_provider_declares(
    store, nexus_registry, fakes, settings, token_server, redis_client, declared, status, body,
    needs_reauth, message
):
    class Declared(BaseConnector):
        provider = attrs.evolve(fakes.ACME, oauth=attrs.evolve(fakes.ACME.oauth, **declared))

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    store.add_installation("t", "i", "acme",
                           credentials=Credentials(access_token="a", refresh_token="r"))
    token_server.fail_with = (status, body)
    with registered(Declared, "acme", registry=nexus_registry):
        with pytest.raises(AuthError) as err:
            oauth.refresh_credentials(store, redis_client, nexus_registry, "t", "i",
                                      settings=settings)
    assert err.value.needs_reauth is needs_reauth
    assert message in err.value.message
    expected = "needs_reauth" if needs_reauth else "active"
    assert store.get_installation("t", "i").status == expected


def test_a_provider_without_oauth_gets_a_clear_error(store, nexus_registry, settings):
    class ApiKeyOnly(BaseConnector):
        provider = Provider(id="keyed", name="Keyed", version="1", auth_type="api_key",
                            streams=("s",))

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    with registered(ApiKeyOnly, "keyed", registry=nexus_registry):
        with pytest.raises(ConfigError, match="does not use the OAuth2 authorization-code flow"):
            oauth.authorization_url(store, nexus_registry, "keyed", "t", "i", settings=settings)
