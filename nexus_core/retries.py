"""Retries and transport failures for :mod:`nexus_core.http`: the urllib3 ``Retry`` subclass
that asks the shared rate limiter before each retry, ``Retry-After`` parsing, and short,
secret-free descriptions of connection failures."""

from __future__ import annotations

import contextvars
import email.utils
import random
import time
from collections.abc import Callable
from itertools import takewhile
from typing import Any

import attrs
import requests
from urllib3 import exceptions as u3
from urllib3.util import Retry

from nexus_core.models import Timeouts
from nexus_core.urllib3_compat import MethodAwareRetry

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Answers retried (idempotent methods) and counted as breaker failures once retries are spent.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


@attrs.define
class CallState:
    """What urllib3's Retry needs to know about the call in flight (see :class:`SharedRetry`)."""

    method: str = ""
    path: str = ""
    any_method: bool = False  # an idempotency key makes any method retryable
    single_attempt: bool = False  # the breaker's half-open probe
    retries: int = 0
    status: int | None = None  # the last answer's
    bucket: str | None = None  # the provider's rate-limit bucket the call draws from


#: The call in flight in this thread/context: what :class:`SharedRetry` consults.
current_call: contextvars.ContextVar[CallState | None] = contextvars.ContextVar(
    "nexus_call", default=None
)


class SharedRetry(MethodAwareRetry):
    """urllib3's Retry, told what it cannot know on its own.

    * 429 is NOT retried here: urllib3 would sleep its Retry-After inside the worker however
      long it is, and resend without asking the shared limiter. :class:`ProviderSession` turns
      a 429 into a shared cool-down instead.
    * Whether a POST may be retried depends on this call's idempotency key, and a half-open
      probe gets one attempt only; urllib3 sees neither, so a context variable tells it.
    * Every retry takes a slot of the shared rate limit and is logged (``before_retry``).
    * The backoff grows by ``RetryConfig.backoff_multiplier``; urllib3 hard-codes 2.
    """

    RETRY_AFTER_STATUS_CODES = frozenset({503})

    def __init__(
        self,
        *args: Any,
        multiplier: float = 2.0,
        before_retry: Callable[[Any], None] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(*args, **kw)
        self.multiplier = multiplier
        self.before_retry = before_retry

    def new(self, **kw: Any) -> SharedRetry:
        new = super().new(**kw)
        new.multiplier, new.before_retry = self.multiplier, self.before_retry
        return new

    def method_retryable(self, method: str) -> bool:
        call = current_call.get()
        return (call is not None and call.any_method) or super().method_retryable(method)

    def increment(self, *args: Any, **kw: Any) -> SharedRetry:
        call = current_call.get()
        retry = self.new(total=0) if call is not None and call.single_attempt else self
        return Retry.increment(retry, *args, **kw)

    def get_backoff_time(self) -> float:
        errors = len(list(takewhile(lambda h: h.redirect_location is None,
                                    reversed(self.history))))
        if errors <= 1:
            return 0
        value = self.backoff_factor * self.multiplier ** (errors - 1)
        value += random.random() * self.backoff_jitter  # noqa: S311 - jitter, not crypto
        return float(max(0, min(self.backoff_max, value)))

    def sleep(self, response: Any = None) -> None:
        super().sleep(response)
        if self.before_retry is not None:
            self.before_retry(self.history[-1] if self.history else None)


def parse_rate_limit_headers(headers: Any) -> dict[str, Any] | None:
    """The built-in ``parse_rate_limit``: ``X-RateLimit-*`` and IETF ``RateLimit-*`` headers."""
    out: dict[str, Any] = {}
    for prefix in ("X-RateLimit-", "RateLimit-"):
        for field, key in (("Limit", "max"), ("Remaining", "remaining"), ("Reset", "reset")):
            value = headers.get(prefix + field)
            if value is not None and key not in out:
                try:
                    out[key] = float(value) if "." in value else int(value)
                except ValueError:
                    out[key] = value
    return out or None


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or HTTP date) in seconds, None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return max(0.0, email.utils.mktime_tz(parsed) - time.time()) if parsed else None


def describe_failure(exc: BaseException, timeouts: Timeouts) -> tuple[str, bool]:
    """A short reason for a transport failure, and whether it happened before the request
    reached the provider (then retrying is always safe). Never includes the URL: a query
    string may carry a secret."""
    chain: list[BaseException] = [exc]
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, u3.MaxRetryError) and inner.reason is not None:
        chain.append(inner.reason)
    elif isinstance(inner, BaseException):
        chain.append(inner)
    for err in reversed(chain):
        if isinstance(err, u3.NameResolutionError):
            return "DNS lookup failed", True
        if isinstance(err, u3.NewConnectionError):
            refused = "refused" in str(err).lower()
            return ("connection refused" if refused else "connection failed"), True
        if isinstance(err, u3.ConnectTimeoutError | requests.ConnectTimeout):
            return f"connect timeout ({timeouts.connect:g} s)", True
        if isinstance(err, u3.ReadTimeoutError | requests.ReadTimeout):
            return f"read timeout ({timeouts.read:g} s)", False
        if isinstance(err, u3.SSLError | requests.exceptions.SSLError):
            return "TLS handshake failed", True
        if isinstance(err, u3.ProtocolError):
            return "connection dropped", False
    return type(exc).__name__, False
