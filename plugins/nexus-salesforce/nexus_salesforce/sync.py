"""Backfill and delta of one sObject, a page per call, all state in the cursor (JSON).

**Backfill** runs ``SELECT <fields> FROM <sObject> ORDER BY Id`` and follows
``nextRecordsUrl`` until ``done``, asking for ``batch_size`` records a page
(``Sforce-Query-Options: batchSize=N``, 200-2000). The cursor keeps the query locator and the
last Id delivered: a locator that expired while the job waited (a deferral for the daily quota
lasts longer than its idle timeout) is replaced by the same query from after that Id — the
order by Id is what makes that resumable. The provider's clock at the first page (its ``Date``
header, whole seconds) is where the first delta starts: a record changed during the backfill is
read again then, none is lost; the versions the backfill delivered from that second on are
remembered, so the first delta does not deliver them again.

**Delta** reads, in this order:

1. the deletions since the last window, ``GET /sobjects/{S}/deleted/?start=&end=`` (15 days of
   recycle bin), delivered as ``Record(deleted=True)``; the next window starts at the
   answer's ``latestDateCovered`` (addendum 3.5), and the ids deleted at that very instant are
   remembered so they come once;
2. the changes: ``WHERE SystemModstamp >= <cursor> ORDER BY SystemModstamp, Id``, following
   ``nextRecordsUrl``. ``>=`` reads the records at the cursor's timestamp again; those already
   delivered are dropped by Id (:class:`~nexus_core.paging.IncrementalCursor`), so a record
   committed later at the same millisecond is not lost, as it would be with ``>``.

Deletions come first so that a record deleted and then restored inside one window ends live.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import attrs

from nexus_core import ConnectorContext, ProviderError, Record, SyncPage
from nexus_core.paging import IncrementalCursor
from nexus_salesforce import limits, soql

VERSION = 1
DEFAULT_API_VERSION = "v61.0"
DEFAULT_BATCH = 2000
MIN_BATCH, MAX_BATCH = 200, 2000
#: How far back ``/deleted/`` reaches (the recycle bin).
RECYCLE_BIN = timedelta(days=15)
#: Locator errors: the server-side cursor is gone; the scan restarts from the cursor.
LOCATOR_ERRORS = frozenset({"INVALID_QUERY_LOCATOR", "QUERY_LOCATOR_EXPIRED"})
MAX_REMEMBERED = 10_000


def api_version(config: Mapping[str, Any]) -> str:
    value = config.get("api_version")
    return value if isinstance(value, str) and _is_version(value) else DEFAULT_API_VERSION


def _is_version(value: str) -> bool:
    import re

    return re.fullmatch(r"v[0-9]{2,3}\.0", value) is not None


def batch_size(config: Mapping[str, Any]) -> int:
    value = config.get("batch_size", DEFAULT_BATCH)
    if isinstance(value, bool) or not isinstance(value, int):
        return DEFAULT_BATCH
    return min(MAX_BATCH, max(MIN_BATCH, value))


def deletions(config: Mapping[str, Any]) -> bool:
    return config.get("deletions", True) is not False


def data_path(config: Mapping[str, Any], rest: str) -> str:
    return f"/services/data/{api_version(config)}/{rest.lstrip('/')}"


# -- answers ---------------------------------------------------------------------------------


def _where(ctx: ConnectorContext) -> dict[str, Any]:
    return {"provider": ctx.provider, "tenant_id": ctx.tenant_id,
            "install_id": ctx.install_id}


class LocatorGone(Exception):
    """The query locator of a ``nextRecordsUrl`` expired: start the query again."""


def answer(ctx: ConnectorContext, resp: Any, what: str) -> dict[str, Any]:
    """The JSON object of a successful answer; :class:`LocatorGone` for an expired query
    locator; any other error answer is a :class:`ProviderError` naming the call and
    Salesforce's error code (``ctx.http`` has already handled sessions, limits and 5xx)."""
    if resp.status_code >= 400:
        body = resp.content
        if limits.codes(body) & LOCATOR_ERRORS:
            raise LocatorGone(limits.describe(resp.status_code, body))
        raise ProviderError(f"Salesforce answered {resp.status_code} for {what}: "
                            f"{limits.describe(resp.status_code, body)}",
                            status=resp.status_code, retryable=False, **_where(ctx))
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderError(f"Salesforce's answer for {what} is not a JSON object",
                            **_where(ctx))
    return body


def server_time(headers: Any) -> datetime:
    """The provider's clock from an answer's ``Date`` header (second precision, rounded
    down: a window may start a little early, never late); this machine's clock without
    one."""
    raw = headers.get("Date") if hasattr(headers, "get") else None
    if isinstance(raw, str) and len(raw) <= 64:
        try:
            at = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            at = None
        if at is not None:
            return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return datetime.now(UTC).replace(microsecond=0)


