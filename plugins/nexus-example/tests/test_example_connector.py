"""The example connector through the real plugin manager (per-provider dispatch)."""

import json

import pytest
from nexus_example import ExampleConnector

from nexus_core import ConnectorContext, WebhookRequest
from nexus_core.plugins import PluginRegistry


@pytest.fixture
def registry():
    reg = PluginRegistry()
    info = reg.register(ExampleConnector, "example")
    assert info.status == "ok", info.reason
    return reg


def ctx(**config):
    return ConnectorContext(tenant_id="t1", install_id="i1", provider="example", config=config)


def test_backfill_pages_cover_every_record_once_and_end_with_a_delta_cursor(registry):
    hook = registry.hook("backfill", "example")
    cursor, seen, pages = None, [], 0
    while True:
        page = hook(ctx=ctx(records=250, page_size=100), stream="widgets", cursor=cursor)
        pages += 1
        seen += [r.id for r in page.records]
        cursor = page.next_cursor
        if page.done:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 250
    assert cursor == "v0"


def test_delta_reports_configured_changes_and_advances_cursor(registry):
    hook = registry.hook("delta", "example")
    page = hook(ctx=ctx(changes_per_delta=3), stream="gadgets", cursor="v0")
    assert [r.data["version"] for r in page.records] == [1, 1, 1]
    assert page.next_cursor == "v1" and page.done
    quiet = hook(ctx=ctx(), stream="gadgets", cursor="v4")
    assert quiet.records == [] and quiet.next_cursor == "v4"


def test_records_carry_the_declared_primary_key_and_cursor_field(registry):
    provider = registry.provider("example")
    assert provider.stream_names == ("widgets", "gadgets")
    page = registry.hook("backfill", "example")(ctx=ctx(records=3), stream="gadgets", cursor=None)
    stream = provider.stream("gadgets")
    assert (stream.primary_key, stream.cursor_field) == ("id", "updated_at")
    assert [r.data[stream.primary_key] for r in page.records] == [r.id for r in page.records]
    assert [r.data[stream.cursor_field] for r in page.records] == [
        r.updated_at.isoformat() for r in page.records]


def test_bad_config_names_the_key(registry):
    with pytest.raises(ValueError, match="page_size"):
        registry.hook("backfill", "example")(ctx=ctx(page_size="x"), stream="widgets", cursor=None)


def test_webhook_events_are_filtered_to_the_installation_account(registry):
    body = json.dumps([{"id": "e1", "type": "widget.created", "account_id": "A", "object_id": 7},
                       {"id": "e2", "type": "widget.created", "account_id": "B"}]).encode()
    request = WebhookRequest(method="POST", url="http://x/webhooks/example", body=body)
    c = ConnectorContext(tenant_id="t", install_id="i", provider="example", account_id="A")
    events = registry.hook("handle_webhook", "example")(ctx=c, request=request)
    assert [(e.id, e.object_id) for e in events] == [("e1", "7")]
