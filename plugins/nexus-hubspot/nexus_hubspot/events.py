"""HubSpot webhook deliveries: a JSON array of events (providers.md 1, addendum 1.5) turned into
:class:`~nexus_core.WebhookEvent` types, and — when the installation asks for it — the changed
records read at once (a targeted fetch) so they reach the sinks with the events.

``<object>.<action>`` subscription types become ``<stream>.<verb>``: ``contact.creation`` →
``contacts.created``, ``deal.propertyChange`` → ``deals.updated``, ``company.deletion`` →
``companies.deleted``, ``contact.merge`` → ``contacts.merged``, ``ticket.restore`` →
``tickets.restored``, ``*.associationChange`` → ``*.association_changed``,
``contact.privacyDeletion`` → ``contacts.privacy_deleted``; other types keep their name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from nexus_core import ConnectorContext, Record, WebhookEvent, WebhookRequest, WebhookResult
from nexus_hubspot import crm

PROVIDER_ID = "hubspot"
STREAMS = {"contact": "contacts", "company": "companies", "deal": "deals", "ticket": "tickets",
           "line_item": "line_items", "product": "products", "conversation": "conversations",
           "object": "objects"}
VERBS = {"creation": "created", "propertyChange": "updated", "deletion": "deleted",
         "merge": "merged", "restore": "restored", "associationChange": "association_changed",
         "privacyDeletion": "privacy_deleted", "newMessage": "new_message"}
#: Events after which the object's current state is read (``fetch_records_on_webhook``).
FETCHED = frozenset({"created", "updated", "restored", "merged"})
DELETED = frozenset({"deleted", "privacy_deleted"})
BATCH = 100
_MAX_MS = 7_258_118_400_000


def _scalar(value: Any) -> str | None:
    """An id-like value as text: a non-empty string or an integer (never a bool)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text and len(text) <= 100 else None


def event_type(subscription_type: Any) -> tuple[str, str] | None:
    """(stream, verb) of a subscription type, None when it is not ``<object>.<action>``."""
    if not isinstance(subscription_type, str) or len(subscription_type) > 100:
        return None
    obj, sep, action = subscription_type.partition(".")
    if not sep or not obj or not action:
        return None
    return STREAMS.get(obj, obj), VERBS.get(action, action)


def normalize(item: Any) -> WebhookEvent | None:
    """One event of a delivery as a :class:`WebhookEvent`; None for anything that is not an
    event (no ``eventId`` or subscription type)."""
    if not isinstance(item, dict):
        return None
    event_id = _scalar(item.get("eventId"))
    kind = event_type(item.get("subscriptionType"))
    if event_id is None or kind is None:
        return None
    occurred = item.get("occurredAt")
    at = None
    if isinstance(occurred, int) and not isinstance(occurred, bool) and \
            0 <= occurred <= _MAX_MS:
        at = datetime.fromtimestamp(occurred / 1000, UTC)
    return WebhookEvent(id=event_id, type=f"{kind[0]}.{kind[1]}", provider=PROVIDER_ID,
                        object_id=_scalar(item.get("objectId")),
                        account_id=_scalar(item.get("portalId")), occurred_at=at,
                        payload=item)


def parse(body: bytes) -> list[WebhookEvent]:
    """Every event of a delivery body (a JSON array; a single object is taken as one event);
    anything unreadable is dropped, never raised."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    items = data if isinstance(data, list) else [data]
    return [e for e in (normalize(item) for item in items) if e is not None]


def handle(ctx: ConnectorContext, request: WebhookRequest, declared: Iterable[str]
           ) -> list[WebhookEvent] | WebhookResult:
    """The installation's events of a delivery (a batch may hold several portals'); with
    ``fetch_records_on_webhook``, also the records they changed (``declared``: the streams
    an installation syncs when its config names none)."""
    events = [e for e in parse(request.body)
              if ctx.account_id is None or e.account_id == ctx.account_id]
    if not events or ctx.config.get("fetch_records_on_webhook") is not True:
        return events
    return WebhookResult(events=events, records=records_for(ctx, events, declared))


def synced_streams(ctx: ConnectorContext, declared: Iterable[str]) -> set[str]:
    configured = ctx.config.get("streams")
    return set(configured) if isinstance(configured, list) else set(declared)


def records_for(ctx: ConnectorContext, events: list[WebhookEvent], declared: Iterable[str]
                ) -> list[Record]:
    """The current state of the objects ``events`` changed (batch reads, 100 ids per call),
    and ``Record(deleted=True)`` for deleted and merged-away ones — for the streams this
    installation syncs."""
    streams = synced_streams(ctx, declared)
    fetch: dict[str, list[str]] = {}
    gone: dict[str, list[str]] = {}
    for event in events:
        stream, _, verb = event.type.partition(".")
        if stream not in streams or stream == "objects" or event.object_id is None:
            continue
        if verb in DELETED:
            gone.setdefault(stream, []).append(event.object_id)
        elif verb == "merged":
            primary = _scalar(event.payload.get("primaryObjectId")) or event.object_id
            fetch.setdefault(stream, []).append(primary)
            merged = event.payload.get("mergedObjectIds")
            for oid in merged if isinstance(merged, list) else []:
                text = _scalar(oid)
                if text is not None and text != primary:
                    gone.setdefault(stream, []).append(text)
        elif verb in FETCHED:
            fetch.setdefault(stream, []).append(event.object_id)
    records: list[Record] = []
    for stream, ids in fetch.items():
        records += _batch_read(ctx, stream, list(dict.fromkeys(ids)))
    for stream, ids in gone.items():
        records += [Record(id=oid, stream=stream, data={"id": oid, "archived": True},
                           deleted=True) for oid in dict.fromkeys(ids)]
    return records


def _batch_read(ctx: ConnectorContext, stream: str, ids: list[str]) -> list[Record]:
    out: list[Record] = []
    props = crm.properties(stream, ctx.config)
    for start in range(0, len(ids), BATCH):
        chunk = ids[start:start + BATCH]
        query: dict[str, Any] = {"inputs": [{"id": oid} for oid in chunk]}
        if props:
            query["properties"] = props
        what = f"{stream} batch read"
        # A batch read is a read: safe to send again after a 5xx (the key makes it retryable).
        resp = ctx.http.post(f"/crm/v3/objects/{stream}/batch/read", json=query,
                             idempotency_key=f"read:{stream}:{','.join(chunk)}"[:200])
        # 207: some ids were not found (deleted since the event): the others are delivered.
        body = crm.answer(ctx, resp, what)
        out += [crm.to_record(stream, item, what=what) for item in crm.results(body, what)]
    return out