def next_records_path(body: dict[str, Any], what: str) -> str | None:
    """``nextRecordsUrl`` when the answer is not ``done``: a path under ``/services/data/``
    on the installation's own instance (never a URL to another host)."""
    if body.get("done") is True:
        return None
    url = body.get("nextRecordsUrl")
    parts = urlsplit(url) if isinstance(url, str) and len(url) <= 2000 else None
    if parts is None or parts.scheme or parts.netloc or \
            not parts.path.startswith("/services/data/") or ".." in parts.path:
        raise ProviderError(f"{what}: the answer is not done but its nextRecordsUrl is not a "
                            f"query path ({str(url)[:80]!r})", retryable=False)
    return url


def rows(body: dict[str, Any], what: str) -> list[Any]:
    found = body.get("records")
    if not isinstance(found, list):
        raise ProviderError(f"{what}: the answer has no records list", retryable=False)
    return found


def query(ctx: ConnectorContext, soql_text: str | None, next_path: str | None,
          what: str) -> tuple[dict[str, Any], Any]:
    """One page of a query: its first page (``soql_text``) or the next (``next_path``)."""
    headers = {"Sforce-Query-Options": f"batchSize={batch_size(ctx.config)}"}
    if next_path is not None:
        resp = ctx.http.get(next_path, headers=headers)
    else:
        resp = ctx.http.get(data_path(ctx.config, "query"), params={"q": soql_text},
                            headers=headers)
    return answer(ctx, resp, what), resp.headers


# -- cursors -----------------------------------------------------------------------------------


def _load(cursor: str | None, what: str) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict) or state.get("v") != VERSION:
        raise ProviderError(f"{what} cursor {str(cursor)[:60]!r} is not one this connector "
                            "wrote; start a new backfill", retryable=False)
    return state


def _dump(state: dict[str, Any]) -> str:
    return json.dumps({"v": VERSION, **state}, separators=(",", ":"))


def _ids(raw: Any) -> list[str]:
    return [i for i in raw if isinstance(i, str)][:MAX_REMEMBERED] if isinstance(raw, list) \
        else []


def _versions(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in list(raw.items())[:MAX_REMEMBERED]
            if isinstance(k, str) and isinstance(v, str)}


# -- backfill ----------------------------------------------------------------------------------


def backfill_page(ctx: ConnectorContext, obj: str, cursor: str | None) -> SyncPage:
    state = _load(cursor, "backfill")
    after, started = state.get("after"), state.get("started")
    recent = _versions(state.get("recent"))
    what = f"{obj} query"
    try:
        body, headers = query(ctx, soql.backfill_query(obj, ctx.config, after),
                              state.get("next"), what)
    except LocatorGone as gone:
        ctx.log.info("{}: query locator gone ({}); reading again after Id {}", obj, gone,
                     after)
        body, headers = query(ctx, soql.backfill_query(obj, ctx.config, after), None, what)
    if not isinstance(started, str):
        started = soql.format_datetime(server_time(headers))
    begin = soql.parse_datetime(started)
    records = [soql.to_record(obj, item, what) for item in rows(body, what)]
    for record in records:
        stamp = record.data.get("SystemModstamp")
        if begin is not None and record.updated_at is not None and \
                record.updated_at >= begin and len(recent) < MAX_REMEMBERED:
            recent[record.id] = stamp  # the first delta reads it again: skip this version
    if records:
        after = records[-1].id
    nxt = next_records_path(body, what)
    if nxt is not None:
        return SyncPage(records=records, next_cursor=_dump(
            {"next": nxt, "after": after, "started": started, "recent": recent}))
    first = Window(at=started, deleted_since=started, recent=recent)
    return SyncPage(records=records, next_cursor=first.encode(), done=True)


# -- delta -------------------------------------------------------------------------------------


@attrs.define
class Window:
    """A delta cursor: the changes cursor (``at`` + the ids delivered at it), where the
    deletions were read up to (``deleted_since`` + the ids deleted at that instant), the phase,
    the query locator of the changes being read, and — for the first delta after a backfill —
    the versions the backfill delivered at or after ``at`` (``recent``: id -> SystemModstamp).
    """

    at: str | None = None
    ids: list[str] = attrs.Factory(list)
    deleted_since: str | None = None
    deleted_ids: list[str] = attrs.Factory(list)
    phase: str = "deleted"
    next: str | None = None
    recent: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def decode(cls, cursor: str | None) -> Window:
        state = _load(cursor, "delta")
        if not state:
            return cls()  # no backfill before: every record is a change
        at, since, nxt = state.get("at"), state.get("deleted_since"), state.get("next")
        if state.get("phase") not in ("deleted", "changes") or not all(
                v is None or isinstance(v, str) for v in (at, since, nxt)):
            raise ProviderError(f"delta cursor {str(cursor)[:60]!r} is damaged; start a new "
                                "backfill", retryable=False)
        return cls(at=at, ids=_ids(state.get("ids")), deleted_since=since,
                   deleted_ids=_ids(state.get("deleted_ids")), phase=state["phase"],
                   next=nxt, recent=_versions(state.get("recent")))

    def encode(self) -> str:
        state: dict[str, Any] = {"at": self.at, "ids": self.ids,
                                 "deleted_since": self.deleted_since,
                                 "deleted_ids": self.deleted_ids, "phase": self.phase,
                                 "next": self.next}
        if self.recent:
            state["recent"] = self.recent
        return _dump(state)

    @property
    def changes(self) -> IncrementalCursor:
        return IncrementalCursor(self.at, tuple(self.ids))


