"""Deliveries that are not JSON (``WebhookConfig.body_format="custom"`` + the
``parse_webhook_body`` hook), a fixed acknowledgement (``accept_body``) and the account check of
an unsigned provider (``account_check``), through the web app, a real Redis and a real store."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_core import (
    BaseConnector,
    Provider,
    SyncPage,
    WebhookConfig,
    WebhookRejected,
    hookimpl,
)
from nexus_core.plugins import PluginRegistry, registered

ACK = '<?xml version="1.0"?><ack>true</ack>'
TOKEN = "lines-token"


class LinesApp(BaseConnector):
    """Deliveries of ``key=value`` lines, one blank-line-separated block per event; nothing
    signed but a shared token header; acknowledged with a fixed XML body."""

    provider = Provider(
        id="lines", name="Lines (test)", version="0", auth_type="none", streams=("events",),
        webhook=WebhookConfig(scheme="custom", body_format="custom", account_id_field="org",
                              delivery_id_field="id", accept_body=ACK,
                              accept_content_type="text/xml; charset=utf-8",
                              account_check=True))

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)

    @hookimpl
    def verify_webhook(self, provider, request, secrets):
        return hmac.compare_digest((request.header("X-Token") or "").encode(), TOKEN.encode())

    @hookimpl
    def parse_webhook_body(self, provider, request):
        if request.body == b"boom":
            raise ValueError("a bug in the plugin's parser")
        if request.body == b"not-a-list":
            return {"org": "o-1"}
        events = []
        for block in request.body.decode("utf-8", "replace").split("\n\n"):
            event = {}
            for line in block.splitlines():
                key, sep, value = line.partition("=")
                if not sep:
                    raise WebhookRejected("not a lines body", status=422)
                event[key] = value
            events.append(event)
        return events


def body(*events):
    return "\n\n".join("\n".join(f"{k}={v}" for k, v in e.items()) for e in events).encode()


@pytest.fixture
def lines(providers, store):
    store.add_installation("tenant-k", "inst-k", "lines", account_id="org-1")
    store.add_installation("tenant-l", "inst-l", "lines", account_id="org-2")
    with registered(LinesApp, "lines", registry=providers):
        yield providers


def post(client, data, path="/webhooks/lines", token=TOKEN):
    return client.simulate_post(path, body=data, headers={"X-Token": token,
                                                         "Content-Type": "text/plain"})


def test_a_custom_body_is_routed_deduped_and_answered_with_the_fixed_body(
    lines, client, webhook_queue
):
    delivery = body({"org": "org-1", "id": "n1"}, {"org": "org-2", "id": "n2"},
                    {"org": "org-1", "id": "n3"})
    resp = post(client, delivery)
    assert resp.status_code == 200 and resp.text == ACK
    assert resp.headers["content-type"] == "text/xml; charset=utf-8"
    jobs = webhook_queue.get_jobs()
    assert sorted(j.kwargs["tenant_id"] for j in jobs) == ["tenant-k", "tenant-l"]
    again = post(client, delivery)  # a redelivery: acknowledged again, nothing enqueued
    assert again.status_code == 200 and again.text == ACK
    assert webhook_queue.count == 2
    unknown = post(client, body({"org": "org-9", "id": "n4"}))  # not ours: acknowledged
    assert unknown.status_code == 200 and unknown.text == ACK and webhook_queue.count == 2


@pytest.mark.parametrize(("data", "status"), [
    (b"no equals sign here", 422),  # the hook's own WebhookRejected
    (b"boom", 400),  # the hook failing: a 400, never a 500
    (b"not-a-list", 400),
])
def test_a_body_the_hook_cannot_read_is_refused_without_the_acknowledgement(
    lines, client, webhook_queue, data, status
):
    resp = post(client, data)
    assert resp.status_code == status and resp.text != ACK and "error" in resp.json
    assert webhook_queue.count == 0


def test_an_unverified_delivery_is_refused_before_its_body_is_read(lines, client, webhook_queue):
    resp = post(client, b"boom", token="wrong")
    assert resp.status_code == 401 and webhook_queue.count == 0


def test_the_installations_own_url_takes_only_its_accounts_events(
    lines, client, store, webhook_queue
):
    key = store.get_installation("tenant-k", "inst-k").webhook_key
    mine = post(client, body({"org": "org-1", "id": "n1"}), f"/webhooks/lines/{key}")
    assert mine.status_code == 200 and mine.text == ACK and webhook_queue.count == 1
    for events in ([{"org": "org-2", "id": "n2"}],
                   [{"org": "org-1", "id": "n3"}, {"org": "org-2", "id": "n4"}],
                   [{"id": "n5"}]):
        other = post(client, body(*events), f"/webhooks/lines/{key}")
        assert other.status_code == 403 and other.text != ACK, events
    assert webhook_queue.count == 1


def test_the_service_path_reads_the_body_through_the_hook(lines, settings, store, redis_client,
                                                          webhook_queue):
    from nexus_core.webhooks import ingest_webhook

    result = ingest_webhook("lines", {"X-Token": TOKEN}, body({"org": "org-1", "id": "n1"}),
                            tenant_id="tenant-k", install_id="inst-k", settings=settings,
                            registry=lines, redis=redis_client, store=store)
    assert len(result.jobs) == 1
    with pytest.raises(WebhookRejected) as err:
        ingest_webhook("lines", {"X-Token": TOKEN}, body({"org": "org-2", "id": "n1"}),
                       tenant_id="tenant-k", install_id="inst-k", settings=settings,
                       registry=lines, redis=redis_client, store=store)
    assert err.value.status == 403


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_is_answered_with_the_ack_or_a_4xx_never_a_500(lines, client, data):
    resp = post(client, data)
    assert resp.status_code in (200, 400, 422), resp.text
    assert (resp.text == ACK) == (resp.status_code == 200)


def test_a_custom_body_format_without_its_hook_is_not_loaded():
    class NoParser(BaseConnector):
        provider = Provider(id="noparser", name="x", version="0", auth_type="none",
                            streams=("e",), webhook=WebhookConfig(
                                scheme="custom", body_format="custom", account_id_field="org"))

        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

        def verify_webhook(self, provider, request, secrets):
            return True

    info = PluginRegistry().register(NoParser, "noparser")
    assert info.status == "skipped" and "needs a parse_webhook_body hook" in info.reason


def test_webhook_config_checks_its_new_options():
    with pytest.raises(ValueError, match="body_format"):
        WebhookConfig(scheme="custom", body_format="xml")
    with pytest.raises(ValueError, match="account_check needs account_id_field"):
        WebhookConfig(scheme="custom", account_check=True)
