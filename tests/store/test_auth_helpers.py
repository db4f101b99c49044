"""``nexus_core.auth``: the standard exchanges called from a plugin's own hooks (with a usable
``ctx.http``), token responses read as each provider declares them, and token responses from a
hostile endpoint that never raise anything but ProviderError."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_core import BaseConnector, OAuthConfig, Provider, SyncPage, auth, oauth
from nexus_core.config import load_settings
from nexus_core.errors import AuthError, ProviderError
from nexus_core.models import Credentials
from nexus_core.plugins import registered
from nexus_core.testing.simulator import SimulatorServer


def _query(link: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


# -- the exchanges from a custom hook --------------------------------------------------------


def test_a_custom_authorize_hook_gets_ctx_http_and_can_run_the_standard_exchange(
    store, nexus_registry, settings, token_server, fakes
):
    """The hook sees a session that sends no credentials, and auth.exchange_code uses the
    settings of the callback in progress (the process settings have no ACME_CLIENT_ID)."""
    seen: dict[str, Any] = {}

    class Custom(BaseConnector):
        provider = fakes.ACME

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def authorize(self, ctx, code, redirect_uri, code_verifier):
            resp = ctx.http.post(token_server.url + "/probe", data={"x": "1"})
            seen["probe_status"] = resp.status_code
            seen["log"] = ctx.log is not None
            creds = auth.exchange_code(ctx, code, redirect_uri, code_verifier)
            return attrs.evolve(creds, extra={**creds.extra, "checked": True})

    with registered(Custom, "custom", registry=nexus_registry):
        q = _query(oauth.authorization_url(store, nexus_registry, "acme", "t1", "i1",
                                           settings=settings))
        token_server.add_code("good", q["code_challenge"])
        inst = oauth.complete_authorization(store, nexus_registry, "acme", "good", q["state"],
                                            settings=settings)
    probe, exchange = token_server.calls
    assert probe["path"] == "/probe" and probe["auth"] is None  # no credentials sent
    assert seen == {"probe_status": 401, "log": True}  # an answer, not "token expired"
    assert exchange["grant_type"] == "authorization_code" and exchange["code"] == "good"
    assert len(exchange["code_verifier"]) >= 43
    assert inst.account_id == "62515"
    creds = store.get_credentials("t1", "i1")
    assert creds.extra["checked"] is True
    assert creds.access_token == token_server.issued_access[-1]


def test_a_custom_authorize_hook_with_a_bad_code_gets_the_refusal(
    store, nexus_registry, settings, token_server, fakes
):
    class Custom(BaseConnector):
        provider = fakes.ACME

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def authorize(self, ctx, code, redirect_uri, code_verifier):
            return auth.exchange_code(ctx, code, redirect_uri, code_verifier)

    with registered(Custom, "custom", registry=nexus_registry):
        q = _query(oauth.authorization_url(store, nexus_registry, "acme", "t1", "i1",
                                           settings=settings))
        with pytest.raises(AuthError, match="refused the authorization: invalid_grant: bad code"):
            oauth.complete_authorization(store, nexus_registry, "acme", "nope", q["state"],
                                         settings=settings)
    assert store.list_installations("t1") == []


def test_refresh_grant_from_a_custom_refresh_hook_rotates_and_marks_revoked_grants(
    store, nexus_registry, settings, token_server, redis_client, fakes
):
    calls: list[str] = []

    class Custom(BaseConnector):
        provider = fakes.ACME

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def refresh(self, ctx):
            calls.append(ctx.credentials.refresh_token)
            assert ctx.http is not None
            return auth.refresh_grant(ctx)

    from prometheus_client import REGISTRY

    from nexus_core import metrics

    def count(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0

    metrics.reset_tenant_labels(False)
    op = {"provider": "acme", "operation": "refresh", "tenant_id": ""}
    before = (count("nexus_operation_duration_seconds_count", outcome="succeeded", **op),
              count("nexus_operation_duration_seconds_count", outcome="needs_reauth", **op),
              count("nexus_needs_reauth_total", provider="acme", source="refresh"))
    seed = token_server.seed_refresh_token()
    store.add_installation("t", "i", "acme",
                           credentials=Credentials(access_token="a0", refresh_token=seed))
    with registered(Custom, "custom", registry=nexus_registry):
        fresh = oauth.refresh_credentials(store, redis_client, nexus_registry, "t", "i",
                                          settings=settings)
        assert calls == [seed]
        assert fresh.refresh_token == token_server.issued_refresh[-1] != seed
        assert store.get_credentials("t", "i") == fresh
        token_server.valid_refresh.clear()
        with pytest.raises(AuthError) as err:
            oauth.refresh_credentials(store, redis_client, nexus_registry, "t", "i",
                                      settings=settings)
    assert err.value.needs_reauth
    assert store.get_installation("t", "i").status == "needs_reauth"
    after = (count("nexus_operation_duration_seconds_count", outcome="succeeded", **op),
             count("nexus_operation_duration_seconds_count", outcome="needs_reauth", **op),
             count("nexus_needs_reauth_total", provider="acme", source="refresh"))
    metrics.reset_tenant_labels(None)
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


# -- a provider that signs its token responses (Salesforce-style) ----------------------------

SECRET = "sf-client-secret"  # noqa: S105


def _signature(secret: str, ident: str, issued_at: str) -> str:
    digest = hmac.new(secret.encode(), (ident + issued_at).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class SignedTokenEndpoint:
    """A token endpoint answering like Salesforce: no expires_in, ``id`` URL with the org id,
    ``instance_url``, ``signature`` = base64 HMAC-SHA256(client secret, id + issued_at);
    ``/userinfo`` answers 401 to anyone."""

    def __init__(self) -> None:
        self.tamper = False
        self.refreshes = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/userinfo":
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'[{"errorCode":"INVALID_SESSION_ID","message":"Session expired"}]']
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = {k: v[0] for k, v in parse_qs(environ["wsgi.input"].read(length).decode()).items()}
        self.refreshes += form.get("grant_type") == "refresh_token"
        ident = "https://login.sf.test/id/00Dxx0000001gPFEAY/005xx000001SwiUAAS"
        issued = "1278448832702"
        body = {"access_token": f"00D!AQ{self.refreshes}", "instance_url": "https://na1.sf.test",
                "id": ident, "token_type": "Bearer", "issued_at": issued,
                "signature": _signature(SECRET, ident, issued if not self.tamper else "0")}
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [data]


SF = Provider(
    id="sfish", name="SF-ish", version="1", base_url="https://login.sf.test",
    base_url_env="SFISH_BASE_URL", streams=("accounts",),
    oauth=OAuthConfig(authorize_url="https://login.sf.test/services/oauth2/authorize",
                      token_url="https://login.sf.test/services/oauth2/token",
                      default_token_lifetime=7200, account_id_field="id",
                      account_id_pattern=r"/id/([^/]+)/",
                      extra_fields={"instance_url": "instance_url", "issued_at": "issued_at"}),
)


class SignedRefresh(BaseConnector):
    provider = SF

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)

    def refresh(self, ctx):
        # any call through ctx.http: a 401 here is an answer, not an expired installation
        assert ctx.http.get("/userinfo").status_code == 401
        data = auth.token_request(SF, {"grant_type": "refresh_token",
                                       "refresh_token": ctx.credentials.refresh_token})
        _, secret = auth.client_credentials(SF)
        expected = _signature(secret, data["id"], data["issued_at"])
        if not hmac.compare_digest(expected, str(data.get("signature"))):
            raise AuthError("token response signature mismatch")
        return auth.parse_token_response(SF, data, previous=ctx.credentials)


@pytest.fixture
def signed_endpoint(nexus_registry: Any, keys: str) -> Any:
    app = SignedTokenEndpoint()
    with SimulatorServer(app) as server, registered(SignedRefresh, "sfish",
                                                    registry=nexus_registry):
        app.settings = load_settings(environ={
            "SFISH_BASE_URL": server.url, "SFISH_CLIENT_ID": "cid", "SFISH_CLIENT_SECRET": SECRET,
            "NEXUS_ENCRYPTION_KEYS": keys}, env_file=None)
        yield app


def test_a_refresh_hook_verifies_a_signed_token_response_then_parses_it(
    store, nexus_registry, redis_client, signed_endpoint
):
    store.add_installation("t", "i", "sfish", account_id="00Dxx0000001gPFEAY",
                           credentials=Credentials(access_token="old", refresh_token="keep"))
    fresh = oauth.refresh_credentials(store, redis_client, nexus_registry, "t", "i",
                                      settings=signed_endpoint.settings)
    assert fresh.access_token == "00D!AQ1" and fresh.refresh_token == "keep"
    assert fresh.extra == {"account_id": "00Dxx0000001gPFEAY",
                           "instance_url": "https://na1.sf.test", "issued_at": "1278448832702"}
    lifetime = (fresh.expires_at - datetime.now(UTC)).total_seconds()
    assert 7190 < lifetime <= 7200
    signed_endpoint.tamper = True
    with pytest.raises(AuthError, match="signature mismatch") as err:
        oauth.refresh_credentials(store, redis_client, nexus_registry, "t", "i",
                                  settings=signed_endpoint.settings)
    assert not err.value.needs_reauth  # the 401 on ctx.http did not mark the installation
    assert store.get_installation("t", "i").status == "active"
    assert store.get_credentials("t", "i") == fresh


# -- reading token responses ----------------------------------------------------------------


def test_lookup_follows_dotted_paths_into_objects_and_lists():
    data = {"team": {"id": "T1", "name": "Team"}, "errors": [{"code": "E1"}], "zero": 0}
    assert auth.lookup(data, "team.id") == "T1"
    assert auth.lookup(data, "errors.0.code") == "E1"
    assert auth.lookup(data, "zero") == 0
    for missing in ("team.nope", "errors.1.code", "errors.x", "team.id.more", "nope"):
        assert auth.lookup(data, missing) is None
    assert auth.lookup([{"a": 1}], "0.a") == 1 and auth.lookup("text", "a") is None


def _provider(**oauth_fields: Any) -> Provider:
    return Provider(id="p", name="P", version="1", oauth=OAuthConfig(
        authorize_url="https://p/a", token_url="https://p/t", **oauth_fields))


def test_parse_token_response_reads_what_the_provider_declares():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    slackish = _provider(account_id_field="team.id", token_type="Bearer",
                         extra_fields={"team_name": "team.name", "bot": "bot_user_id"})
    creds = auth.parse_token_response(slackish, {
        "ok": True, "access_token": "xoxb-1", "token_type": "bot", "expires_in": 43200,
        "scope": "chat:write,commands", "team": {"id": "T9", "name": "Softball"},
        "bot_user_id": "U0K"}, now=now)
    assert creds.token_type == "Bearer" and creds.expires_at == now + timedelta(hours=12)
    assert creds.scopes == ("chat:write", "commands")
    assert creds.extra == {"account_id": "T9", "team_name": "Softball", "bot": "U0K"}
    # defaults: RFC 6749 only — no account id, no extras, the response's scheme
    plain = auth.parse_token_response(_provider(), {
        "access_token": "a", "token_type": "bearer", "hub_id": 62515, "expires_in": "1800"},
        now=now)
    assert plain.extra == {} and plain.token_type == "Bearer"
    assert plain.expires_at == now + timedelta(seconds=1800)
    mac = auth.parse_token_response(_provider(), {"access_token": "a", "token_type": "MAC"})
    assert mac.token_type == "MAC" and mac.expires_at is None
    nested = _provider(access_token_field="authed_user.access_token")
    assert auth.parse_token_response(nested, {"authed_user": {"access_token": "xoxp"}}
                                     ).access_token == "xoxp"
    unmatched = _provider(account_id_field="id", account_id_pattern=r"/id/([^/]+)/")
    assert "account_id" not in auth.parse_token_response(
        unmatched, {"access_token": "a", "id": "no-slashes"}).extra


def test_oauth_config_refuses_a_pattern_without_exactly_one_group():
    with pytest.raises(ValueError, match="exactly one group"):
        _provider(account_id_pattern=r"/id/[^/]+/")
    with pytest.raises(ValueError, match="not a regular expression"):
        _provider(account_id_pattern=r"(")
    assert _provider(reauth_errors="invalid_grant").oauth.reauth_errors == ("invalid_grant",)


@pytest.mark.parametrize("lifetime", [-1, "soon", "1e999", float("nan"), float("inf"), True,
                                      10**400, [3600], {"s": 1}])
def test_an_unreadable_expires_in_is_a_provider_error(lifetime):
    with pytest.raises(ProviderError, match="unreadable expires_in"):
        auth.parse_token_response(_provider(), {"access_token": "a", "expires_in": lifetime})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)
token_keys = st.sampled_from(["access_token", "refresh_token", "expires_in", "scope", "scopes",
                              "token_type", "team", "id", "ok", "error", "authed_user"])
token_bodies = st.one_of(
    json_values,
    st.dictionaries(token_keys, json_values, max_size=6),
    st.dictionaries(token_keys, json_values, max_size=6).map(
        lambda d: {**d, "access_token": "at"}),
)
CONFIGS = [
    _provider(),
    _provider(ok_field="ok", account_id_field="team.id", token_type="Bearer",
              extra_fields={"team_name": "team.name", "user": "authed_user.id"}),
    _provider(account_id_field="id", account_id_pattern=r"/id/([^/]+)/",
              access_token_field="authed_user.access_token", default_token_lifetime=7200),
]


@settings(max_examples=300, deadline=None)
@given(body=token_bodies, which=st.integers(0, len(CONFIGS) - 1),
       previous=st.none() | st.just(Credentials(access_token="p", refresh_token="r",
                                                scopes=("s",), extra={"k": 1})))
def test_any_token_response_gives_credentials_or_a_provider_error(body, which, previous):
    provider = CONFIGS[which]
    try:
        creds = auth.parse_token_response(provider, body, previous=previous)
    except ProviderError as exc:
        assert provider.name in exc.message
        return
    assert isinstance(creds.access_token, str) and creds.access_token
    assert all(isinstance(s, str) for s in creds.scopes)
    assert creds.refresh_token is None or isinstance(creds.refresh_token, str)
    json.dumps(creds.extra)  # storable


@settings(max_examples=300, deadline=None)
@given(body=token_bodies, status=st.sampled_from([200, 201, 400, 401, 403]),
       which=st.integers(0, len(CONFIGS) - 1))
def test_any_token_endpoint_answer_is_classified_without_raising(body, status, which):
    code, description = auth.token_error(CONFIGS[which].oauth, status, body)
    if status >= 400:
        assert code  # a 4xx is never a success
    if code is None:
        assert description is None and isinstance(body, dict)
    else:
        assert isinstance(code, str) and (description is None or isinstance(description, str))
