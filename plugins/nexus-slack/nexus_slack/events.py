"""Events API deliveries (addendum 2.3) turned into :class:`~nexus_core.WebhookEvent` types.

The ingress has already verified the v0 signature, answered ``url_verification``, routed the
delivery by ``team_id`` (an organization-wide installation by ``enterprise_id``) and dropped
replays by ``event_id`` — Slack's retries (``X-Slack-Retry-Num``) included. Here an
``event_callback`` envelope becomes one event:

``message`` → ``message.created`` (``message_changed`` → ``message.updated``,
``message_deleted`` → ``message.deleted``, other subtypes ``message.<subtype>``);
``app_mention`` → ``message.app_mention``; ``channel_created|rename|archive|unarchive|deleted``
→ ``channel.created|renamed|archived|unarchived|deleted``; ``member_joined_channel`` /
``member_left_channel`` → ``channel.member_joined`` / ``channel.member_left``; ``team_join`` →
``user.created``; ``user_change`` → ``user.updated``; ``app_uninstalled`` →
``app.uninstalled``; ``tokens_revoked`` → ``app.tokens_revoked``; any other type ``slack.<type>``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nexus_core import WebhookEvent, WebhookRequest

TYPES = {
    "app_mention": "message.app_mention",
    "channel_created": "channel.created", "channel_rename": "channel.renamed",
    "channel_archive": "channel.archived", "channel_unarchive": "channel.unarchived",
    "channel_deleted": "channel.deleted",
    "member_joined_channel": "channel.member_joined",
    "member_left_channel": "channel.member_left",
    "team_join": "user.created", "user_change": "user.updated",
    "app_uninstalled": "app.uninstalled", "tokens_revoked": "app.tokens_revoked",
}
MESSAGE_SUBTYPES = {"message_changed": "updated", "message_deleted": "deleted"}


def _text(value: Any, limit: int = 200) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text and len(text) <= limit else None


def event_type(event: dict[str, Any]) -> str:
    kind = _text(event.get("type"), 100) or "unknown"
    if kind == "message":
        subtype = _text(event.get("subtype"), 100)
        if subtype is None:
            return "message.created"
        return "message." + MESSAGE_SUBTYPES.get(subtype, subtype)
    return TYPES.get(kind, f"slack.{kind}")


def object_id(event: dict[str, Any]) -> str | None:
    """What the event is about: a message ``<channel>:<ts>`` (the messages stream's id), a
    channel id, or a user id."""
    channel = event.get("channel")
    if isinstance(channel, dict):  # channel_created / channel_rename carry the channel object
        return _text(channel.get("id"))
    kind = event.get("type")
    if kind in ("message", "app_mention"):
        inner = event.get("message") if isinstance(event.get("message"), dict) else event
        ts = _text(inner.get("ts")) or _text(event.get("deleted_ts"))
        channel_id = _text(channel)
        return f"{channel_id}:{ts}" if channel_id and ts else None
    if kind in ("team_join", "user_change") and isinstance(event.get("user"), dict):
        return _text(event["user"].get("id"))
    return _text(channel) or _text(event.get("user"))


def normalize(envelope: Any) -> WebhookEvent | None:
    """One ``event_callback`` envelope as an event; None for anything else."""
    if not isinstance(envelope, dict) or envelope.get("type") != "event_callback":
        return None
    event = envelope.get("event")
    event_id = _text(envelope.get("event_id"))
    if not isinstance(event, dict) or event_id is None:
        return None
    when = envelope.get("event_time")
    occurred = None
    if isinstance(when, int) and not isinstance(when, bool) and 0 <= when < 253402300800:
        occurred = datetime.fromtimestamp(when, UTC)
    account = _text(envelope.get("team_id")) or _text(envelope.get("enterprise_id"))
    return WebhookEvent(id=event_id, type=event_type(event), provider="slack",
                        object_id=object_id(event), account_id=account, occurred_at=occurred,
                        payload=envelope)


def handle(request: WebhookRequest) -> list[WebhookEvent]:
    """The events of a verified delivery (one envelope; a JSON array of them is read too)."""
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return []
    items = body if isinstance(body, list) else [body]
    return [e for e in (normalize(item) for item in items) if e is not None]
