"""Fixtures for the webhook ingress: small test providers (one per signature scheme), a real
SQLite store with installations, settings pointing at the throwaway Redis, and the Falcon app."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from falcon import testing
from rq import Queue
from rq.serializers import JSONSerializer

from nexus_core import (
    BaseConnector,
    HmacSpec,
    OAuthConfig,
    Provider,
    SyncPage,
    UrlVerification,
    WebhookConfig,
    hookimpl,
)
from nexus_core import webhooks as wh
from nexus_core.config import load_settings
from nexus_core.crypto import KeyRing, generate_key
from nexus_core.plugins import registered
from nexus_core.queues import WEBHOOK
from nexus_core.store import Store

HUBSPOT_SECRET = "hs-client-secret-" + "a" * 16
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_SECRET = "whsec_test_secret"
CUSTOM_SECRET = "custom-token"
GITHUB_SECRET = "It's a Secret to Everybody"
ACME_HMAC_SECRET = "acme-hmac-secret"
GITHUB_SPEC = HmacSpec(header="X-Hub-Signature-256", prefix="sha256=")
ACME_SPEC = HmacSpec(header="X-Acme-Signature", prefix="v1=", encoding="base64",
                     algorithm="sha512", message="{timestamp}.{method}.{url}.{body}",
                     timestamp_header="X-Acme-Timestamp", timestamp_unit="ms")
PUBLIC_URL = "https://hooks.example.com"


class _Connector(BaseConnector):
    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)


class HubSpotApp(_Connector):
    provider = Provider(
        id="hubspot", name="HubSpot (test)", version="0", streams=("contacts",),
        oauth=OAuthConfig(authorize_url="https://app.hubspot.com/oauth/authorize",
                          token_url="https://api.hubapi.com/oauth/v1/token",
                          client_id_env="HUBSPOT_CLIENT_ID",
                          client_secret_env="HUBSPOT_CLIENT_SECRET"),
        # HubSpot signs with the app's client secret: the plugin lists it as the fallback.
        webhook=WebhookConfig(scheme="hubspot-v3",
                              secret_envs=("HUBSPOT_WEBHOOK_SECRET", "HUBSPOT_CLIENT_SECRET"),
                              account_id_field="portalId", delivery_id_field="eventId"),
    )


    def authorize(self, ctx, code, redirect_uri, code_verifier):
        """A stand-in for the token exchange: code "good-<portal>" works, anything else fails."""
        from datetime import timedelta

        from nexus_core import AuthError, Credentials
        from nexus_core.models import utcnow

        if not code.startswith("good-"):
            raise AuthError("HubSpot refused the code (invalid_grant)", provider="hubspot")
        return Credentials(access_token="at-" + code, refresh_token="rt",
                           expires_at=utcnow() + timedelta(minutes=30),
                           extra={"account_id": code.removeprefix("good-")})


class HubSpotV1App(_Connector):
    provider = Provider(id="hubspot-v1", name="HubSpot v1 (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="hubspot-v1", secret_envs=("HUBSPOT_SECRET",),
                                              account_id_field="portalId",
                                              delivery_id_field="eventId"))


class HubSpotV2App(_Connector):
    provider = Provider(id="hubspot-v2", name="HubSpot v2 (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="hubspot-v2", secret_envs=("HUBSPOT_SECRET",),
                                              account_id_field="portalId",
                                              delivery_id_field="eventId"))


class SlackApp(_Connector):
    provider = Provider(id="slack", name="Slack (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="slack-v0",
                                              url_verification=UrlVerification(),
                                              secret_envs=("SLACK_SIGNING_SECRET",),
                                              account_id_field="team_id",
                                              delivery_id_field="event_id"))


class StandardApp(_Connector):
    provider = Provider(id="std", name="Standard Webhooks (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="standard-webhooks",
                                              secret_envs=("STD_WEBHOOK_SECRET",),
                                              account_id_field="account_id",
                                              delivery_id_field="webhook-id"))


class StripeApp(_Connector):
    provider = Provider(id="stripe-like", name="Stripe-style (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="stripe",
                                              secret_envs=("STRIPE_WEBHOOK_SECRET",),
                                              account_id_field="account",
                                              delivery_id_field="id"))


class CustomApp(_Connector):
    provider = Provider(id="custom", name="Custom scheme (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="custom", secret_envs=("CUSTOM_SECRET",),
                                              account_id_field="account"))

    @hookimpl
    def verify_webhook(self, provider, request, secrets):
        import hmac

        token = request.header("X-Custom-Token") or ""
        return any(hmac.compare_digest(token.encode(), s.encode()) for s in secrets)


class GitHubLikeApp(_Connector):
    provider = Provider(id="github-like", name="GitHub-style HMAC (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="hmac", hmac=GITHUB_SPEC,
                                              secret_envs=("GITHUB_WEBHOOK_SECRET",),
                                              account_id_field="account",
                                              delivery_id_field="X-GitHub-Delivery"))


class AcmeHmacApp(_Connector):
    provider = Provider(id="acme-hmac", name="Timestamped HMAC (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="hmac", hmac=ACME_SPEC,
                                              secret_envs=("ACME_HMAC_SECRET",),
                                              account_id_field="account",
                                              delivery_id_field="id"))


class NoWebhooksApp(_Connector):
    provider = Provider(id="quiet", name="No webhooks (test)", version="0", auth_type="none",
                        streams=("events",))


TEST_PROVIDERS = (HubSpotApp, HubSpotV1App, HubSpotV2App, SlackApp, StandardApp, StripeApp,
                  CustomApp, GitHubLikeApp, AcmeHmacApp, NoWebhooksApp)

BASE_ENV = {
    "HUBSPOT_WEBHOOK_SECRET": HUBSPOT_SECRET,
    "HUBSPOT_SECRET": HUBSPOT_SECRET,
    "SLACK_SIGNING_SECRET": SLACK_SECRET,
    "STD_WEBHOOK_SECRET": STD_SECRET,
    "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "CUSTOM_SECRET": CUSTOM_SECRET,
    "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    "ACME_HMAC_SECRET": ACME_HMAC_SECRET,
    "NEXUS_PUBLIC_URL": PUBLIC_URL,
    "NEXUS_WEBHOOK_MAX_BODY": "65536",
    "NEXUS_METRICS_TOKEN": "metrics-token-for-tests",
    "HUBSPOT_CLIENT_ID": "hs-client-id",
    "HUBSPOT_REDIRECT_URI": "http://localhost:3000/integrations/hubspot/callback",
}


@pytest.fixture
def providers(nexus_registry):
    from contextlib import ExitStack

    with ExitStack() as stack:
        for cls in TEST_PROVIDERS:
            stack.enter_context(registered(cls, cls.provider.id, registry=nexus_registry))
        yield nexus_registry


@pytest.fixture
def env(redis_url):
    """The environment the app reads; tests adjust it before asking for ``app``."""
    return {**BASE_ENV, "REDIS_URL": redis_url}


@pytest.fixture
def settings(env):
    return load_settings(env, env_file=None)


@pytest.fixture
def store(sqlite_url):
    s = Store.from_url(sqlite_url, KeyRing.from_string(generate_key()))
    s.add_installation("tenant-a", "inst-a", "hubspot", account_id="62515")
    s.add_installation("tenant-b", "inst-b", "hubspot", account_id="777")
    s.add_installation("tenant-c", "inst-c", "slack", account_id="T1DC2JH3J")
    s.add_installation("tenant-d", "inst-d", "std", account_id="acct-1")
    s.add_installation("tenant-e", "inst-e", "stripe-like", account_id="acct_1")
    s.add_installation("tenant-f", "inst-f", "custom", account_id="c-1")
    s.add_installation("tenant-g", "inst-g", "hubspot-v1", account_id="62515")
    s.add_installation("tenant-h", "inst-h", "hubspot-v2", account_id="62515")
    s.add_installation("tenant-i", "inst-i", "github-like", account_id="gh-42")
    s.add_installation("tenant-j", "inst-j", "acme-hmac", account_id="acme-1")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def app(settings, store, redis_client, providers):
    from nexus_core.web import create_app

    return create_app(settings=settings, store=store, redis=redis_client, registry=providers)


@pytest.fixture
def client(app):
    return testing.TestClient(app)


@pytest.fixture
def webhook_queue(redis_client):
    return Queue(WEBHOOK, connection=redis_client, serializer=JSONSerializer)


# -- signing helpers (what each provider sends) -------------------------------------------------


def hubspot_events(*portals, start=1, **extra):
    return [
        {"eventId": start + i, "subscriptionId": 12345, "portalId": portal,
         "occurredAt": 1564113600000, "subscriptionType": "contact.creation",
         "attemptNumber": 0, "objectId": 123 + i, "changeSource": "CRM", "appId": 54321, **extra}
        for i, portal in enumerate(portals)
    ]


def hubspot_headers(body, path="/webhooks/hubspot", *, secret=HUBSPOT_SECRET, ts_ms=None,
                    base=PUBLIC_URL, method="POST"):
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    sig = wh.sign_hubspot_v3(secret, method, wh.hubspot_uri(base + path), body, ts)
    return {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts,
            "Content-Type": "application/json"}


def slack_headers(body, *, secret=SLACK_SECRET, ts=None):
    ts = str(ts if ts is not None else int(time.time()))
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": wh.sign_slack(secret, ts, body),
            "Content-Type": "application/json"}


def std_headers(body, *, secret=STD_SECRET, msg_id=None, ts=None):
    ts = str(ts if ts is not None else int(time.time()))
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    return {"webhook-id": msg_id, "webhook-timestamp": ts,
            "webhook-signature": wh.sign_standard_webhooks(secret, msg_id, ts, body),
            "Content-Type": "application/json"}


def stripe_headers(body, *, secret=STRIPE_SECRET, ts=None):
    ts = ts if ts is not None else int(time.time())
    return {"Stripe-Signature": wh.stripe_header(secret, ts, body),
            "Content-Type": "application/json"}


def github_headers(body, *, secret=GITHUB_SECRET, delivery=None):
    return {"X-Hub-Signature-256": wh.sign_hmac(GITHUB_SPEC, secret, body),
            "X-GitHub-Delivery": delivery or uuid.uuid4().hex,
            "Content-Type": "application/json"}


def acme_hmac_headers(body, path="/webhooks/acme-hmac", *, secret=ACME_HMAC_SECRET, ts_ms=None,
                      base=PUBLIC_URL):
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    return {"X-Acme-Signature": wh.sign_hmac(ACME_SPEC, secret, body, timestamp=ts,
                                             method="POST", url=base + path),
            "X-Acme-Timestamp": ts, "Content-Type": "application/json"}


def slack_event(team="T1DC2JH3J", event_id="Ev0001"):
    return json.dumps({"token": "x", "team_id": team, "api_app_id": "A1",
                       "event": {"type": "message", "text": "hi"}, "type": "event_callback",
                       "event_id": event_id, "event_time": 1700000000}).encode()


@pytest.fixture
def h():
    """This module: the signing helpers and constants, for tests (importlib import mode)."""
    import sys

    return sys.modules[__name__]
