"""Outbound Messages, from the ingress to the sinks.

Salesforce signs nothing, so what is checked is what can be: the delivery is a POST of XML; a
proxy that verified it (mutual TLS with Salesforce's client certificate, or Salesforce's IP
ranges) may vouch for it with a header (``SALESFORCE_WEBHOOK_VERIFIED_HEADER``); the body is a
well-formed Outbound Message parsed without entities or DTDs (``parse_webhook_body``); its
``OrganizationId`` is the installation's (routing by org id, or the core's ``account_check``
on the installation's own URL). Each notification becomes a :class:`~nexus_core.WebhookEvent`
``<sObject>.outbound_message`` whose id is the notification id (a redelivery keeps it: sinks
dedupe on it). With ``fetch_records_on_webhook``, the records are read from the API as well —
their current state, from the instance, not from the unsigned body.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from nexus_core import ConnectorContext, Record, WebhookEvent, WebhookRequest, WebhookResult
from nexus_salesforce import outbound, soql, sync

PROVIDER_ID = "salesforce"
BATCH = 200


def verify(request: WebhookRequest) -> bool:
    """A POST with an XML body, carrying the proxy's header when one is configured."""
    from nexus_core.config import provider_setting

    if request.method.upper() != "POST":
        return False
    kind = (request.header("Content-Type") or "").lower()
    if "xml" not in kind:
        return False
    required = provider_setting("SALESFORCE_WEBHOOK_VERIFIED_HEADER")
    if required:
        name, _, value = required.partition(":")
        sent = request.header(name.strip()) or ""
        return hmac.compare_digest(sent.strip().encode("utf-8", "replace"),
                                   value.strip().encode("utf-8", "replace"))
    return True


def normalize(message: outbound.OutboundMessage) -> list[WebhookEvent]:
    """One event per notification (the session id, if the workflow sends one, is not kept)."""
    out = []
    for note in message.notifications:
        payload = {"notification_id": note.id, "organization_id": message.organization_id,
                   "action_id": message.action_id, "sobject_type": note.sobject_type,
                   "sobject": note.fields, "enterprise_url": message.enterprise_url,
                   "partner_url": message.partner_url}
        out.append(WebhookEvent(id=note.id, type=f"{note.sobject_type}.outbound_message",
                                provider=PROVIDER_ID, object_id=note.object_id,
                                account_id=message.organization_id,
                                occurred_at=outbound.occurred_at(note.fields), payload=payload))
    return out


def handle(ctx: ConnectorContext, request: WebhookRequest, declared: Iterable[str]
           ) -> list[WebhookEvent] | WebhookResult:
    """The installation's events of a delivery (it was verified and routed by its org); with
    ``fetch_records_on_webhook``, also the current records of the synced sObjects."""
    try:
        message = outbound.parse(request.body)
    except outbound.BadMessage as exc:  # the ingress read it: only a changed body lands here
        ctx.log.warning("an Outbound Message that cannot be read any more: {}", exc)
        return []
    if ctx.account_id is not None and message.organization_id != ctx.account_id:
        ctx.log.warning("an Outbound Message of org {} for an installation of org {}: "
                        "dropped", message.organization_id, ctx.account_id)
        return []
    events = normalize(message)
    if not events or ctx.config.get("fetch_records_on_webhook") is not True:
        return events
    return WebhookResult(events=events, records=records_for(ctx, events, declared))


def records_for(ctx: ConnectorContext, events: list[WebhookEvent], declared: Iterable[str]
                ) -> list[Record]:
    """The current records the events are about, for the sObjects this installation syncs;
    a record gone since (deleted) is simply not returned: the next delta reports it."""
    configured = ctx.config.get("streams")
    synced = set(configured) if isinstance(configured, list) else set(declared)
    wanted: dict[str, list[str]] = {}
    for event in events:
        kind = event.payload.get("sobject_type")
        if kind in synced and event.object_id is not None:
            wanted.setdefault(kind, []).append(event.object_id)
    records: list[Record] = []
    for obj, ids in wanted.items():
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), BATCH):
            text = soql.by_ids_query(obj, ctx.config, unique[start:start + BATCH])
            body, _ = sync.query(ctx, text, None, f"{obj} records of an Outbound Message")
            records += [soql.to_record(obj, item, obj) for item in sync.rows(body, obj)]
    return records