def delta_page(ctx: ConnectorContext, obj: str, cursor: str | None) -> SyncPage:
    window = Window.decode(cursor)
    if window.phase == "deleted":
        window.phase = "changes"
        if deletions(ctx.config) and window.deleted_since is not None:
            return SyncPage(records=_deleted(ctx, obj, window), next_cursor=window.encode())
    return _changes(ctx, obj, window)


def _changes(ctx: ConnectorContext, obj: str, window: Window) -> SyncPage:
    what = f"{obj} changes"
    text = soql.changes_query(obj, ctx.config, window.at)
    try:
        body, headers = query(ctx, text, window.next, what)
    except LocatorGone as gone:
        ctx.log.info("{}: query locator gone ({}); reading the changes again from {}", obj,
                     gone, window.at)
        body, headers = query(ctx, text, None, what)
    if window.deleted_since is None:  # the first delta without a backfill: from now on
        window.deleted_since = soql.format_datetime(server_time(headers))
    records = [soql.to_record(obj, item, what) for item in rows(body, what)]
    fresh = [r for r in window.changes.drop_seen(records, "SystemModstamp")
             if window.recent.get(r.id) != r.data.get("SystemModstamp")]
    moved = window.changes.advanced(records, "SystemModstamp")
    window.at = moved.at if isinstance(moved.at, str) else window.at
    window.ids = list(moved.ids)[:MAX_REMEMBERED]
    window.next = next_records_path(body, what)
    if window.next is not None:
        return SyncPage(records=fresh, next_cursor=window.encode())
    window.phase, window.recent = "deleted", {}
    return SyncPage(records=fresh, next_cursor=window.encode(), done=True)


def _deleted(ctx: ConnectorContext, obj: str, window: Window) -> list[Record]:
    """The deletions from ``deleted_since`` to now, except those delivered last time."""
    assert window.deleted_since is not None
    since = soql.parse_datetime(window.deleted_since)
    if since is None:
        raise ProviderError(f"delta cursor: unreadable deleted_since "
                            f"{window.deleted_since[:40]!r}", retryable=False)
    end = datetime.now(UTC).replace(microsecond=0)
    if end - since > RECYCLE_BIN - timedelta(hours=1):
        ctx.log.warning("{}: the last deletions read are older than the recycle bin keeps "
                        "(15 days); deletions before {} may be missed — run a backfill to be "
                        "sure", obj, soql.format_datetime(end - RECYCLE_BIN))
        since = end - RECYCLE_BIN + timedelta(hours=1)
    what = f"{obj} deletions"
    # Whole seconds, as the REST guide writes them; the start is rounded down, and what the
    # last window covered already is dropped below.
    resp = ctx.http.get(data_path(ctx.config, f"sobjects/{obj}/deleted/"),
                        params={"start": since.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                                "end": end.strftime("%Y-%m-%dT%H:%M:%S+00:00")})
    body = answer(ctx, resp, what)
    found = body.get("deletedRecords")
    if not isinstance(found, list):
        raise ProviderError(f"{what}: the answer has no deletedRecords list", retryable=False)
    covered = soql.parse_datetime(body.get("latestDateCovered"))
    if covered is None or covered < since:
        covered = since  # nothing covered: the same window again next time
    seen = set(window.deleted_ids)
    records, at_end = [], []
    for item in found:
        rid = item.get("id") if isinstance(item, dict) else None
        deleted_at = soql.parse_datetime(item.get("deletedDate")) \
            if isinstance(item, dict) else None
        if not isinstance(rid, str) or not soql.RECORD_ID.fullmatch(rid):
            raise ProviderError(f"{what}: a deleted record without a usable id",
                                retryable=False)
        if deleted_at is not None and deleted_at >= covered:
            at_end.append(rid)  # it may be listed again by the next window
        if rid in seen or (deleted_at is not None and deleted_at < since):
            continue  # delivered by the last window
        records.append(Record(id=rid, stream=obj, data={"Id": rid, "IsDeleted": True,
                                                        "deletedDate": item.get("deletedDate")},
                              updated_at=deleted_at, deleted=True))
    window.deleted_since = soql.format_datetime(covered)
    window.deleted_ids = at_end[:MAX_REMEMBERED]
    return records
