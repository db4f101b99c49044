"""What HubSpot's answers say about limits and tokens: the ``X-HubSpot-RateLimit-*`` headers,
the 429 bodies (``policyName`` DAILY vs TEN_SECONDLY_ROLLING, the search API's secondly
limit) and the 401 of an expired token. Pure functions over untrusted headers and bodies: they
never raise, whatever they are given (property-tested).
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

from nexus_core import RateLimitWait

#: ``X-HubSpot-RateLimit-<suffix>`` -> key of the parsed status (health checks show it).
HEADERS = {
    "Max": "max", "Remaining": "remaining", "Interval-Milliseconds": "interval_ms",
    "Daily": "daily", "Daily-Remaining": "daily_remaining",
    "Secondly": "secondly", "Secondly-Remaining": "secondly_remaining",
}
#: The ten-secondly window, when an answer does not say.
TEN_SECONDS = 10.0
#: A daily limit resets at midnight in the portal's time zone, which no answer carries. Every
#: UTC offset in use is a whole quarter of an hour, so the reset is at a quarter hour: wait for
#: the next one (then one request finds out; the shared cool-down holds back the rest).
QUARTER_HOUR = 900


def _header(headers: Any, name: str) -> Any:
    try:
        return headers.get(name)
    except Exception:  # noqa: BLE001 - a headers object of any shape
        return None


def parse_rate_limit(headers: Any) -> dict[str, Any] | None:
    """``{"max": 110, "remaining": 97, "interval_seconds": 10.0, "daily": ..., ...}`` from
    an answer's headers (only those present, non-negative integers); None when there are
    none (search answers and OAuth calls carry fewer, or none)."""
    out: dict[str, Any] = {}
    for suffix, key in HEADERS.items():
        raw = _header(headers, "X-HubSpot-RateLimit-" + suffix)
        if isinstance(raw, bytes):
            raw = raw.decode("latin-1")
        if not isinstance(raw, str):
            continue
        text = raw.strip()
        if text.isascii() and text.isdigit() and len(text) <= 12:
            out[key] = int(text)
    if "interval_ms" in out:
        out["interval_seconds"] = out.pop("interval_ms") / 1000
    return out or None


def _body(body: Any) -> dict[str, Any]:
    if not isinstance(body, bytes | str) or len(body) > 65536:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def until_quarter_hour(now: float) -> float:
    """Seconds from ``now`` (epoch) to the next quarter hour, plus a few seconds of margin
    (and of jitter, so that accounts do not all probe at once)."""
    nxt = (math.floor(now / QUARTER_HOUR) + 1) * QUARTER_HOUR
    return nxt - now + 5 + random.random() * 25  # noqa: S311 - jitter, not crypto


def rate_limit_wait(status: int, headers: Any, body: Any, now: float | None = None
                    ) -> RateLimitWait | None:
    """HubSpot's 429s, read:

    * ``policyName: DAILY`` — the portal's daily budget is spent, for every endpoint: wait for
      the reset (``Retry-After`` when sent, else the next quarter hour), account-wide;
    * ``policyName: TEN_SECONDLY_ROLLING`` (or any other ``errorType: RATE_LIMIT``) — the
      rolling 10 s window is full: wait for it to pass (``Retry-After``, else the window the
      answer's ``X-HubSpot-RateLimit-Interval-Milliseconds`` gives, else 10 s);
    * the search API's ``"You have reached your secondly limit."`` (``category:
      RATE_LIMITS``, no headers, no Retry-After) — 1 s, for the search bucket only.

    None for anything else (a 429 with only ``Retry-After`` is left to the core)."""
    if status != 429:
        return None
    data = _body(body)
    retry_after = _retry_after(_header(headers, "Retry-After"))
    policy = str(data.get("policyName") or "").upper()
    if policy == "DAILY":
        wait = retry_after if retry_after is not None else until_quarter_hour(
            time.time() if now is None else now)
        return RateLimitWait(wait, scope="account", reason="DAILY limit")
    if policy or str(data.get("errorType") or "").upper() == "RATE_LIMIT":
        if retry_after is not None:
            wait = retry_after
        else:
            status_now = parse_rate_limit(headers) or {}
            wait = status_now.get("interval_seconds") or TEN_SECONDS
        return RateLimitWait(wait, reason=f"{policy or 'RATE_LIMIT'} limit")
    message = str(data.get("message") or "").lower()
    if str(data.get("category") or "").upper() == "RATE_LIMITS" or "secondly limit" in message:
        return RateLimitWait(retry_after if retry_after is not None else 1.0,
                             reason="secondly limit")
    return None


def _retry_after(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    try:
        value = float(text) if len(text) <= 12 else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def is_token_expired(status: int, body: Any) -> bool:
    """A 401 whose category says the token is expired (``EXPIRED_AUTHENTICATION``) or not
    valid any more (``INVALID_AUTHENTICATION``: after an uninstall, say) — one refresh
    settles either: a new token, or ``BAD_REFRESH_TOKEN`` and the tenant must reconnect. A
    401 without a readable body is treated the same; a 401 of another category is not."""
    if status != 401:
        return False
    data = _body(body)
    category = data.get("category")
    return category is None or str(category).upper() in (
        "EXPIRED_AUTHENTICATION", "INVALID_AUTHENTICATION")
