"""Backfill and delta of one CRM object type, a page per call, all state in the cursor.

**Backfill** lists every live object (``GET /crm/v3/objects/{type}``, 100 per page, following
``paging.next.after``). The provider's clock at the first page (its ``Date`` header) is where
the first delta starts, minus the search index lag; the versions read within that lag are
remembered, so the first delta does not deliver them again.

**Delta** reads one *window* of changes, ``since <= modified <= until``:

* ``until`` is the provider's clock when the window opens (the ``Date`` of its first answer):
  the window is bounded, so a record changing while the window is read either is in it or
  comes in the next one — never neither;
* pages are keyset-paged by object id — filter ``hs_object_id >= next id``, sorted by id,
  200 per page, ``after`` never sent — as addendum 1.4 (Airbyte's later connector) says:
  sorting by the modified date alone loops when more than a page of records share one
  timestamp, and an offset (``after``) is capped at 10,000 results (a 400 past it) and skips a
  record whenever one leaves the result set mid-scan. Keyset paging has neither problem: any
  number of changes, any number at one millisecond;
* search never returns archived records: once the search is done the window lists
  ``archived=true`` and delivers those archived inside it as ``Record(deleted=True)``;
* the next window starts at ``until - lag`` (``search_lag_seconds``, default 60): a change the
  search index had not caught up with when this window was read is read next time. What this
  window delivered within that overlap is remembered (``id -> modified``), so the overlap's
  records come once — unless they changed again.

Cursors are JSON; the remembered versions are kept per timestamp (``[[ms, [ids]], ...]``) and
capped at :data:`MAX_REMEMBERED` (past it, some boundary records are delivered twice: sinks
upsert by id anyway).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from nexus_core import ConnectorContext, ProviderError, Record, SyncPage
from nexus_hubspot import crm

LIST_LIMIT = 100
SEARCH_LIMIT = 200
#: Seconds the search index may lag behind writes (overlap of consecutive windows).
DEFAULT_LAG = 60.0
MAX_REMEMBERED = 20_000
VERSION = 1


def lag_ms(config: Mapping[str, Any]) -> int:
    value = config.get("search_lag_seconds", DEFAULT_LAG)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        value = DEFAULT_LAG
    return int(value * 1000)


def deletions(config: Mapping[str, Any]) -> bool:
    return config.get("deletions", True) is not False


# -- remembered versions --------------------------------------------------------------------


def _encode_seen(seen: dict[str, int]) -> list[list[Any]]:
    by_ms: dict[int, list[str]] = {}
    for key, millis in seen.items():
        by_ms.setdefault(millis, []).append(key)
    return [[m, sorted(keys)] for m, keys in sorted(by_ms.items())]


def _decode_seen(raw: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    if not isinstance(raw, list):
        return out
    for entry in raw:
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and \
                isinstance(entry[1], list):
            for key in entry[1]:
                if isinstance(key, str):
                    out[key] = entry[0]
    return out


def _remember(seen: dict[str, int], key: str, millis: int) -> None:
    if key in seen or len(seen) < MAX_REMEMBERED:
        seen[key] = millis


def _cursor(data: Any, what: str) -> dict[str, Any]:
    if not data:
        return {}
    try:
        state = json.loads(data)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != VERSION:
        raise ProviderError(f"{what} cursor {str(data)[:60]!r} is not one this connector "
                            "wrote; start a new backfill")
    return state


# -- backfill -------------------------------------------------------------------------------


def backfill_page(ctx: ConnectorContext, obj: str, cursor: str | None) -> SyncPage:
    state = _cursor(cursor, "backfill")
    after, started = state.get("after"), state.get("started")
    keep = _decode_seen(state.get("keep"))
    params: dict[str, Any] = {"limit": LIST_LIMIT}
    props = crm.properties(obj, ctx.config)
    if props:
        params["properties"] = ",".join(props)
    if after:
        params["after"] = after
    what = f"{obj} page"
    resp = ctx.http.get(f"/crm/v3/objects/{obj}", params=params)
    body = crm.answer(ctx, resp, what)
    if not isinstance(started, int):
        started = crm.server_ms(resp.headers) or crm.now_ms()
    horizon = started - lag_ms(ctx.config)
    records = [crm.to_record(obj, item, what=what) for item in crm.results(body, what)]
    for record in records:  # updated_at is the last-modified property, read once
        if record.updated_at is not None:
            millis = round(record.updated_at.timestamp() * 1000)
            if millis >= horizon:
                _remember(keep, record.id, millis)
    nxt = crm.next_after(body)
    if nxt is not None:
        return SyncPage(records=records, next_cursor=json.dumps(
            {"v": VERSION, "after": nxt, "started": started, "keep": _encode_seen(keep)},
            separators=(",", ":")))
    first = Window(since=horizon, seen=keep)
    return SyncPage(records=records, next_cursor=first.encode(), done=True)


# -- delta ----------------------------------------------------------------------------------


@attrs.define
class Window:
    """A delta cursor: the window being read (``until`` None: not opened yet), where the
    search is (``next_id``) or where the archived list is (``after``), what the previous
    window delivered in the overlap (``seen``) and what this one has for the next
    (``keep``). Keys of deletions are ``x<id>``."""

    since: int
    until: int | None = None
    next_id: int = 0
    phase: str = "search"
    after: str | None = None
    seen: dict[str, int] = attrs.Factory(dict)
    keep: dict[str, int] = attrs.Factory(dict)

    @classmethod
    def decode(cls, cursor: str | None) -> Window:
        state = _cursor(cursor, "delta")
        if not state:
            return cls(since=0)  # no backfill cursor: everything is a change
        ints = {k: state.get(k) for k in ("since", "until", "next_id")}
        if not isinstance(ints["since"], int) or not all(
                v is None or (isinstance(v, int) and not isinstance(v, bool))
                for v in ints.values()) or state.get("phase") not in ("search", "archived"):
            raise ProviderError(f"delta cursor {str(cursor)[:60]!r} is damaged; start a new "
                                "backfill")
        after = state.get("after")
        return cls(since=state["since"], until=ints["until"], next_id=ints["next_id"] or 0,
                   phase=state["phase"], after=after if isinstance(after, str) else None,
                   seen=_decode_seen(state.get("seen")), keep=_decode_seen(state.get("keep")))

    def encode(self) -> str:
        return json.dumps({"v": VERSION, "since": self.since, "until": self.until,
                           "next_id": self.next_id, "phase": self.phase, "after": self.after,
                           "seen": _encode_seen(self.seen), "keep": _encode_seen(self.keep)},
                          separators=(",", ":"))

    def next_window(self, lag: int) -> Window:
        """The window after this one: from ``until - lag``, remembering every version
        delivered in the overlap — read in this window, or earlier and not searchable when this
        window was read (the index lag)."""
        assert self.until is not None
        since = self.until - lag
        seen = {k: v for k, v in self.seen.items() if v >= since}
        for key, millis in self.keep.items():
            if millis >= since:
                seen[key] = millis
        return Window(since=since, seen=seen)

    def offer(self, key: str, millis: int | None, lag: int) -> bool:
        """Whether a change read in this window is new (not delivered before); it is
        remembered for the next window when it falls in the overlap."""
        assert self.until is not None
        if millis is None:
            return True
        if millis >= self.until - lag:
            _remember(self.keep, key, millis)
        return self.seen.get(key) != millis


def delta_page(ctx: ConnectorContext, obj: str, cursor: str | None) -> SyncPage:
    window = Window.decode(cursor)
    lag = lag_ms(ctx.config)
    if window.phase == "archived":
        return _archived_page(ctx, obj, window, lag)
    modified = crm.modified_property(obj)
    filters: list[dict[str, str]] = [
        {"propertyName": modified, "operator": "GTE", "value": str(window.since)}]
    if window.until is not None:
        filters.append({"propertyName": modified, "operator": "LTE", "value": str(window.until)})
    if window.next_id:
        filters.append({"propertyName": "hs_object_id", "operator": "GTE",
                        "value": str(window.next_id)})
    query: dict[str, Any] = {
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "limit": SEARCH_LIMIT,
    }
    props = crm.properties(obj, ctx.config)
    if props:
        query["properties"] = props
    what = f"{obj} search"
    # A search is a read: safe to send again after a 5xx (the key makes the POST retryable).
    resp = ctx.http.post(f"/crm/v3/objects/{obj}/search", json=query,
                         rate_limit_bucket="search",
                         idempotency_key=f"search:{obj}:{window.since}:{window.next_id}")
    body = crm.answer(ctx, resp, what)
    if window.until is None:  # the window opens: bounded by the provider's clock, now
        window.until = crm.server_ms(resp.headers) or crm.now_ms()
    records: list[Record] = []
    last = window.next_id - 1
    for item in crm.results(body, what):
        oid = crm.object_id(item, what)
        last = max(last, oid)
        millis = crm.modified_ms(item, obj)
        if millis is not None and millis > window.until:
            continue  # changed after the window opened: the next window has it
        if window.offer(str(oid), millis, lag):
            records.append(crm.to_record(obj, item, what=what))
    if crm.next_after(body) is not None:
        window.next_id = last + 1
        return SyncPage(records=records, next_cursor=window.encode())
    if deletions(ctx.config):
        window.phase, window.next_id, window.after = "archived", 0, None
        return SyncPage(records=records, next_cursor=window.encode())
    return SyncPage(records=records, next_cursor=window.next_window(lag).encode(), done=True)


def _archived_page(ctx: ConnectorContext, obj: str, window: Window, lag: int) -> SyncPage:
    """Records archived inside the window, from the ``archived=true`` list."""
    assert window.until is not None
    params: dict[str, Any] = {"archived": "true", "limit": LIST_LIMIT,
                              "properties": crm.modified_property(obj)}
    if window.after:
        params["after"] = window.after
    what = f"{obj} archived page"
    body = crm.answer(ctx, ctx.http.get(f"/crm/v3/objects/{obj}", params=params), what)
    records = []
    for item in crm.results(body, what):
        record = crm.to_record(obj, item, deleted=True, what=what)
        gone = crm.epoch_ms(item.get("archivedAt"))
        if gone is None or not window.since <= gone <= window.until:
            continue  # archived before the window (delivered then) or after it (next time)
        if window.offer("x" + record.id, gone, lag):
            records.append(record)
    nxt = crm.next_after(body)
    if nxt is not None:
        if nxt == window.after:
            raise ProviderError(f"{what}: HubSpot answered the same page token again")
        window.after = nxt
        return SyncPage(records=records, next_cursor=window.encode())
    return SyncPage(records=records, next_cursor=window.next_window(lag).encode(), done=True)
