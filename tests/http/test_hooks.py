"""The per-provider hooks the client calls: ``is_token_expired`` and ``parse_rate_limit``."""

from __future__ import annotations

import pytest

from nexus_core import hookimpl
from nexus_core.models import Credentials


class HubSpotLike:
    """Expired = 401 with category EXPIRED_AUTHENTICATION; X-HubSpot-RateLimit-* headers."""

    def __init__(self, provider):
        self.provider = provider

    @hookimpl
    def nexus_provider(self):
        return self.provider

    @hookimpl
    def backfill(self, ctx, stream, cursor):
        return None

    @hookimpl
    def is_token_expired(self, provider, status, headers, body):
        return status == 401 and b"EXPIRED_AUTHENTICATION" in body

    @hookimpl
    def parse_rate_limit(self, provider, headers):
        if "x-hubspot-ratelimit-remaining" not in headers:  # headers are case-insensitive
            return None
        return {"remaining": int(headers["X-HubSpot-RateLimit-Remaining"]),
                "max": int(headers["X-HubSpot-RateLimit-Max"])}


class SlackLike(HubSpotLike):
    @hookimpl
    def is_token_expired(self, provider, status, headers, body):
        return b'"error": "invalid_auth"' in body or b'"error":"invalid_auth"' in body


@pytest.fixture
def hubspot(nexus_registry, kit):
    provider = kit.make_provider(id="hubspotlike", name="HubSpot-like")
    nexus_registry.register(HubSpotLike(provider), "hubspotlike")
    return provider


def _token_app(kit, expired_answer):
    def app(req):
        if req.headers.get("Authorization") == "Bearer fresh":
            return kit.json_answer(200, {"ok": True})
        return expired_answer

    return app


def test_hook_is_token_expired_triggers_one_refresh(
    hubspot, nexus_registry, provider_server, open_session, kit
):
    provider_server.answer(_token_app(kit, kit.json_answer(401, {
        "status": "error", "category": "EXPIRED_AUTHENTICATION",
        "message": "The OAuth token used to make this call expired 5 minute(s) ago."})))
    refreshed = []
    session = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                           credentials=lambda: Credentials(access_token="stale"),
                           refresh=lambda old: refreshed.append(old) or
                           Credentials(access_token="fresh"))
    assert session.get("/crm/v3/objects/contacts").status_code == 200
    assert len(refreshed) == 1 and len(provider_server.seen) == 2


def test_hook_is_token_expired_false_means_a_401_is_returned_untouched(
    hubspot, nexus_registry, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(401, {"category": "INVALID_AUTHENTICATION"}))
    refreshed = []
    session = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                           credentials=lambda: Credentials(access_token="bad"),
                           refresh=lambda old: refreshed.append(old))
    assert session.get("/x").status_code == 401
    assert refreshed == [] and len(provider_server.seen) == 1


def test_hook_is_token_expired_sees_slack_style_200_errors(
    nexus_registry, provider_server, open_session, kit
):
    provider = kit.make_provider(id="slacklike", name="Slack-like")
    nexus_registry.register(SlackLike(provider), "slacklike")
    provider_server.answer(_token_app(kit, kit.json_answer(200, {"ok": False,
                                                                 "error": "invalid_auth"})))
    session = open_session(provider_server.url, provider=provider, registry=nexus_registry,
                           credentials=lambda: Credentials(access_token="stale"),
                           refresh=lambda old: Credentials(access_token="fresh"))
    assert session.get("/api/conversations.list").json() == {"ok": True}
    assert len(provider_server.seen) == 2


def test_hook_parse_rate_limit_feeds_rate_limit_status_shared_through_redis(
    hubspot, nexus_registry, redis_client, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(200, {}, **{
        "X-HubSpot-RateLimit-Max": "110", "X-HubSpot-RateLimit-Remaining": "97"}))
    session = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                           redis=redis_client, account_id="portal-62515")
    session.get("/crm/v3/objects/contacts")
    assert session.rate_limit_status() == {"remaining": 97, "max": 110}
    # A health check in another process (a new session) reads the last shared status.
    other = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                         redis=redis_client, account_id="portal-62515", install_id="i2")
    assert other.rate_limit_status() == {"remaining": 97, "max": 110}
