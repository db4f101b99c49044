"""What Salesforce's answers say about sessions and limits: the error arrays
(``[{"message": ..., "errorCode": ...}]``), the ``Sforce-Limit-Info`` header (with its per-app
form) and the ``403 REQUEST_LIMIT_EXCEEDED`` of a used-up daily quota (providers.md 4,
addendum 3.3 and 3.6). Pure functions over untrusted headers and bodies: they never raise,
whatever they are given (property-tested).
"""

from __future__ import annotations

import json
import re
from typing import Any

from nexus_core import RateLimitWait

#: ``api-usage=25/5000`` and ``per-app-api-usage=17/250(appName=sample-app)``, in any order,
#: separated by ``;`` (addendum 3.3: a reader anchored on the plain form breaks on the other).
_USAGE = re.compile(r"\s*(api-usage|per-app-api-usage)=([0-9]{1,12})/([0-9]{1,12})"
                    r"(?:\(appName=([^()]{0,200})\))?\s*", re.ASCII)
#: Seconds to wait on the concurrent long-running request limit (``ConcurrentPerOrgLongTxn``),
#: which frees up as soon as a running request ends — unlike the daily quota.
CONCURRENT_WAIT = 5.0
#: Seconds the org pauses after a daily-quota answer when the provider declares no quota.
DEFAULT_PAUSE = 3600.0
MAX_BODY = 65536


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def _header(headers: Any, name: str) -> Any:
    try:
        return headers.get(name)
    except Exception:  # noqa: BLE001 - a headers object of any shape
        return None


def parse_limit_info(headers: Any) -> dict[str, Any] | None:
    """``Sforce-Limit-Info`` as ``{"quota_used": 25, "quota_max": 5000}`` (the org's daily
    API requests: the keys the core's quota reserve reads), plus ``per_app_used``,
    ``per_app_max`` and ``app`` when the connected app has its own allocation; None when the
    header is absent or says nothing readable."""
    raw = _text(_header(headers, "Sforce-Limit-Info"))
    if raw is None or len(raw) > 1000:
        return None
    out: dict[str, Any] = {}
    for part in raw.split(";"):
        match = _USAGE.fullmatch(part)
        if match is None:
            continue
        kind, used, cap, app = match.groups()
        if kind == "api-usage":
            out["quota_used"], out["quota_max"] = int(used), int(cap)
        else:
            out["per_app_used"], out["per_app_max"] = int(used), int(cap)
            if app and app.strip():
                out["app"] = app.strip()
    return out or None


def errors(body: Any) -> list[tuple[str, str]]:
    """(errorCode, message) of each error in an error answer — a JSON array of objects, as
    the REST API answers; an object with ``errorCode`` counts as one. Empty for anything
    else."""
    if not isinstance(body, bytes | str) or len(body) > MAX_BODY:
        return []
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items[:20]:
        if isinstance(item, dict) and isinstance(item.get("errorCode"), str):
            message = item.get("message")
            out.append((item["errorCode"], message if isinstance(message, str) else ""))
    return out


def codes(body: Any) -> set[str]:
    return {code for code, _ in errors(body)}


def is_session_expired(status: int, body: Any) -> bool:
    """A 401 that a refresh may cure: ``INVALID_SESSION_ID`` (the session timed out, was
    revoked or ended without notice), or a 401 without a readable error. A 401 of another
    kind is the connector's to report."""
    if status != 401:
        return False
    found = codes(body)
    return not found or "INVALID_SESSION_ID" in found


def rate_limit_wait(status: int, body: Any, pause: float | None = None
                    ) -> RateLimitWait | None:
    """Salesforce's limit answers (never a 429 for them: addendum 3.6):

    * ``403 REQUEST_LIMIT_EXCEEDED`` "TotalRequests Limit exceeded." — the org's daily API
      quota (a rolling 24 hours) is used up: every request of the org pauses for ``pause``
      seconds (the provider's ``Quota.pause``), then one request finds out;
    * the same code for ``ConcurrentPerOrgLongTxn`` — too many long requests at once: a few
      seconds, for that budget only.

    None for anything else (a 403 for missing permissions is the connector's to report)."""
    if status != 403:
        return None
    found = [(c, m) for c, m in errors(body) if c == "REQUEST_LIMIT_EXCEEDED"]
    if not found:
        return None
    message = found[0][1]
    if "concurrent" in message.lower():
        return RateLimitWait(CONCURRENT_WAIT, reason="REQUEST_LIMIT_EXCEEDED (concurrent "
                             "long-running requests)")
    return RateLimitWait(pause if pause is not None else DEFAULT_PAUSE, scope="account",
                         reason="REQUEST_LIMIT_EXCEEDED: the org's daily API requests are "
                         "used up")


def describe(status: int, body: Any) -> str:
    """``INVALID_FIELD: No such column ...`` for messages (the first error, shortened)."""
    found = errors(body)
    if not found:
        return f"HTTP {status}"
    code, message = found[0]
    message = " ".join(message.split())
    return f"{code}: {message}"[:300]
