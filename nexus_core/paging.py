"""Paginators and incremental cursors: the paging a connector would otherwise write by hand.

Each paginator is a small standalone object with explicit inputs (in the manner of Meltano's
``singer_sdk/pagination.py``), not tied to a stream, safe to share between threads (it keeps
no state between pages: the page token travels in the job's cursor). One page is::

    page = PAGINATOR.fetch(ctx.http, "/v1/widgets", cursor, stream=stream)

which is :meth:`~Paginator.request` (where to ask) + ``http.get`` + :meth:`~Paginator.parse`
(records, :meth:`~Paginator.next_cursor`) — the pure parts are public for tests. A body or
header the paginator cannot read is a :class:`~nexus_core.errors.ProviderError` that says what
was expected, never another exception; a provider answering the same page token again (which
would loop forever) is one too.

:class:`IncrementalCursor` is the delta side: the highest value of the stream's cursor field
seen plus the keys of the records AT that value, so a ``>=`` query neither loses records that
share the boundary timestamp (as ``>`` would) nor re-delivers them forever.

Written here rather than taken from singer-sdk or the Airbyte CDK: both tie their paginators
to their own stream and request classes and bring their framework along; these are a few
lines each over ``ctx.http``. ``requests`` (a dependency already) parses the ``Link`` header.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs

from nexus_core.auth import lookup
from nexus_core.errors import ProviderError
from nexus_core.models import Record, SyncPage

__all__ = [
    "BodyCursorPaginator",
    "IncrementalCursor",
    "LinkHeaderPaginator",
    "NextUrlPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "Paginator",
    "default_record",
    "record_key",
]

PrimaryKey = str | Sequence[str]
ToRecord = Callable[[Any], Record]

#: Longest cursor/page token accepted from a provider (a body holding megabytes is not a token).
MAX_TOKEN = 8192


def _error(message: str) -> ProviderError:
    return ProviderError(message, retryable=False)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- records ---------------------------------------------------------------------------------


def record_key(item: Any, primary_key: PrimaryKey) -> str:
    """The record id of ``item`` by ``primary_key``: the field's value as text; for a composite
    key, the JSON list of the values (``'["order-1",2]'``), which no two keys share."""
    if not isinstance(item, Mapping):
        raise _error(f"a record must be a JSON object, got {type(item).__name__}")
    fields = [primary_key] if isinstance(primary_key, str) else list(primary_key)
    values = []
    for field in fields:
        value = lookup(item, field) if isinstance(item, dict) else item.get(field)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise _error(f"record has no usable primary key {field!r} (got {_show(value)})")
        values.append(value)
    if isinstance(primary_key, str):
        return str(values[0])
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def default_record(stream: str, primary_key: PrimaryKey = "id") -> ToRecord:
    """``item -> Record(id=<primary key>, stream=stream, data=item)``."""

    def to_record(item: Any) -> Record:
        return Record(id=record_key(item, primary_key), stream=stream, data=dict(item))

    return to_record


def _items(body: Any, records_path: str | None) -> list[Any]:
    items = lookup(body, records_path) if records_path else body
    if not isinstance(items, list):
        where = f"at {records_path!r}" if records_path else "as the body"
        raise _error(f"expected a list of records {where}, got {type(items).__name__}")
    return items


def _token(value: Any, where: str) -> str | None:
    """A page token read from the provider: None/"" = no next page; text or an integer."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _error(f"expected a page token (text) {where}, got {_show(value)}")
    token = str(value)
    if len(token) > MAX_TOKEN:
        raise _error(f"page token {where} is {len(token)} characters long")
    return token


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name) if hasattr(headers, "get") else None
    if value is None and isinstance(headers, Mapping):  # a plain dict: any case
        for key, val in headers.items():
            if isinstance(key, str) and key.lower() == name.lower():
                return str(val)
    return None if value is None else str(value)


