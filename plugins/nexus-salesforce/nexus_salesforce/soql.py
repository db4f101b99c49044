"""SOQL as the connector writes it, and Salesforce records as it reads them.

Queries are built only from names and values this module has checked — sObject and field
names against :data:`NAME`, ids against :data:`RECORD_ID`, datetimes re-formatted from a parsed
value — so nothing an installation config or a provider answer holds can change a query's
meaning. Datetimes come back as ``2024-01-01T00:00:00.000+0000`` and go into SOQL literals as
``2024-01-01T00:00:00.000Z``, unquoted (addendum 3.4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nexus_core import ProviderError, Record

#: An sObject or field API name: ``Account``, ``Invoice__c``, ``ns__Thing__c``; a field may
#: be a relationship path (``Owner.Name``).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}", re.ASCII)
FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}(?:\.[A-Za-z][A-Za-z0-9_]{0,79}){0,4}", re.ASCII)
#: A record id: 15 (case-sensitive) or 18 characters.
RECORD_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?", re.ASCII)
#: Fields every query reads: the key and the delta cursor.
ALWAYS = ("Id", "SystemModstamp")
#: Fields read when an installation names none for the sObject (others: FIELDS(STANDARD)).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "Account": ("Name", "Type", "Industry", "Website", "Phone", "BillingCity",
                "BillingCountry", "OwnerId", "CreatedDate", "LastModifiedDate"),
    "Contact": ("FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "OwnerId",
                "CreatedDate", "LastModifiedDate"),
    "Opportunity": ("Name", "AccountId", "StageName", "Amount", "CloseDate", "Probability",
                    "IsClosed", "IsWon", "OwnerId", "CreatedDate", "LastModifiedDate"),
}
_MAX_YEAR = 4000


def fields(obj: str, config: Mapping[str, Any]) -> list[str] | None:
    """The fields to read of ``obj``: the installation's ``fields[obj]``, else the defaults
    above, always with :data:`ALWAYS`; None: all standard fields (``FIELDS(STANDARD)``, for an
    sObject without defaults)."""
    configured = config.get("fields")
    wanted = configured.get(obj) if isinstance(configured, dict) else None
    if not isinstance(wanted, list):
        wanted = list(DEFAULT_FIELDS.get(obj, ())) or None
    if wanted is None:
        return None
    out = list(ALWAYS)
    for name in wanted:
        if not isinstance(name, str) or not FIELD.fullmatch(name):
            raise ProviderError(f"{obj}: {str(name)[:60]!r} is not a field name",
                                retryable=False)
        if name not in out:
            out.append(name)
    return out


def _name(obj: str) -> str:
    if not isinstance(obj, str) or not NAME.fullmatch(obj):
        raise ProviderError(f"{str(obj)[:60]!r} is not an sObject name", retryable=False)
    return obj


def parse_datetime(value: Any) -> datetime | None:
    """A Salesforce datetime (``2024-01-01T00:00:00.000+0000``; ``Z`` and ``+00:00`` too) as
    an aware datetime; None for anything else."""
    if not isinstance(value, str) or not 19 <= len(value) <= 40:
        return None
    text = value.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                        r"(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:?[0-9]{2})", text, re.ASCII):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None or not 1970 <= at.year <= _MAX_YEAR:
        return None
    return at.astimezone(UTC)


def format_datetime(at: datetime) -> str:
    """``2024-01-01T00:00:00.000+0000``: how Salesforce writes datetimes (cursors keep it)."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def literal(value: Any) -> str:
    """A datetime as a SOQL literal (``2024-01-01T00:00:00.000Z``), re-formatted from its
    parsed value; :class:`ProviderError` for anything that is not one."""
    at = value if isinstance(value, datetime) else parse_datetime(value)
    if at is None:
        raise ProviderError(f"{str(value)[:60]!r} is not a datetime", retryable=False)
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def record_id(value: Any) -> str:
    if not isinstance(value, str) or not RECORD_ID.fullmatch(value):
        raise ProviderError(f"{str(value)[:60]!r} is not a record id", retryable=False)
    return value


def select(obj: str, config: Mapping[str, Any], where: list[str] | None = None,
           order: str = "Id ASC") -> str:
    """``SELECT <fields> FROM <obj> [WHERE ... AND ...] ORDER BY <order>``."""
    wanted = fields(obj, config)
    columns = ", ".join(wanted) if wanted is not None else "FIELDS(STANDARD)"
    # Every part is checked above (names, ids, datetimes): nothing is interpolated raw.
    query = f"SELECT {columns} FROM {_name(obj)}"  # noqa: S608
    if where:
        query += " WHERE " + " AND ".join(where)
    return query + f" ORDER BY {order}"


def backfill_query(obj: str, config: Mapping[str, Any], after: str | None) -> str:
    """Every record, by Id; from after ``after`` when resuming a scan."""
    where = [f"Id > '{record_id(after)}'"] if after else None
    return select(obj, config, where, "Id ASC")


def changes_query(obj: str, config: Mapping[str, Any], since: Any) -> str:
    """Records changed at or after ``since`` (``>=``: records sharing the boundary timestamp
    are read again and dropped by id — ``>`` would lose those committed later at the same
    millisecond), oldest change first, then by Id."""
    where = [f"SystemModstamp >= {literal(since)}"] if since is not None else None
    return select(obj, config, where, "SystemModstamp ASC, Id ASC")


def by_ids_query(obj: str, config: Mapping[str, Any], ids: list[str]) -> str:
    quoted = ", ".join(f"'{record_id(i)}'" for i in ids)
    return select(obj, config, [f"Id IN ({quoted})"], "Id ASC")


def to_record(obj: str, item: Any, what: str) -> Record:
    """A query result row as a record of stream ``obj``; the row (with its ``attributes``)
    is the record's data, as Salesforce sent it."""
    if not isinstance(item, dict):
        raise ProviderError(f"{what}: a record that is not an object", retryable=False)
    rid = item.get("Id")
    if not isinstance(rid, str) or not RECORD_ID.fullmatch(rid):
        raise ProviderError(f"{what}: a record without a usable Id ({str(rid)[:40]!r})",
                            retryable=False)
    return Record(id=rid, stream=obj, data=item,
                  updated_at=parse_datetime(item.get("SystemModstamp")))
