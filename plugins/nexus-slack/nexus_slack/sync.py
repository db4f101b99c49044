"""Slack's Web API read for the three streams (providers.md 3, addendum 2.1-2.2).

* ``channels`` — ``conversations.list`` (Tier 2), ``users`` — ``users.list`` (Tier 2): cursor
  paging on ``response_metadata.next_cursor`` (empty = the end). Neither method filters by
  change time, so a delta walks the whole list and delivers what changed since the last walk
  (``updated``: milliseconds for conversations, seconds for users); the high-water mark moves
  only when a walk is complete.
* ``messages`` — ``conversations.history`` (Tier 3) per channel the bot is a member of,
  newest first, cursor paging; a delta asks each channel for ``oldest`` = the newest ``ts``
  seen there (exclusive), a channel never seen is read in full. With ``threads`` in the
  installation config, each thread's replies come from ``conversations.replies``. A channel the
  bot is not in (``is_member`` false, or ``not_in_channel``/``channel_not_found`` from history)
  is skipped with a log line saying how to include it — never a failed sync.

Every cursor is JSON the connector owns; a job resumes from it after a crash or continuation.
Errors inside HTTP 200 are read by the core (``Provider.body_errors``): an expired token is
refreshed, a revoked one needs reauth, other codes fail the page with the code in the run's
error; only the codes this module handles itself come back here.
"""

from __future__ import annotations

import json
from typing import Any

from nexus_core import ConnectorContext, ProviderError, Record, SyncPage, provider_setting
from nexus_slack import tiers

#: Codes ``conversations.history``/``replies`` answer for a channel that cannot be read: the
#: channel is skipped (declared ``returned`` in ``Provider.body_errors``).
SKIP_CHANNEL = ("not_in_channel", "channel_not_found", "thread_not_found")
DEFAULT_PAGE_SIZE = 200
MAX_PAGE_SIZE = 999
_TRUE = ("1", "true", "yes", "on")


def limited_history() -> bool:
    """``SLACK_HISTORY_LIMITED``: the app is commercially distributed outside the Marketplace
    and was created on or after 2025-05-29 (history at 1 request/minute, 15 per page)."""
    return (provider_setting("SLACK_HISTORY_LIMITED") or "").strip().lower() in _TRUE


def page_size(ctx: ConnectorContext) -> int:
    value = (ctx.config or {}).get("page_size", DEFAULT_PAGE_SIZE)
    return value if isinstance(value, int) and not isinstance(value, bool) else DEFAULT_PAGE_SIZE


def call(ctx: ConnectorContext, method: str, params: dict[str, Any], *,
         bucket: str | None = None) -> dict[str, Any]:
    """One Web API call (GET, so retried when transient) in its tier's bucket; the decoded
    answer. The core has already turned ``ok: false`` answers into errors, except the codes
    returned to the connector (``SKIP_CHANNEL``)."""
    resp = ctx.http.get(f"/{method}", params={k: v for k, v in params.items() if v is not None},
                        rate_limit_bucket=bucket or tiers.METHOD_BUCKETS.get(method))
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code >= 400 or not isinstance(data, dict):
        raise ProviderError(
            f"Slack answered HTTP {resp.status_code} to {method}"
            + ("" if isinstance(data, dict) else " with a body that is not a JSON object"),
            retryable=resp.status_code >= 500, status=resp.status_code, provider="slack",
            tenant_id=ctx.tenant_id, install_id=ctx.install_id)
    return data


def _next(data: dict[str, Any]) -> str | None:
    meta = data.get("response_metadata")
    token = meta.get("next_cursor") if isinstance(meta, dict) else None
    return token if isinstance(token, str) and token else None


