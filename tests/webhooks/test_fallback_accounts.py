"""``WebhookConfig.fallback_account_fields``: an event names the account it happened in and an
account it also belongs to (a workspace of an organization); an installation of the
organization as a whole receives the events of workspaces that have no installation of their
own. The toy provider signs with Standard Webhooks: the mechanism is not Slack's."""

from __future__ import annotations

import json
import uuid

import pytest
from falcon import testing

from nexus_core import Provider, SyncPage, WebhookConfig
from nexus_core.connector import BaseConnector
from nexus_core.plugins import registered


class OrgHooks(BaseConnector):
    provider = Provider(id="org-hooks", name="Org hooks (test)", version="0",
                        auth_type="none", streams=("events",),
                        webhook=WebhookConfig(scheme="standard-webhooks",
                                              secret_envs=("STD_WEBHOOK_SECRET",),
                                              account_id_field="workspace",
                                              fallback_account_fields=("org.id",),
                                              delivery_id_field="id"))

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)


@pytest.fixture
def org_client(settings, store, redis_client, providers):
    from nexus_core.web import create_app

    store.add_installation("tenant-w", "inst-w", "org-hooks", account_id="W1")
    store.add_installation("tenant-o", "inst-o", "org-hooks", account_id="ORG9")
    with registered(OrgHooks, "org-hooks", registry=providers):
        yield testing.TestClient(create_app(settings=settings, store=store, redis=redis_client,
                                            registry=providers))


def _post(client, h, events):
    body = json.dumps(events).encode()
    return client.simulate_post("/webhooks/org-hooks", body=body,
                                headers=h.std_headers(body, msg_id=f"msg_{uuid.uuid4().hex}"))


def _targets(webhook_queue):
    from rq.job import Job
    from rq.serializers import JSONSerializer

    jobs = [Job.fetch(i, connection=webhook_queue.connection, serializer=JSONSerializer)
            for i in webhook_queue.job_ids]
    return sorted((j.kwargs["tenant_id"], j.kwargs["install_id"]) for j in jobs)


def test_a_workspace_with_its_own_installation_gets_its_events(org_client, webhook_queue, h):
    resp = _post(org_client, h, [{"id": "e1", "workspace": "W1", "org": {"id": "ORG9"}}])
    assert resp.status_code == 200 and resp.json["enqueued"] == 1, resp.text
    assert _targets(webhook_queue) == [("tenant-w", "inst-w")]


def test_a_workspace_without_one_falls_back_to_its_organizations(org_client, webhook_queue, h):
    resp = _post(org_client, h, [{"id": "e2", "workspace": "W7", "org": {"id": "ORG9"}},
                                 {"id": "e3", "workspace": "W8", "org": {"id": "ORG-NONE"}}])
    assert resp.status_code == 200, resp.text
    assert resp.json["enqueued"] == 1 and resp.json["unknown_account_events"] == 1
    assert _targets(webhook_queue) == [("tenant-o", "inst-o")]


def test_events_without_the_fallback_field_are_unknown_not_an_error(
    org_client, webhook_queue, h
):
    resp = _post(org_client, h, [{"id": "e4", "workspace": "W7"}, {"id": "e5"}])
    assert resp.status_code == 200 and resp.json["unknown_account_events"] == 2
    assert _targets(webhook_queue) == []