def _with(params: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    out = dict(params or {})
    out.update({k: v for k, v in extra.items() if k and v is not None})
    return out


def _where(http: Any) -> dict[str, Any]:
    """The provider/tenant/installation of a ProviderSession, for error messages."""
    provider = getattr(http, "provider", None)
    if provider is None or not hasattr(provider, "id"):
        return {}
    return {"provider": provider.id, "tenant_id": getattr(http, "tenant_id", None),
            "install_id": getattr(http, "install_id", None)}


def _int_cursor(cursor: str | None, default: int, what: str) -> int:
    if cursor is None:
        return default
    if not re.fullmatch(r"[0-9]{1,15}", cursor):
        raise _error(f"cursor {_show(cursor)} is not {what}")
    return int(cursor)


# -- the paginators --------------------------------------------------------------------------


class Paginator:
    """The common interface; subclasses define :meth:`request`, :meth:`next_cursor` and
    ``records_path``."""

    records_path: str | None = None

    def request(self, path: str, cursor: str | None,
                params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """(URL or path, query parameters) of the page at ``cursor`` (None: the first)."""
        raise NotImplementedError

    def next_cursor(self, response_json: Any, headers: Any, cursor: str | None) -> str | None:
        """The cursor of the page after this one, None at the end."""
        raise NotImplementedError

    def records(self, response_json: Any) -> list[Any]:
        """The raw records of a page."""
        return _items(response_json, self.records_path)

    def parse(self, response_json: Any, headers: Any, cursor: str | None, *, stream: str,
              to_record: ToRecord | None = None, primary_key: PrimaryKey = "id") -> SyncPage:
        """One page from a decoded answer: records, ``next_cursor``, ``done`` when there is no
        next page. A next cursor equal to ``cursor`` is a :class:`ProviderError` (a loop)."""
        items = self.records(response_json)
        nxt = self.next_cursor(response_json, headers, cursor)
        if nxt is not None and nxt == cursor:
            raise _error(f"the provider answered page {_show(cursor)} with the same page token "
                         "again; stopping instead of looping forever")
        convert = to_record or default_record(stream, primary_key)
        return SyncPage(records=[convert(item) for item in items], next_cursor=nxt,
                        done=nxt is None)

    def fetch(self, http: Any, path: str, cursor: str | None, *, stream: str,
              params: Mapping[str, Any] | None = None, to_record: ToRecord | None = None,
              primary_key: PrimaryKey = "id") -> SyncPage:
        """GET one page with ``http`` (``ctx.http``) and :meth:`parse` it. A 4xx answer is a
        :class:`ProviderError` with its status (``ctx.http`` already raised for 429, 5xx and
        expired tokens), a body that is not JSON too."""
        where = _where(http)
        try:
            url, query = self.request(path, cursor, params)
            resp = http.get(url, params=query or None)
            shown = urlsplit(url).path or url
            if resp.status_code >= 400:
                raise ProviderError(f"the provider answered {resp.status_code} for {shown}",
                                    status=resp.status_code, retryable=False)
            try:
                body = resp.json()
            except ValueError:
                raise _error(f"the answer for {shown} is not JSON") from None
            return self.parse(body, resp.headers, cursor, stream=stream, to_record=to_record,
                              primary_key=primary_key)
        except ProviderError as exc:
            if exc.provider is not None or not where:
                raise
            raise ProviderError(f"{stream}: {exc.message}", retryable=exc.retryable,
                                status=exc.status, **where) from None


@attrs.frozen
class BodyCursorPaginator(Paginator):
    """The next page's token in the body at a dotted path (``paging.next.after``,
    ``response_metadata.next_cursor``), sent back as the ``cursor_param`` query parameter;
    an absent or empty token ends the stream."""

    records_path: str
    cursor_path: str
    cursor_param: str
    page_size: int | None = None
    page_size_param: str | None = None

    def request(self, path: str, cursor: str | None,
                params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        size = {self.page_size_param: self.page_size} if self.page_size_param else {}
        return path, _with(params, **size, **{self.cursor_param: cursor})

    def next_cursor(self, response_json: Any, headers: Any, cursor: str | None) -> str | None:
        return _token(lookup(response_json, self.cursor_path), f"at {self.cursor_path!r}")


@attrs.frozen
class LinkHeaderPaginator(Paginator):
    """RFC 8288 ``Link: <https://…?page=2>; rel="next"``: the next page is the URL of the
    ``next`` link (relative links resolved against the current page); none ends the stream.
    The records are the body (or at ``records_path``)."""

    page_size: int | None = None
    page_size_param: str | None = None
    records_path: str | None = None

    def request(self, path: str, cursor: str | None,
                params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        if cursor is not None:
            return cursor, {}  # the link carries every parameter
        size = {self.page_size_param: self.page_size} if self.page_size_param else {}
        return path, _with(params, **size)

    def next_cursor(self, response_json: Any, headers: Any, cursor: str | None) -> str | None:
        # requests' parser (a public helper of a library we already use) splits the header;
        # it never raises, and a link without rel is ignored here.
        from requests.utils import parse_header_links

        raw = _header(headers, "Link")
        if not raw:
            return None
        for link in parse_header_links(raw):
            rel = str(link.get("rel", "")).lower().split()
            if "next" in rel:
                url = _token(link.get("url"), "in the Link header")
                if url is None:
                    return None
                if cursor and urlsplit(cursor).scheme and not urlsplit(url).scheme:
                    url = urljoin(cursor, url)
                return url
        return None


@attrs.frozen
class OffsetPaginator(Paginator):
    """``?offset=N&limit=M``: the next offset is this one plus the records received; an empty
    page, or reaching the total at ``total_path`` when given, ends the stream."""

    limit: int
    offset_param: str = "offset"
    limit_param: str = "limit"
    records_path: str | None = None
    total_path: str | None = None

    def request(self, path: str, cursor: str | None,
                params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        offset = _int_cursor(cursor, 0, "an offset")
        return path, _with(params, **{self.offset_param: offset, self.limit_param: self.limit})

    def next_cursor(self, response_json: Any, headers: Any, cursor: str | None) -> str | None:
        received = len(self.records(response_json))
        if received == 0:
            return None
        nxt = _int_cursor(cursor, 0, "an offset") + received
        if self.total_path:
            total = lookup(response_json, self.total_path)
            if isinstance(total, bool) or not isinstance(total, int):
                raise _error(f"expected a total count at {self.total_path!r}, "
                             f"got {_show(total)}")
            if nxt >= total:
                return None
        return str(nxt)


@attrs.frozen
class PageNumberPaginator(Paginator):
    """``?page=N`` from ``start``; an empty page ends the stream (a short page does not: many
    APIs cap the page size below what was asked)."""

    page_param: str = "page"
    start: int = 1
    page_size: int | None = None
    page_size_param: str | None = None
    records_path: str | None = None

    def request(self, path: str, cursor: str | None,
                params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        page = _int_cursor(cursor, self.start, "a page number")
        size = {self.page_size_param: self.page_size} if self.page_size_param else {}
        return path, _with(params, **size, **{self.page_param: page})

    def next_cursor(self, response_json: Any, headers: Any, cursor: str | None) -> str | None:
        if not self.records(response_json):
            return None
        return str(_int_cursor(cursor, self.start, "a page number") + 1)


@attrs.frozen
class NextUrlPaginator(Paginator):
    """The next page's URL (absolute or a path on the provider) in the body at ``next_path``
    (``nextRecordsUrl``, ``next``); absent or empty ends the stream."""

    next_path: str
    records_path: str | None = None

    def request(self, path: str, cursor: str | None,
                params: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        return (cursor, {}) if cursor is not None else (path, dict(params or {}))

    def next_cursor(self, response_json: Any, headers: Any, cursor: str | None) -> str | None:
        return _token(lookup(response_json, self.next_path), f"at {self.next_path!r}")


# -- incremental reads -----------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?[0-9]{1,30}(\.[0-9]{1,30})?", re.ASCII)


def _ordinal(value: Any, field: str) -> tuple[int, Any]:
    """A comparable form of a cursor-field value: numbers (also numeric text, e.g. epoch ms
    as a string) as (0, Decimal), ISO-8601 dates as (1, aware datetime)."""
    if isinstance(value, bool):
        raise _error(f"cursor field {field!r} holds a boolean")
    if isinstance(value, int):
        return 0, Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(f"cursor field {field!r} holds {value!r}")
        return 0, Decimal(repr(value))
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        if _NUMBER.fullmatch(text):
            try:
                return 0, Decimal(text)
            except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
                pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return 1, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise _error(f"cursor field {field!r} holds {_show(value)}, neither a number nor an "
                 "ISO-8601 date")


@attrs.frozen
class IncrementalCursor:
    """A delta cursor: ``at``, the highest value of the cursor field seen (as the provider
    wrote it: ISO text or a number, ready to send back as the ``>=`` filter), and ``ids``, the
    keys of the records at exactly that value (already delivered).

    A delta asks for changes ``>= at``, drops what :meth:`drop_seen` says was delivered and
    stores :meth:`advance`. Encoded as ``{"at": …, "ids": […]}``.
    """

    at: str | int | float | None = None
    ids: tuple[str, ...] = attrs.field(default=(), converter=lambda v: tuple(sorted(set(v))))

    @classmethod
    def decode(cls, cursor: str | None) -> IncrementalCursor:
        """The cursor a hook received; None or "" is the empty cursor (read everything)."""
        if not cursor:
            return cls()
        try:
            data = json.loads(cursor)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("ids", []), list):
            raise _error(f"cursor {_show(cursor)} is not an incremental cursor "
                         '({"at": ..., "ids": [...]})')
        at = data.get("at")
        if isinstance(at, bool) or not (at is None or isinstance(at, str | int | float)):
            raise _error(f"cursor {_show(cursor)}: 'at' is not a number or a date")
        return cls(at, tuple(str(i) for i in data.get("ids", [])))

    def encode(self) -> str:
        return json.dumps({"at": self.at, "ids": list(self.ids)}, separators=(",", ":"),
                          ensure_ascii=False)

    def _key(self, record: Record, primary_key: PrimaryKey | None) -> str:
        return record.id if primary_key is None else record_key(record.data, primary_key)

    def _values(self, records: Iterable[Record], cursor_field: str
                ) -> list[tuple[Record, Any, tuple[int, Any]]]:
        out = []
        for record in records:
            value = lookup(record.data, cursor_field)
            if value is not None:
                out.append((record, value, _ordinal(value, cursor_field)))
        return out

    def drop_seen(self, records: Iterable[Record], cursor_field: str,
                  primary_key: PrimaryKey | None = None) -> list[Record]:
        """``records`` without those delivered before: at exactly ``at`` and among ``ids``.
        Keys are ``Record.id`` unless ``primary_key`` names fields of ``Record.data``."""
        records = list(records)
        if self.at is None or not self.ids:
            return records
        boundary = _ordinal(self.at, cursor_field)
        seen = set(self.ids)
        keep = []
        for record in records:
            value = lookup(record.data, cursor_field)
            if value is not None and _same(_ordinal(value, cursor_field), boundary) and \
                    self._key(record, primary_key) in seen:
                continue
            keep.append(record)
        return keep

    def advanced(self, records: Iterable[Record], cursor_field: str,
                 primary_key: PrimaryKey | None = None) -> IncrementalCursor:
        """The cursor after delivering ``records``: the highest cursor-field value among them
        and this cursor, with the keys at that value (accumulated while it does not move).
        Records without the field leave it unchanged."""
        values = self._values(records, cursor_field)
        best = _ordinal(self.at, cursor_field) if self.at is not None else None
        at, ids = self.at, set(self.ids)
        for record, value, ordinal in values:
            if best is not None and ordinal[0] != best[0]:
                raise _error(f"cursor field {cursor_field!r} mixes numbers and dates "
                             f"({_show(at)} and {_show(value)})")
            if best is None or ordinal[1] > best[1]:
                best, at, ids = ordinal, value, set()
            if _same(ordinal, best):
                ids.add(self._key(record, primary_key))
        return IncrementalCursor(at, tuple(ids))

    def advance(self, records: Iterable[Record], cursor_field: str,
                primary_key: PrimaryKey | None = None) -> str:
        """:meth:`advanced`, encoded: the ``next_cursor`` of the page."""
        return self.advanced(records, cursor_field, primary_key).encode()


def _same(a: tuple[int, Any], b: tuple[int, Any]) -> bool:
    return a[0] == b[0] and a[1] == b[1]
