"""The example connector: the class style (``BaseConnector``), every method a hook.

Records are generated from their index, so any page can be recomputed from its cursor alone —
exactly the property a real connector needs from its provider's paging (a stable cursor).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from nexus_core import (
    BaseConnector,
    ConnectorContext,
    Health,
    Provider,
    RateLimits,
    Record,
    Stream,
    SyncPage,
    WebhookConfig,
    WebhookEvent,
    WebhookRequest,
)

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _int_config(ctx: ConnectorContext, key: str, default: int) -> int:
    value = ctx.config.get(key, default)
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"example: config {key!r} must be a non-negative integer, got {value!r}")
    return value


def make_record(stream: str, index: int, version: int = 0) -> Record:
    digest = hashlib.sha256(f"{stream}:{index}:{version}".encode()).hexdigest()
    record_id = f"{stream[:-1]}-{index:07d}"
    updated_at = EPOCH + timedelta(seconds=index + version * 86400)
    return Record(
        id=record_id,
        stream=stream,
        data={"id": record_id, "index": index, "name": f"{stream[:-1].title()} {index}",
              "hash": digest[:16], "version": version, "updated_at": updated_at.isoformat()},
        updated_at=updated_at,
    )


class ExampleConnector(BaseConnector):
    provider = Provider(
        id="example",
        name="Example (synthetic data)",
        version="0.1.0",
        auth_type="none",
        description="Deterministic synthetic records; no network. A template for plugin authors.",
        rate_limits=RateLimits(requests_per_second=100, burst_size=100),
        streams=(
            Stream("widgets", primary_key="id", cursor_field="updated_at",
                   description="Synthetic widgets; a delta re-sends changed ones."),
            Stream("gadgets", primary_key="id", cursor_field="updated_at",
                   description="Synthetic gadgets, same shape as widgets."),
        ),
        webhook=WebhookConfig(
            scheme="standard-webhooks",
            secret_envs=("EXAMPLE_WEBHOOK_SECRET",),
            account_id_field="account_id",
            delivery_id_field="webhook-id",
        ),
    )

    def backfill(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        total = _int_config(ctx, "records", 1000)
        size = max(1, _int_config(ctx, "page_size", 100))
        start = int(cursor or 0)
        end = min(start + size, total)
        records = [make_record(stream, i) for i in range(start, end)]
        done = end >= total
        # The last page hands over the first delta cursor: "version 0 seen".
        return SyncPage(records=records, next_cursor="v0" if done else str(end), done=done)

    def delta(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        changes = _int_config(ctx, "changes_per_delta", 0)
        version = int((cursor or "v0").lstrip("v")) + 1
        records = [make_record(stream, i, version) for i in range(changes)]
        next_cursor = f"v{version}" if changes else cursor
        return SyncPage(records=records, next_cursor=next_cursor, done=True)

    def handle_webhook(self, ctx: ConnectorContext, request: WebhookRequest) -> list[WebhookEvent]:
        payload = json.loads(request.body)
        items = payload if isinstance(payload, list) else [payload]
        return [
            WebhookEvent(
                id=str(item.get("id") or request.header("webhook-id")),
                type=str(item.get("type", "unknown")),
                provider="example",
                object_id=str(item.get("object_id")) if item.get("object_id") is not None else None,
                account_id=str(item.get("account_id")) if item.get("account_id") else None,
                payload=item,
            )
            for item in items
            if ctx.account_id is None or str(item.get("account_id")) == ctx.account_id
        ]

    def health_check(self, ctx: ConnectorContext) -> Health:
        return Health(healthy=True, auth_valid=True, api_accessible=True,
                      details={"note": "synthetic provider, always reachable"})
