"""Distributed rate limiter: one GCRA bucket per provider + provider account, in Redis.

Every worker process shares the bucket. One atomic Lua script (redis-py ``register_script``:
EVALSHA, reloaded on NOSCRIPT after a Redis restart) reads the Redis server's clock (``TIME``),
so the processes' own clocks never matter. A call *reserves* its slot: when the wait is short
(<= ``max_wait``) the script books the next free slot and the caller sleeps until it; when it is
longer, nothing is booked and :class:`~nexus_core.errors.RateLimited` tells the job to
reschedule itself instead of holding a worker.

A provider's 429 sets a shared cool-down for the key (``cooldown``): nobody sends before it ends,
and the bucket restarts empty, at one request per interval.

The same script also asks the installation's circuit breaker (:mod:`nexus_core.breaker`) whether
the call may go out, so a request costs one Redis round trip for both.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import TYPE_CHECKING, Any

from nexus_core import ids, metrics
from nexus_core.breaker import (
    BREAKER_LUA,
    REDIS_DOWN_ERRORS,
    Admission,
    CircuitBreaker,
    fail_open,
    redis_down,
)
from nexus_core.errors import ProviderUnavailable, RateLimited

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient

#: GCRA ("virtual scheduling"): the key holds the theoretical arrival time (TAT) of the next
#: request in ms. A call at ``now`` may go at ``max(TAT, now) - tolerance``; booking it moves
#: TAT one interval on. ``tolerance = (burst - 1) * interval`` lets ``burst`` calls through at
#: once on an idle key.
GCRA_LUA = """
local function fmt(ms) return string.format('%.3f', ms) end

