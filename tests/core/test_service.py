"""IntegrationService: the seed's connector API over the plugin registry."""

import pytest

from nexus_core import IntegrationService, Provider, SyncPage, WebhookConfig, hookimpl
from nexus_core.config import load_settings
from nexus_core.errors import PluginError
from nexus_core.models import OAuthConfig, RateLimits
from nexus_core.plugins import PluginRegistry


class Hooked:
    def __init__(self, provider):
        self.provider = provider

    @hookimpl
    def nexus_provider(self):
        return self.provider

    @hookimpl
    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)


@pytest.fixture
def service():
    reg = PluginRegistry()
    reg.register(Hooked(Provider(id="crm", name="CRM", version="1", streams=("contacts", "deals"),
                                 rate_limits=RateLimits(10, 10, buckets={"search": RateLimits(4, 1)}),
                                 webhook=WebhookConfig(scheme="hubspot-v3"),
                                 oauth=OAuthConfig(authorize_url="https://a", token_url="https://t",
                                                   client_id_env="CRM_CLIENT_ID"))), "crm")
    reg.register(Hooked(Provider(id="chat", name="Chat", version="1", auth_type="api_key",
                                 streams=("messages",))), "chat")
    return IntegrationService(settings=load_settings({}, env_file=None), registry=reg).initialize()


def test_connectors_and_webhook_support(service):
    assert [p.id for p in service.get_available_connectors()] == ["chat", "crm"]
    assert service.get_connector("crm").name == "CRM"
    assert [p.id for p in service.get_webhook_supported_connectors()] == ["crm"]
    with pytest.raises(PluginError, match="known providers: chat, crm"):
        service.get_connector("nope")


def test_connector_stats_count_what_is_installed(service):
    service.registry.record_failure("broken", "import failed")
    assert service.get_connector_stats() == {
        "connectors": 2, "by_auth_type": {"oauth2": 1, "api_key": 1}, "webhook_supported": 1,
        "plugins_ok": 2, "plugins_skipped": 1,
    }


def test_validate_connector_config(service):
    ok = service.validate_connector_config("crm", {"streams": ["contacts"],
                                                   "rate_limits": {"requests_per_second": 2}})
    assert ok.valid and ok.errors == []
    assert ok.warnings == [
        "CRM_CLIENT_ID is not set (OAuth client id of the app registered with CRM): crm will not "
        "work without it",
        "CRM_CLIENT_SECRET is not set (OAuth client secret of that app): crm will not work "
        "without it",
    ]
    bad = service.validate_connector_config(
        "crm", {"streams": ["tickets"], "rate_limits": {"burst_size": 0},
                "timeouts": {"read": -1}})
    assert not bad.valid
    assert bad.errors == [
        "rate_limits.burst_size must be an integer >= 1",
        "timeouts.read must be a number of seconds > 0",
        "unknown stream(s) tickets; crm has: contacts, deals",
    ]
    assert service.validate_connector_config("nope", {}).errors[0].startswith("unknown provider")
    assert not service.validate_connector_config("crm", []).valid


def test_validate_connector_config_checks_a_rate_limit_tier_against_the_declared_buckets(service):
    tier = {"requests_per_second": 20, "burst_size": 20,
            "buckets": {"search": {"requests_per_second": 8}}}
    assert service.validate_connector_config("crm", {"rate_limits": tier}).errors == []
    bad = service.validate_connector_config("crm", {"rate_limits": {
        "requests_per_second": float("nan"), "burst": 5,
        "buckets": {"serch": {}, "search": {"burst_size": 2.5, "rps": 1}}}})
    assert bad.errors == [
        "rate_limits.requests_per_second must be a number > 0",
        "rate_limits: unknown key(s) burst; known: requests_per_second, burst_size, buckets",
        "rate_limits.buckets: unknown bucket 'serch'; this provider has: search",
        "rate_limits.buckets.search.burst_size must be an integer >= 1",
        "rate_limits.buckets.search: unknown key(s) rps",
    ]
    assert service.validate_connector_config("chat", {"rate_limits": {"buckets": {
        "search": {}}}}).errors == [
        "rate_limits.buckets: unknown bucket 'search'; this provider has: none"]


def test_validate_connector_config_accepts_streams_the_provider_pattern_admits():
    from nexus_core.models import StreamPattern

    reg = PluginRegistry()
    reg.register(Hooked(Provider(id="objs", name="Objects", version="1", auth_type="none",
                                 streams=("contacts",),
                                 stream_pattern=StreamPattern(r"[a-z_]+"))), "objs")
    service = IntegrationService(settings=load_settings({}, env_file=None), registry=reg)
    assert service.validate_connector_config("objs", {"streams": ["contacts", "tickets"]}).valid
    bad = service.validate_connector_config("objs", {"streams": ["Tickets!"]})
    assert bad.errors == ["unknown stream(s) Tickets!; objs has: contacts (or any name "
                          "matching [a-z_]+)"]
