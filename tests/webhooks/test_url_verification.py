"""``WebhookConfig.url_verification``: a provider's URL handshake, declared. The toy provider
signs with Standard Webhooks and handshakes in its own words (a nested kind, another challenge
field), so the mechanism is not Slack's."""

from __future__ import annotations

import json

import pytest
from falcon import testing

from nexus_core import Provider, SyncPage, UrlVerification, WebhookConfig
from nexus_core.connector import BaseConnector
from nexus_core.plugins import registered


class Handshaker(BaseConnector):
    provider = Provider(id="handshaker", name="Handshaker (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="standard-webhooks",
                                              secret_envs=("STD_WEBHOOK_SECRET",),
                                              account_id_field="account",
                                              url_verification=UrlVerification(
                                                  type_field="meta.kind",
                                                  type_value="endpoint.verify",
                                                  challenge_field="plainToken")))

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)


@pytest.fixture
def hs_client(settings, store, redis_client, providers):
    from nexus_core.web import create_app

    store.add_installation("tenant-hs", "inst-hs", "handshaker", account_id="acct-9")
    with registered(Handshaker, "handshaker", registry=providers):
        yield testing.TestClient(create_app(settings=settings, store=store, redis=redis_client,
                                            registry=providers))


def test_a_declared_handshake_is_answered_after_verification(hs_client, webhook_queue, h):
    body = json.dumps({"meta": {"kind": "endpoint.verify"}, "plainToken": "tok-123"}).encode()
    resp = hs_client.simulate_post("/webhooks/handshaker", body=body, headers=h.std_headers(body))
    assert resp.status_code == 200 and resp.json == {"plainToken": "tok-123"}
    forged = hs_client.simulate_post("/webhooks/handshaker", body=body,
                                     headers=h.std_headers(body, secret="whsec_" + "A" * 32))
    assert forged.status_code == 401 and "tok-123" not in forged.text
    assert len(webhook_queue) == 0


def test_a_delivery_of_another_kind_is_an_event(hs_client, webhook_queue, h):
    body = json.dumps({"meta": {"kind": "thing.created"}, "account": "acct-9",
                       "plainToken": "x"}).encode()
    resp = hs_client.simulate_post("/webhooks/handshaker", body=body, headers=h.std_headers(body))
    assert resp.status_code == 200 and resp.json["enqueued"] == 1
    assert len(webhook_queue) == 1


def test_without_a_declaration_a_handshake_shaped_body_is_an_ordinary_delivery(
    client, webhook_queue, h
):
    body = json.dumps({"type": "url_verification", "challenge": "c", "account_id": "acct-1"}
                      ).encode()
    resp = client.simulate_post("/webhooks/std", body=body, headers=h.std_headers(body))
    assert resp.status_code == 200 and "challenge" not in resp.json
    assert resp.json["enqueued"] == 1