def _load(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise ProviderError(f"unreadable Slack cursor {cursor[:80]!r}", provider="slack")
    return state


def _dump(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=True)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# -- channels and users ----------------------------------------------------------------------

LISTS = {"channels": ("conversations.list", "channels"), "users": ("users.list", "members")}


def list_page(ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
    """One page of ``channels`` or ``users``: all of them in a backfill (``since`` absent),
    those whose ``updated`` passed ``since`` in a delta."""
    method, key = LISTS[stream]
    state = _load(cursor)
    since = state.get("since")
    params: dict[str, Any] = {"limit": min(page_size(ctx), MAX_PAGE_SIZE),
                              "cursor": state.get("page")}
    if stream == "channels":
        params["types"] = ",".join(channel_types(ctx))
        params["exclude_archived"] = "false"
    params["team_id"] = team_id(ctx)
    data = call(ctx, method, params)
    items = data.get(key)
    if not isinstance(items, list):
        raise ProviderError(f"Slack {method} answer has no {key!r} list", provider="slack",
                            tenant_id=ctx.tenant_id, install_id=ctx.install_id)
    top = state.get("max", since)
    records = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        updated = _number(item.get("updated"))
        top = updated if top is None else max(top, updated)
        if since is None or updated > since:
            records.append(Record(id=item["id"], stream=stream, data=item))
    nxt = _next(data)
    if nxt is None:
        return SyncPage(records=records, next_cursor=_dump({"since": top}), done=True)
    return SyncPage(records=records, done=False,
                    next_cursor=_dump({"since": since, "page": nxt, "max": top}))


def team_id(ctx: ConnectorContext) -> str | None:
    """The workspace an organization-wide installation reads (``team_id`` in its config):
    Slack's list methods need it with an org-wide token."""
    value = (ctx.config or {}).get("team_id")
    return value if isinstance(value, str) and value else None


def channel_types(ctx: ConnectorContext) -> list[str]:
    value = (ctx.config or {}).get("channel_types") or ["public_channel"]
    return [str(v) for v in value]


# -- messages --------------------------------------------------------------------------------


def messages_page(ctx: ConnectorContext, cursor: str | None) -> SyncPage:
    """One step of a walk over every channel the bot is in: a page of one channel's history
    (and its threads' replies), or the next page of the channel list. The walk's cursor keeps
    the newest ``ts`` seen per channel (``hw``) for the next delta."""
    state = _load(cursor)
    if not state.get("walk"):  # a new walk: a backfill, or a delta from the last walk's marks
        state = {"walk": True, "hw": dict(state.get("hw") or {}), "queue": [], "list": None,
                 "listed": False, "ch": None}
    records: list[Record] = []
    if state["ch"] is None:
        if not state["queue"]:
            if state["listed"]:
                return _finish(state, records)
            _list_channels(ctx, state)
            if not state["queue"]:  # a page of channels the bot is in none of
                return _finish(state, records) if state["listed"] else \
                    _continue(state, records)
        ch = state["queue"].pop(0)
        state.update(ch=ch, page=None, top=None, oldest=state["hw"].get(ch))
    ch = state["ch"]
    limited = limited_history()
    limit = tiers.LIMITED_PAGE_SIZE if limited else min(page_size(ctx), MAX_PAGE_SIZE)
    bucket = tiers.LIMITED_BUCKET if limited else None
    data = call(ctx, "conversations.history",
                {"channel": ch, "cursor": state.get("page"), "limit": limit,
                 "oldest": state.get("oldest")}, bucket=bucket)
    if data.get("ok") is False:
        _skip(ctx, ch, str(data.get("error")))
        state["ch"] = None
        return _continue(state, records)
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise ProviderError("Slack conversations.history answer has no 'messages' list",
                            provider="slack", tenant_id=ctx.tenant_id, install_id=ctx.install_id)
    threads = bool((ctx.config or {}).get("threads"))
    for message in messages:
        record = message_record(ch, message)
        if record is None:
            continue
        records.append(record)
        ts = message["ts"]
        if state["top"] is None or float(ts) > float(state["top"]):
            state["top"] = ts
        if threads and message.get("thread_ts") == ts and message.get("reply_count"):
            records += _replies(ctx, ch, ts, limit, bucket)
    nxt = _next(data)
    if nxt is not None:
        state["page"] = nxt
        return _continue(state, records)
    if state["top"] is not None:
        state["hw"][ch] = state["top"]
    state["ch"] = None
    if not state["queue"] and state["listed"]:
        return _finish(state, records)
    return _continue(state, records)


def message_record(channel: str, message: Any) -> Record | None:
    """A message as a record: id ``<channel>:<ts>`` (``ts`` is unique within a channel only),
    the channel added to its data."""
    if not isinstance(message, dict) or not isinstance(message.get("ts"), str):
        return None
    try:
        float(message["ts"])
    except ValueError:
        return None
    key = f"{channel}:{message['ts']}"
    return Record(id=key, stream="messages", data={**message, "id": key, "channel": channel})


def _replies(ctx: ConnectorContext, channel: str, ts: str, limit: int, bucket: str | None
             ) -> list[Record]:
    out: list[Record] = []
    page = None
    while True:
        data = call(ctx, "conversations.replies",
                    {"channel": channel, "ts": ts, "cursor": page, "limit": limit},
                    bucket=bucket)
        if data.get("ok") is False:
            _skip(ctx, channel, str(data.get("error")), thread=ts)
            return out
        for reply in data.get("messages") or []:
            if isinstance(reply, dict) and reply.get("ts") != ts:  # [0] is the parent
                record = message_record(channel, reply)
                if record is not None:
                    out.append(record)
        page = _next(data)
        if page is None:
            return out


def _list_channels(ctx: ConnectorContext, state: dict[str, Any]) -> None:
    data = call(ctx, "conversations.list",
                {"limit": min(page_size(ctx), MAX_PAGE_SIZE), "cursor": state["list"],
                 "types": ",".join(channel_types(ctx)), "exclude_archived": "true",
                 "team_id": team_id(ctx)})
    for channel in data.get("channels") or []:
        if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
            continue
        if channel.get("is_member") is False:
            _skip(ctx, channel["id"], "not_in_channel", name=channel.get("name"))
            continue
        state["queue"].append(channel["id"])
    state["list"] = _next(data)
    state["listed"] = state["list"] is None


def _skip(ctx: ConnectorContext, channel: str, code: str, *, name: Any = None,
          thread: str | None = None) -> None:
    label = f"#{name} ({channel})" if name else channel
    what = f"thread {thread} of channel {label}" if thread else f"channel {label}"
    hint = "invite the app's bot user to the channel to sync it" if code == "not_in_channel" \
        else "it was deleted or is not visible to the app"
    log = ctx.log
    if log is not None:
        log.warning("slack: messages of {} skipped ({}): {}", what, code, hint)


def _continue(state: dict[str, Any], records: list[Record]) -> SyncPage:
    return SyncPage(records=records, next_cursor=_dump(state), done=False)


def _finish(state: dict[str, Any], records: list[Record]) -> SyncPage:
    return SyncPage(records=records, next_cursor=_dump({"hw": state["hw"]}), done=True)
