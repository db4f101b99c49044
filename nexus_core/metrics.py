"""Prometheus metrics of the SDK: plain metric objects in the default registry.

Import the object you need and update it; ``GET /metrics`` (``nexus_core.web``) serves the
default registry. Label values are bounded sets — provider ids, HTTP methods, status codes,
breaker states — except ``install_id`` on :data:`BREAKER_STATE`, which a process only creates for
installations it talked to.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# -- HTTP client (nexus_core.http) ----------------------------------------------------------

HTTP_REQUESTS = Counter(
    "nexus_http_requests_total",
    "Provider API requests by final outcome: HTTP status code, 'error' (no answer), or "
    "'rate_limited' / 'breaker_open' (not sent)",
    ["provider", "method", "status"],
)
HTTP_DURATION = Histogram(
    "nexus_http_request_duration_seconds",
    "Provider API request latency, retries and rate-limit waits included",
    ["provider", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_RETRIES = Counter(
    "nexus_http_retries_total",
    "Provider API attempts that were retried, by reason (status code, connect, read, "
    "rate_limited, token_expired)",
    ["provider", "reason"],
)
TOKEN_REFRESHES = Counter(
    "nexus_http_token_refreshes_total",
    "Expired-token answers, by outcome (ok, failed, still_expired, no_refresh)",
    ["provider", "outcome"],
)

# -- Rate limiting (nexus_core.ratelimit) ---------------------------------------------------

RATE_LIMIT_WAIT = Histogram(
    "nexus_rate_limit_wait_seconds",
    "Time slept waiting for the shared rate limit (only waits > 0 are observed)",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
RATE_LIMITED = Counter(
    "nexus_rate_limited_total",
    "RateLimited raised (limiter: shared wait over the threshold), 429s or quota answers "
    "received (provider), quota reserve reached (quota_reserve)",
    ["provider", "source"],
)

# -- Circuit breaker (nexus_core.breaker) ---------------------------------------------------

BREAKER_STATE = Gauge(
    "nexus_breaker_state",
    "Circuit breaker state last seen by this process: 0 closed, 1 half-open, 2 open",
    ["provider", "install_id"],
)
BREAKER_TRANSITIONS = Counter(
    "nexus_breaker_transitions_total",
    "Circuit breaker transitions made by this process, by new state",
    ["provider", "state"],
)
BREAKER_REJECTIONS = Counter(
    "nexus_breaker_rejections_total",
    "Calls failed fast with ProviderUnavailable because the breaker was open or probing",
    ["provider"],
)

# -- Redis availability ---------------------------------------------------------------------

REDIS_FAIL_OPEN = Counter(
    "nexus_redis_fail_open_total",
    "Calls let through without the shared limiter/breaker because Redis was unreachable",
    ["component"],
)
