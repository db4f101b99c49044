"""health_check_immediate and the health classification, against a local provider simulator."""

import json

import pytest

from nexus_core import (
    BaseConnector,
    Credentials,
    Health,
    IntegrationService,
    Provider,
    RetryConfig,
    SyncPage,
)
from nexus_core.config import load_settings
from nexus_core.errors import AuthError
from nexus_core.health import check_health, format_rate_limit
from nexus_core.testing.simulator import SimulatorServer


def app(status, headers=()):
    def wsgi(environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        code = status if auth == "Bearer good-token" else 401
        start_response(f"{code} X", [("Content-Type", "application/json"), *headers])
        return [json.dumps({"ok": code == 200}).encode()]

    return wsgi


class Pinger(BaseConnector):
    provider = Provider(id="pinger", name="Pinger", version="1", auth_type="api_key",
                        retry=RetryConfig(max_retries=0), streams=("pings",),
                        base_url_env="PINGER_BASE_URL")

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)

    def health_check(self, ctx):
        response = ctx.http.get("/ping")
        if response.status_code == 401:
            raise AuthError("the API key was revoked", needs_reauth=True)
        return Health(healthy=response.ok, auth_valid=True, api_accessible=True)

    def parse_rate_limit(self, provider, headers):
        if "X-Remaining" in headers:
            return {"remaining": int(headers["X-Remaining"]), "max": 100}
        return None


@pytest.fixture
def service(nexus_registry, sqlite_url, redis_url, tmp_path, monkeypatch):
    def make(server, token="good-token"):
        monkeypatch.setenv("PINGER_BASE_URL", server.url)
        settings = load_settings({
            "NEXUS_DATABASE_URL": sqlite_url, "REDIS_URL": redis_url,
            "NEXUS_KEY_FILE": str(tmp_path / "key"), "PINGER_BASE_URL": server.url,
        }, env_file=None)
        nexus_registry.register(Pinger, "pinger")
        svc = IntegrationService(settings=settings, registry=nexus_registry).initialize()
        svc.install("pinger", "t1", "i1", credentials=Credentials(api_key=token, token_type="Bearer", access_token=token))
        return svc
    return make


def test_healthy_installation_reports_the_providers_rate_limit_headers(service):
    with SimulatorServer(app(200, [("X-Remaining", "42")])) as server:
        svc = service(server)
        health = svc.health_check_immediate("pinger", "t1", "i1")
    assert health.healthy and health.auth_valid and health.api_accessible
    assert health.rate_limit_status == "max=100 remaining=42"


def test_revoked_credentials_are_an_unhealthy_answer_not_an_exception(service):
    with SimulatorServer(app(200)) as server:
        svc = service(server, token="revoked")
        health = svc.health_check_immediate("pinger", "t1", "i1")
    assert not health.healthy and not health.auth_valid
    assert health.details["needs_reauth"] is True


def test_unreachable_provider_is_unhealthy(service):
    with SimulatorServer(app(200)) as server:
        svc = service(server)
    # the server is stopped now: connection refused
    health = svc.health_check_immediate("pinger", "t1", "i1")
    assert not health.healthy and not health.api_accessible
    assert "Pinger could not be reached" in health.details["error"]


def test_provider_without_health_hook_is_never_reported_healthy(nexus_registry):
    class Silent(BaseConnector):
        provider = Provider(id="silent", name="Silent", version="1", auth_type="none",
                            streams=("s",))

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    from nexus_core import ConnectorContext

    nexus_registry.register(Silent, "silent")
    health = check_health(nexus_registry, ConnectorContext(tenant_id="t", install_id="i", provider="silent"))
    assert not health.healthy and "no health_check hook" in health.details["error"]


def test_format_rate_limit():
    assert format_rate_limit({"remaining": 1, "daily": 5}) == "daily=5 remaining=1"
    assert format_rate_limit(None) is None and format_rate_limit({}) is None
