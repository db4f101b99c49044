"""A provider plugin for the operations tests (Sentinel failover, scale-out): the simulator's
paged records API for backfills plus Standard Webhooks deliveries, one event each.

Loaded by real `nexus` processes through NEXUS_PLUGINS=ops_plugin:plugin (with this directory
on PYTHONPATH) and registered by the tests themselves for the in-process web app.
"""

from __future__ import annotations

import json
import time

import attrs

from nexus_core import WebhookConfig, WebhookEvent, hookimpl
from nexus_core.testing.simulator import PagedProvider
from nexus_core.webhook_schemes import sign_standard_webhooks

PROVIDER = "opsim"
SECRET_ENV = "OPSIM_WEBHOOK_SECRET"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class OpsProvider(PagedProvider):
    def __init__(self) -> None:
        super().__init__(PROVIDER)
        self.provider = attrs.evolve(self.provider, webhook=WebhookConfig(
            scheme="standard-webhooks", secret_envs=(SECRET_ENV,),
            account_id_field="account_id", delivery_id_field="webhook-id"))

    @hookimpl
    def handle_webhook(self, ctx, request):
        body = json.loads(request.body)
        return [WebhookEvent(id=body["id"], type="ping", provider=PROVIDER,
                             account_id=body["account_id"], payload=body)]


plugin = OpsProvider()


def delivery(event_id: str, account_id: str) -> tuple[bytes, dict[str, str]]:
    """A signed delivery of one event for ``account_id`` (the webhook id is the event id)."""
    body = json.dumps({"id": event_id, "account_id": account_id}).encode()
    ts = str(int(time.time()))
    return body, {"webhook-id": event_id, "webhook-timestamp": ts,
                  "webhook-signature": sign_standard_webhooks(SECRET, event_id, ts, body),
                  "Content-Type": "application/json"}