local function gcra(key, now, interval, tolerance, max_wait, want)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local wait = tat - tolerance - now
  if wait < 0 then wait = 0 end
  if wait > max_wait then return {0, wait, 0} end
  local n = 1
  if want > 1 and wait == 0 then  -- a lease: up to `want` slots, only those free right now
    n = math.max(1, math.min(want, math.floor((now + tolerance - tat) / interval) + 1))
  end
  local new_tat = tat + n * interval
  redis.call('SET', key, fmt(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  return {1, wait, n}
end

local function cooldown(key, cd_key, now, ms, tolerance, reason)
  if redis.call('PTTL', cd_key) < ms then redis.call('SET', cd_key, reason, 'PX', ms) end
  local floor_tat = now + ms + tolerance
  local tat = tonumber(redis.call('GET', key)) or 0
  if tat < floor_tat then
    redis.call('SET', key, fmt(floor_tat), 'PX', math.ceil(floor_tat - now) + 1000)
  end
end
"""

#: KEYS: bucket [, breaker]. ARGV: interval ms, tolerance ms, max wait ms, probe lease ms,
#: slots wanted. Returns {verdict, wait in microseconds, breaker state, breaker failures, slots
#: granted}; verdict 1 = go (after the wait), 2 = go as the breaker's half-open probe, 0 = wait
#: too long (nothing booked), -1 = breaker open (wait = until it may probe). Several slots are
#: granted (a lease) only on a closed breaker without recent failures.
_ADMIT_MAIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local verdict, state, failures = 1, 'closed', 0
if #KEYS > 1 then
  local b = breaker_allow(KEYS[2], now, tonumber(ARGV[4]))
  if b[1] == -1 then return {-1, b[2] * 1000, b[3], 0, 0} end
  verdict, state, failures = b[1], b[3], b[4]
end
local want = tonumber(ARGV[5])
if verdict ~= 1 or failures > 0 then want = 1 end
local g = gcra(KEYS[1], now, tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), want)
if g[1] == 0 and verdict == 2 then breaker_release_probe(KEYS[2], now) end
if g[1] == 0 then verdict = 0 end
return {verdict, math.floor(g[2] * 1000), state, failures, g[3]}
"""

_COOLDOWN_MAIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
cooldown(KEYS[1], KEYS[2], now, tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] or '1')
return 1
"""

STATUS_TTL = 3600
#: Slot leases, for high limits only: when the bucket has room, one Redis call books up to
#: LEASE_MAX slots that this process spends within LEASE_WINDOW seconds without asking Redis
#: again (a round trip per request would cost more than the rest of the client together).
LEASE_WINDOW = 0.010
LEASE_MAX = 16


def limit_key(provider_id: str, account: str, bucket: str | None = None) -> str:
    """The bucket shared by every installation connected to one provider account; ``account``
    is an encoded scope (:func:`account_scope`). Injective: see :mod:`nexus_core.ids`."""
    key = "nexus:rl:" + ids.key_part(provider_id) + ids.SEP + account
    return key + (ids.SEP + ids.key_part(bucket) if bucket else "")


def account_scope(tenant_id: str, install_id: str, account_id: str | None) -> str:
    """Whose budget a request spends, encoded for :func:`limit_key`: the provider account's
    (every installation connected to it shares the provider's limit), or — without a known
    account id — the installation's own (two tenants' installations named alike never share
    one)."""
    if account_id:
        return ids.join_key("acct", account_id)
    return ids.join_key("inst", tenant_id, install_id)


class RateLimiter:
    """The shared bucket of one provider account.

    ``headroom`` requests of the burst are never used: the provider counts on its own clock when
    requests *arrive*, we on Redis's when they *leave*; one spare request absorbs the latency
    jitter between the two (at 10 req/s, 100 ms of it) so a client at the limit gets no 429s.

    Leases are used only where they cost at most a tenth of the burst (at least 200 req/s and a
    burst of at least 10 x rate x LEASE_WINDOW): a leased slot leaves up to LEASE_WINDOW after
    it was booked, so rate x LEASE_WINDOW more slots of the burst are kept unused, and the late
    ones still never exceed the provider's limit. The seed providers (1-4 req/s) never lease.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        provider_id: str,
        account: str,
        requests_per_second: float,
        burst_size: int,
        max_wait: float = 5.0,
        headroom: int = 1,
        error_context: dict[str, Any] | None = None,
        bucket: str | None = None,
    ) -> None:
        if requests_per_second <= 0 or burst_size < 1:
            raise ValueError(
                f"rate limit for {provider_id} must be > 0 req/s with a burst >= 1, got "
                f"{requests_per_second} req/s, burst {burst_size}"
            )
        self.redis = redis
        self.provider_id = provider_id
        #: The provider's named bucket this limiter meters (None: the account's main one).
        self.bucket = bucket
        self.key = limit_key(provider_id, account, bucket)
        self.cooldown_key = self.key + ":cooldown"
        self.status_key = self.key + ":status"
        self.requests_per_second = requests_per_second
        self.burst_size = burst_size
        self.max_wait = max_wait
        self.interval_ms = 1000.0 / requests_per_second
        late = math.ceil(requests_per_second * LEASE_WINDOW)
        self.lease_size = min(LEASE_MAX, late) if burst_size >= 10 * late >= 20 else 1
        if self.lease_size > 1:
            headroom += late
        self.tolerance_ms = (max(1, burst_size - headroom) - 1) * self.interval_ms
        self._leased = 0
        self._lease_until = 0.0
        self._lease_lock = threading.Lock()
        self._ctx = {"provider": provider_id, **(error_context or {})}
        self._admit = redis.register_script(BREAKER_LUA + GCRA_LUA + _ADMIT_MAIN)
        self._cooldown = redis.register_script(GCRA_LUA + _COOLDOWN_MAIN)
        self._wait_hist = metrics.RATE_LIMIT_WAIT.labels(provider_id)

    def acquire(self, breaker: CircuitBreaker | None = None, *, lease: bool = True) -> Admission:
        """Wait for a slot (sleeping at most ``max_wait`` in all) and, with ``breaker``, for the
        installation's circuit breaker to let the call through. ``lease=False`` (retries of a
        call already admitted) always asks Redis for exactly one slot.

        Raises :class:`RateLimited` when the wait would be longer, :class:`ProviderUnavailable`
        when the breaker is open (or another process holds the half-open probe).
        """
        if lease and self._leased:
            with self._lease_lock:
                if self._leased and time.monotonic() < self._lease_until:
                    self._leased -= 1
                    return Admission()
                self._leased = 0
        waited = 0.0
        probe = False
        state, failures = "closed", 0
        while True:
            if redis_down(self.redis):
                return Admission(waited, probe, state, failures, fail_open=True)
            keys = [self.key, breaker.key] if breaker is not None else [self.key]
            probe_ms = (breaker.probe_ttl if breaker is not None else 0) * 1000
            try:
                verdict, wait_us, raw_state, failures, granted = self._admit(
                    keys=keys,
                    args=[self.interval_ms, self.tolerance_ms, (self.max_wait - waited) * 1000,
                          probe_ms, self.lease_size if lease else 1],
                )
            except REDIS_DOWN_ERRORS as exc:
                fail_open(self.redis, "ratelimit", exc)
                return Admission(waited, probe, state, failures, fail_open=True)
            wait = wait_us / 1e6
            if breaker is not None:
                state = raw_state.decode() if isinstance(raw_state, bytes) else raw_state
                breaker.observe(state)
            if verdict == -1:
                metrics.BREAKER_REJECTIONS.labels(self.provider_id).inc()
                raise ProviderUnavailable(
                    f"circuit breaker {state.replace('_', '-')}: calls to {self.provider_id} "
                    f"for this installation are paused for {wait:.1f} s after repeated failures",
                    retry_after=wait,
                    hint="the job is deferred, not failed; it runs again after the cool-down",
                    **self._ctx,
                )
            if verdict == 0:
                metrics.RATE_LIMITED.labels(self.provider_id, "limiter").inc()
                which = f" (bucket {self.bucket})" if self.bucket else ""
                why = self.cooldown_reason()
                raise RateLimited(
                    f"shared rate limit of {self.provider_id}{which} "
                    f"({self.requests_per_second:g} req/s, burst {self.burst_size}) for this "
                    f"account asks for a {wait:.1f} s wait, more than the {self.max_wait:g} s "
                    "a worker may sleep" + (f"; paused: {why}" if why else ""),
                    retry_after=wait,
                    hint="the job reschedules itself; raise NEXUS_RATE_LIMIT_MAX_WAIT to sleep "
                    "longer in the worker instead",
                    **self._ctx,
                )
            if granted > 1:
                with self._lease_lock:
                    self._leased = granted - 1
                    self._lease_until = time.monotonic() + LEASE_WINDOW
            probe = probe or verdict == 2
            breaker, lease = None, False  # a second round (after a cool-down): one slot
            if wait <= 0:
                return Admission(waited, probe, state, failures)
            time.sleep(wait)
            waited += wait
            self._wait_hist.observe(wait)
            # A 429 may have started a cool-down while we slept on a slot booked before it.
            try:
                cooling = self.redis.pttl(self.cooldown_key) > 0
            except REDIS_DOWN_ERRORS as exc:
                fail_open(self.redis, "ratelimit", exc)
                cooling = False
            if not cooling:
                return Admission(waited, probe, state, failures)

    def drop_lease(self) -> None:
        """Forget leased slots, so the next call asks Redis (and the breaker) again."""
        self._leased = 0

    def cooldown(self, seconds: float, reason: str = "") -> None:
        """Nobody sharing this key sends for ``seconds`` (a provider 429's Retry-After).
        ``reason`` is kept with it for errors and ``nexus stats``."""
        metrics.RATE_LIMITED.labels(self.provider_id, "provider").inc()
        self.drop_lease()  # slots leased before the 429 must not go out during the cool-down
        if redis_down(self.redis):
            return
        try:
            self._cooldown(
                keys=[self.key, self.cooldown_key],
                args=[max(1, int(seconds * 1000)), self.tolerance_ms, reason[:200] or "1"],
            )
        except REDIS_DOWN_ERRORS as exc:
            fail_open(self.redis, "ratelimit", exc)

    def cooldown_reason(self) -> str | None:
        """Why this key is cooling down, when the cool-down was given a reason."""
        if redis_down(self.redis):
            return None
        try:
            raw = self.redis.get(self.cooldown_key)
        except REDIS_DOWN_ERRORS as exc:
            fail_open(self.redis, "ratelimit", exc)
            return None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return text if text and text != "1" else None


    def store_status(self, status: dict[str, Any]) -> None:
        """Share the provider's last rate-limit headers with health checks in other processes."""
        if redis_down(self.redis):
            return
        try:
            self.redis.set(self.status_key, json.dumps(status, default=str), ex=STATUS_TTL)
        except REDIS_DOWN_ERRORS as exc:
            fail_open(self.redis, "ratelimit", exc)

    def read_status(self) -> dict[str, Any] | None:
        if redis_down(self.redis):
            return None
        try:
            raw = self.redis.get(self.status_key)
        except REDIS_DOWN_ERRORS as exc:
            fail_open(self.redis, "ratelimit", exc)
            return None
        return json.loads(raw) if raw else None


