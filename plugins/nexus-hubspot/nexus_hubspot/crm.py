"""HubSpot CRM objects as the connector reads them: each type's last-modified property, the
properties asked for, records, and the timestamps in answers (properties, ``Date`` headers).

Everything here reads untrusted answers and never raises on a malformed value except through
:func:`object_id`/:func:`to_record`, which raise :class:`~nexus_core.ProviderError` naming what
was wrong (a record without a usable id cannot be delivered).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nexus_core import ConnectorContext, ProviderError, Record

#: The last-modified property per object type (providers-addendum.md 1.1): contacts have no
#: ``hs_`` prefix; companies, deals, tickets, line items, products, engagements and custom
#: objects do.
MODIFIED = {"contacts": "lastmodifieddate"}
DEFAULT_MODIFIED = "hs_lastmodifieddate"

#: Properties read when an installation names none for the type (others: HubSpot's defaults).
DEFAULT_PROPERTIES: dict[str, tuple[str, ...]] = {
    "contacts": ("email", "firstname", "lastname", "phone", "company", "lifecyclestage"),
    "companies": ("name", "domain", "industry", "city", "country"),
    "deals": ("dealname", "amount", "dealstage", "pipeline", "closedate"),
}

#: A property name, as the installation config may list it.
PROPERTY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
#: Epoch milliseconds between 1970 and 2200: anything else in a date field is garbage.
_MAX_MS = 7_258_118_400_000


def modified_property(obj: str) -> str:
    """The property a delta filters and bounds its window on for object type ``obj``."""
    return MODIFIED.get(obj, DEFAULT_MODIFIED)


def properties(obj: str, config: Mapping[str, Any]) -> list[str] | None:
    """The properties to read for ``obj``: the installation's ``properties[obj]``, else the
    defaults above, always with the last-modified property; None: HubSpot's defaults (which
    include it)."""
    configured = config.get("properties")
    wanted = configured.get(obj) if isinstance(configured, dict) else None
    if not isinstance(wanted, list):
        wanted = list(DEFAULT_PROPERTIES.get(obj, ())) or None
    if wanted is None:
        return None
    out = [p for p in wanted if isinstance(p, str)]
    for always in (modified_property(obj), "hs_object_id"):
        if always not in out:
            out.append(always)
    return out


def epoch_ms(value: Any) -> int | None:
    """A HubSpot date — epoch milliseconds (number or text) or ISO-8601 — as epoch ms; None
    for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _MAX_MS else None
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        number = int(text)
        return number if number <= _MAX_MS else None
    try:
        at = datetime.fromisoformat(text)  # 3.11 reads "Z" and any ISO-8601 form HubSpot writes
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    millis = int(at.timestamp() * 1000)
    return millis if 0 <= millis <= _MAX_MS else None


def as_datetime(millis: int | None) -> datetime | None:
    return datetime.fromtimestamp(millis / 1000, UTC) if millis is not None else None


def server_ms(headers: Any) -> int | None:
    """The provider's clock from an answer's ``Date`` header (second precision), in epoch ms;
    None when absent or unreadable."""
    raw = headers.get("Date") if hasattr(headers, "get") else None
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    try:
        at = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if at is None:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    millis = int(at.timestamp() * 1000)
    return millis if 0 <= millis <= _MAX_MS else None


def now_ms() -> int:
    return int(time.time() * 1000)


def modified_ms(item: Any, obj: str) -> int | None:
    """When an object last changed: its last-modified property, else ``updatedAt``."""
    if not isinstance(item, dict):
        return None
    props = item.get("properties")
    found = epoch_ms(props.get(modified_property(obj))) if isinstance(props, dict) else None
    return found if found is not None else epoch_ms(item.get("updatedAt"))


def object_id(item: Any, what: str) -> int:
    """The numeric id of an object in an answer; :class:`ProviderError` when there is none."""
    raw = item.get("id") if isinstance(item, dict) else None
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise ProviderError(f"{what}: an object without a numeric id ({str(raw)[:40]!r})")
    return int(text)


def _iso(value: Any) -> datetime | None:
    """An ISO-8601 text as an aware datetime (the common case of a HubSpot date), else None."""
    if type(value) is not str or len(value) > 40:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def to_record(obj: str, item: Any, *, deleted: bool = False, what: str = "") -> Record:
    """A HubSpot object (``{id, properties, createdAt, updatedAt, archived[, archivedAt]}``)
    as a record of stream ``obj``; the object is the record's ``data``, as HubSpot sent it.
    ``updated_at`` is the last-modified property (``archivedAt`` for a deletion)."""
    raw = item.get("id") if type(item) is dict else None
    # The fast path for what HubSpot sends (a backfill reads a hundred of these per page):
    # a numeric id and ISO dates; anything else goes through the careful readers.
    oid = raw if type(raw) is str and raw.isdigit() and len(raw) <= 20 \
        else str(object_id(item, what or obj))
    if deleted:
        at = _iso(item.get("archivedAt")) or as_datetime(epoch_ms(item.get("archivedAt")))
    else:
        props = item.get("properties")
        value = props.get(modified_property(obj)) if type(props) is dict else None
        at = _iso(value) if value is not None else None
        if at is None:
            at = as_datetime(modified_ms(item, obj))
    return Record(id=oid, stream=obj, data=item, updated_at=at, deleted=deleted)


def answer(ctx: ConnectorContext, resp: Any, what: str) -> dict[str, Any]:
    """The JSON object of a successful answer; any other answer is a :class:`ProviderError`
    naming the call, HubSpot's message and category (``ctx.http`` has already handled 401,
    429 and 5xx)."""
    where = {"provider": ctx.provider, "tenant_id": ctx.tenant_id,
             "install_id": ctx.install_id}
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code >= 400:
        detail = ""
        if isinstance(body, dict):
            detail = f": {str(body.get('category') or '')} {str(body.get('message') or '')}"
        raise ProviderError(f"HubSpot answered {resp.status_code} for {what}{detail[:300]}",
                            status=resp.status_code, **where)
    if not isinstance(body, dict):
        raise ProviderError(f"HubSpot's answer for {what} is not a JSON object", **where)
    return body


def results(body: dict[str, Any], what: str) -> list[Any]:
    found = body.get("results")
    if not isinstance(found, list):
        raise ProviderError(f"HubSpot's answer for {what} has no results list")
    return found


def next_after(body: dict[str, Any]) -> str | None:
    """``paging.next.after`` (None at the end)."""
    paging = body.get("paging")
    nxt = paging.get("next") if isinstance(paging, dict) else None
    after = nxt.get("after") if isinstance(nxt, dict) else None
    if after is None or after == "":
        return None
    if isinstance(after, bool) or not isinstance(after, str | int) or len(str(after)) > 2000:
        raise ProviderError(f"HubSpot answered a page token that is not one: {str(after)[:40]!r}")
    return str(after)
