"""Circuit breaker per provider + installation, its state in Redis so every worker shares it.

closed --N consecutive retryable failures--> open --cool-down--> half-open (ONE probe, across all
processes) --probe succeeds--> closed, --probe fails--> open again.

The admission side (is a call allowed, is it the probe?) runs inside the rate limiter's script
(:mod:`nexus_core.ratelimit`), so a request costs one Redis round trip for both; this module owns
the breaker's Lua functions, the recording of outcomes, and the Redis-unreachable policy:
**fail open** — a Redis outage must not stop every provider call — logged and counted.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import attrs
from loguru import logger

from nexus_core import ids, metrics

#: Lua functions shared with the limiter's admission script. Times are Redis server
#: milliseconds. The hash holds ``state`` (closed | open | half_open), ``failures`` and ``until``
#: (open: end of the cool-down; half_open: end of the probe's lease — if the probing process
#: dies, the next caller after the lease becomes the probe).
BREAKER_LUA = """
local function breaker_allow(key, now, probe_ttl)
  local h = redis.call('HMGET', key, 'state', 'until', 'failures')
  local state = h[1] or 'closed'
  if state == 'closed' then return {1, 0, state, tonumber(h[3]) or 0} end
  local until_ = tonumber(h[2]) or 0
  if now < until_ then return {-1, math.ceil(until_ - now), state, 0} end
  redis.call('HSET', key, 'state', 'half_open', 'until', string.format('%.3f', now + probe_ttl))
  return {2, 0, 'half_open', 0}
end

local function breaker_release_probe(key, now)
  redis.call('HSET', key, 'state', 'open', 'until', string.format('%.3f', now))
end

local function breaker_record(key, now, ok, probe, threshold, cooldown, ttl)
  local h = redis.call('HMGET', key, 'state', 'failures')
  local state = h[1] or 'closed'
  if ok == 1 then
    if probe == 1 then redis.call('DEL', key) return 'closed' end
    if state == 'closed' and (tonumber(h[2]) or 0) > 0 then
      redis.call('HSET', key, 'failures', 0)
    end
    return state
  end
  if probe == 1 or state == 'closed' then
    local failures = redis.call('HINCRBY', key, 'failures', 1)
    if probe == 1 or failures >= threshold then
      redis.call('HSET', key, 'state', 'open', 'until', string.format('%.3f', now + cooldown))
      state = 'open'
    end
    redis.call('PEXPIRE', key, ttl)
  end
  return state
end
"""

_RECORD_MAIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
return breaker_record(KEYS[1], now, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                      tonumber(ARGV[4]), tonumber(ARGV[5]))
"""

STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


@attrs.frozen
class BreakerPolicy:
    failure_threshold: int = 5
    #: Seconds the breaker stays open before a probe is let through.
    cooldown: float = 30.0


def breaker_key(provider_id: str, tenant_id: str, install_id: str) -> str:
    return "nexus:cb:" + ids.join_key(provider_id, tenant_id, install_id)


@attrs.frozen
class Admission:
    """What the admission script answered for one call."""

    #: Seconds slept for the rate limit before the call went out.
    waited: float = 0.0
    #: This call is the half-open probe: its outcome closes or re-opens the breaker.
    probe: bool = False
    breaker_state: str = "closed"
    failures: int = 0
    #: Redis was unreachable: the call went through unchecked.
    fail_open: bool = False


class CircuitBreaker:
    """Records call outcomes for one provider installation (admission: see the limiter)."""

    def __init__(
        self,
        redis: Any,
        *,
        provider_id: str,
        tenant_id: str,
        install_id: str,
        policy: BreakerPolicy,
        probe_ttl: float,
    ) -> None:
        self.redis = redis
        self.key = breaker_key(provider_id, tenant_id, install_id)
        self.provider_id = provider_id
        self.policy = policy
        #: Seconds a probe may take before another caller may probe instead.
        self.probe_ttl = probe_ttl
        self._record = redis.register_script(BREAKER_LUA + _RECORD_MAIN)
        # One series per installation: only with NEXUS_METRICS_TENANT_LABELS (bounded
        # cardinality); nexus_breakers{provider,state} counts them from Redis either way.
        self._gauge = (metrics.BREAKER_STATE.labels(provider_id, install_id)
                       if metrics.tenant_labels_on() else None)
        if self._gauge is not None:
            self._gauge.set(0)  # until the first admission says otherwise
        self._last_state = "closed"

    def observe(self, state: str) -> None:
        """Note the state the admission script saw (metrics, transition log)."""
        if state != self._last_state:
            if self._gauge is not None:
                self._gauge.set(STATE_VALUES[state])
            self._last_state = state

    def record(self, admission: Admission, ok: bool) -> None:
        """Record a call's outcome. ``ok=False`` only for failures of the retryable kind
        (connection errors, timeouts, 5xx after retries); anything the provider answered
        otherwise means it is up."""
        if admission.fail_open:
            return
        if ok and not admission.probe and admission.failures == 0:
            return  # the common case costs no Redis write
        ttl_ms = int(max(self.policy.cooldown * 10, 3600) * 1000)
        try:
            state = self._record(
                keys=[self.key],
                args=[int(ok), int(admission.probe), self.policy.failure_threshold,
                      int(self.policy.cooldown * 1000), ttl_ms],
            )
        except REDIS_DOWN_ERRORS as exc:
            fail_open(self.redis, "breaker", exc)
            return
        state = state.decode() if isinstance(state, bytes) else state
        if state != admission.breaker_state:
            from nexus_core.exporter import note_breaker

            note_breaker(self.redis, self.key, state)
        if state != admission.breaker_state and state != self._last_state:
            metrics.BREAKER_TRANSITIONS.labels(self.provider_id, state).inc()
            log = logger.warning if state == "open" else logger.info
            log("circuit breaker for {} is now {} (was {})", self.key, state,
                admission.breaker_state)
        self.observe(state)


# -- Redis unreachable: fail open -------------------------------------------------------------

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    REDIS_DOWN_ERRORS: tuple[type[BaseException], ...] = (
        _RedisConnectionError, _RedisTimeoutError
    )
except ImportError:  # pragma: no cover - redis is a dependency
    REDIS_DOWN_ERRORS = ()

#: After a failure, skip Redis for this many seconds: redis-py retries a dead server with
#: backoff (about 3 s per call with redis-py 8's defaults), and paying that on every provider
#: call would turn a Redis outage into a crawl.
REDIS_RETRY_INTERVAL = 15.0
_down_until: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_down_lock = threading.Lock()


def redis_down(redis: Any) -> bool:
    """True while a recent failure says this Redis is unreachable."""
    until = _down_until.get(redis.connection_pool)
    return until is not None and time.monotonic() < until


def fail_open(redis: Any, component: str, exc: BaseException) -> None:
    """Let the call through without the shared state; log once per outage window."""
    metrics.REDIS_FAIL_OPEN.labels(component).inc()
    pool = redis.connection_pool
    with _down_lock:
        first = not redis_down(redis)
        _down_until[pool] = time.monotonic() + REDIS_RETRY_INTERVAL
    if first:
        logger.warning(
            "Redis unreachable ({}: {}): {} FAILS OPEN — provider calls go through without "
            "the shared rate limit and circuit breaker; retrying Redis in {:.0f} s",
            type(exc).__name__, exc, component, REDIS_RETRY_INTERVAL,
        )