def cooldowns(redis: RedisClient, limit: int = 100) -> list[dict[str, Any]]:
    """The shared cool-downs in force (up to ``limit``): provider, whose budget (``account``,
    or ``tenant_id``/``install_id`` without a known account), ``bucket``, seconds left and
    the reason given — paused accounts, for ``nexus stats``."""
    out: list[dict[str, Any]] = []
    prefix, suffix = "nexus:rl:", ":cooldown"
    for raw in redis.scan_iter(match=prefix + "*" + suffix, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        parts = ids.split_key(key[len(prefix):-len(suffix)])
        pipe = redis.pipeline(transaction=False)
        pipe.pttl(key)
        pipe.get(key)
        ttl, reason = pipe.execute()
        if not isinstance(ttl, int) or ttl <= 0 or len(parts) < 3:
            continue
        entry: dict[str, Any] = {"provider": ids.decode_part(parts[0])}
        if parts[1] == "acct":
            entry["account"] = ids.decode_part(parts[2])
            rest = parts[3:]
        else:
            entry["tenant_id"] = ids.decode_part(parts[2])
            entry["install_id"] = ids.decode_part(parts[3]) if len(parts) > 3 else None
            rest = parts[4:]
        entry["bucket"] = ids.decode_part(rest[0]) if rest else None
        entry["seconds"] = round(ttl / 1000, 1)
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else reason
        entry["reason"] = text if text and text != "1" else None
        out.append(entry)
        if len(out) >= limit:
            break
    return sorted(out, key=lambda e: -e["seconds"])
