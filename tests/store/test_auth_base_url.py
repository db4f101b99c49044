"""An installation's own authorization server (``OAuthConfig.auth_base_url_config``): the
consent page, the code exchange and every refresh of that installation go to the host its
config names — a sandbox login host or a company domain — and only to hosts the provider
allows, against real local token endpoints."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs
import pytest

from nexus_core import BaseConnector, SyncPage, auth, oauth
from nexus_core.config import load_settings
from nexus_core.errors import ConfigError
from nexus_core.plugins import registered
from nexus_core.service import IntegrationService


@pytest.fixture
def own_server(fakes):
    """A second token endpoint: the installation's own login host."""
    server = fakes.TokenServer().start()
    yield server
    server.stop()


@pytest.fixture
def tenanted(fakes):
    return attrs.evolve(fakes.ACME, id="tenanted", oauth=attrs.evolve(
        fakes.ACME.oauth, auth_base_url_config="login_url",
        auth_base_urls=("https://login.acme.test", "https://*.my.acme.test")))


@pytest.fixture
def world(tenanted, store, acme_registry, fakes, token_server, own_server, keys):
    class Tenanted(BaseConnector):
        provider = tenanted

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    # the simulator's address is allowed through the variable, as an operator would
    env = fakes.settings_env(token_server.url, keys,
                             TENANTED_AUTH_BASE_URLS=f" {own_server.url} ,http://localhost:*")
    settings = load_settings(environ=env, env_file=None)
    with registered(Tenanted, "tenanted", registry=acme_registry):
        yield store, acme_registry, settings


def _query(link):
    return {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}


def test_the_consent_page_exchange_and_refresh_go_to_the_installations_own_host(
    world, token_server, own_server, redis_client
):
    store, registry, settings = world
    config = {"login_url": own_server.url + "/"}
    link = oauth.authorization_url(store, registry, "tenanted", "t1", "sandbox",
                                   settings=settings, config=config)
    assert link.startswith(own_server.url + "/oauth/authorize?")
    q = _query(link)
    own_server.add_code("c1", q["code_challenge"])
    inst = oauth.complete_authorization(store, registry, "tenanted", "c1", q["state"],
                                        settings=settings)
    assert inst.config == config
    assert [c["grant_type"] for c in own_server.calls] == ["authorization_code"]
    stale = store.get_credentials("t1", "sandbox")
    fresh = oauth.refresh_credentials(store, redis_client, registry, "t1", "sandbox",
                                      stale=stale, settings=settings)
    assert fresh.access_token == own_server.issued_access[-1]
    assert [c["grant_type"] for c in own_server.calls] == ["authorization_code",
                                                           "refresh_token"]
    assert token_server.calls == []  # the default login host saw nothing of it

    # A reconnect link without a config keeps the stored one, and its login host.
    again = oauth.authorization_url(store, registry, "tenanted", "t1", "sandbox",
                                    settings=settings)
    assert again.startswith(own_server.url + "/oauth/authorize?")
    # An installation that names no host uses the provider's (here moved by ACME_BASE_URL).
    other = oauth.authorization_url(store, registry, "tenanted", "t1", "prod",
                                    settings=settings)
    assert other.startswith("https://app.acme.test/oauth/authorize?")
    assert auth.token_url(registry.provider("tenanted"), settings, {}) == \
        token_server.url + "/oauth/v1/token"


@pytest.mark.parametrize("value", [
    "https://evil.example",
    "https://login.acme.test.evil.example",
    "https://x.my.acme.test/services/oauth2",
    "https://user@x.my.acme.test",
    "https://x.my.acme.test?a=b",
    "https://x.my.acme.test#frag",
    "http://x.my.acme.test",  # https only, unless allowed
    "https://x.my.acme.test:8443",
    "ftp://login.acme.test",
    "login.acme.test",
    "",
    42,
    ["https://login.acme.test"],
])
def test_a_login_host_the_provider_does_not_allow_is_refused_before_anything_is_sent(
    world, token_server, own_server, value
):
    store, registry, settings = world
    service = IntegrationService(settings, registry)
    check = service.validate_connector_config("tenanted", {"login_url": value})
    if value == "":
        assert check.valid  # empty: the provider's default host
        return
    assert not check.valid and "login_url" in check.errors[0], check
    with pytest.raises(ConfigError, match="login_url"):
        oauth.authorization_url(store, registry, "tenanted", "t1", "i1", settings=settings,
                                config={"login_url": value})
    with pytest.raises(ConfigError, match="login_url"):
        auth.token_request(registry.provider("tenanted"), {"grant_type": "refresh_token"},
                           settings, config={"login_url": value})
    assert token_server.calls == [] and own_server.calls == []


@pytest.mark.parametrize("value", ["https://login.acme.test", "https://ACME-42.my.acme.test/",
                                   "http://localhost:8090"])
def test_allowed_login_hosts_replace_the_scheme_and_host_of_both_endpoints(world, value):
    _, registry, settings = world
    provider = registry.provider("tenanted")
    config = {"login_url": value}
    assert auth.auth_base_url_problems(provider, value, settings) == []
    base = value.rstrip("/")
    assert auth.endpoint(provider, "authorize", settings, config) == base + "/oauth/authorize"
    assert auth.token_url(provider, settings, config) == base + "/oauth/v1/token"


def test_the_option_needs_allowed_hosts_and_its_variable_is_listed(tenanted, fakes):
    with pytest.raises(ValueError, match="needs auth_base_urls"):
        attrs.evolve(fakes.ACME.oauth, auth_base_url_config="login_url")
    names = [v.name for v in tenanted.variables()]
    assert "TENANTED_AUTH_BASE_URLS" in names
    assert "ACME_AUTH_BASE_URLS" not in [v.name for v in fakes.ACME.variables()]
