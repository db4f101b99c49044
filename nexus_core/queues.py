"""Queue names, concurrency, job ids, retry policy and the Redis connection: the conventions every
producer (service, web app, scheduler) and consumer (worker) share.

Importing this module is cheap (no rq, no redis); the functions that need them import lazily.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from nexus_core import ids

if TYPE_CHECKING:
    import redis

    from nexus_core.config import Settings

BACKFILL = "integration-backfill"
DELTA = "integration-delta"
WEBHOOK = "integration-webhook"
HEALTH = "integration-health"
ALL_QUEUES: tuple[str, ...] = (BACKFILL, DELTA, WEBHOOK, HEALTH)
#: The order a worker listening on every queue dequeues in: short, latency-sensitive work first,
#: so a burst of long backfill chunks never sits in front of a delta or a webhook.
WORKER_QUEUE_ORDER: tuple[str, ...] = (WEBHOOK, DELTA, HEALTH, BACKFILL)

#: The seed's per-queue concurrency at INTEGRATION_WORKER_CONCURRENCY=5 (the default).
BASE_CONCURRENCY: dict[str, int] = {BACKFILL: 2, DELTA: 5, WEBHOOK: 10, HEALTH: 3}

#: Dotted paths of the job functions (RQ stores the path, not a pickled function). A wire
#: format: queued jobs of every release name them, so they never change (nexus_core.jobs
#: resolves them to the code in nexus_core.sync; tests/sync/test_compat.py runs old jobs).
JOB_BACKFILL = "nexus_core.jobs.run_backfill"
JOB_DELTA = "nexus_core.jobs.run_delta"
JOB_WEBHOOK = "nexus_core.jobs.run_webhook"
JOB_HEALTH = "nexus_core.jobs.run_health_check"
#: Field of a webhook job's RQ hash holding the delivery's raw body (not in the JSON arguments).
WEBHOOK_BODY_FIELD = "nexus_webhook_body"
#: RQ ``on_failure`` callback of every sync job (fail-fast classification, run bookkeeping).
ON_FAILURE = "nexus_core.jobs.on_job_failure"

#: Job statuses that mean "this job will still run": a second start returns it.
ACTIVE_STATUSES: tuple[str, ...] = (
    "queued", "started", "scheduled", "deferred", "rate_limited", "created", "ready_to_enqueue",
)

#: Redis key prefixes owned by the sync engine (besides RQ's own ``rq:`` keys).
LEASE_PREFIX = "nexus:lease:"
ACTIVE_PREFIX = "nexus:active:"
RECOVERY_CLAIM_PREFIX = "nexus:recovering:"
#: When a recovery sweep first saw a job taken off its queue but never started.
UNSTARTED_PREFIX = "nexus:unstarted:"

#: Lua: claim "the active job" of a logical sync (installation + stream + kind). If the marker
#: names a job that is still active (queued, started, scheduled, rate limited, ...), return that
#: id and change nothing; otherwise point the marker at ARGV[1] and return nil. Atomic, so two
#: concurrent ``start_backfill`` calls enqueue one job. RQ's ``unique=True`` cannot do this for
#: us: it refuses a job id while *any* job hash with that id exists (finished and failed jobs
#: included) and it is not supported together with ``RateLimit`` (rq 3.0 raises ValueError).
#: KEYS[1] marker key; ARGV[1] new job id, ARGV[2] job key prefix, ARGV[3..] active statuses.
CLAIM_ACTIVE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
    local status = redis.call('HGET', ARGV[2] .. current, 'status')
    if status then
        for i = 3, #ARGV do
            if status == ARGV[i] then return current end
        end
    end
end
redis.call('SET', KEYS[1], ARGV[1])
return false
"""

#: Lua: move the marker from one job to its continuation (or delete it with ARGV[2] == '')
#: only if it still names ARGV[1]. KEYS[1] marker key.
HANDOVER_ACTIVE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
    return 1
end
return 0
"""


def concurrency(queue: str, worker_concurrency: int = 5) -> int:
    """The seed's concurrency for ``queue``, scaled by INTEGRATION_WORKER_CONCURRENCY / 5."""
    return max(1, round(BASE_CONCURRENCY[queue] * worker_concurrency / 5))


#: RQ 3 accepts only ``[A-Za-z0-9_-]`` in job ids: ids are encoded part by part with
#: :func:`nexus_core.ids.join_key` (injective: distinct (kind, provider, tenant, install, ...)
#: never share a job id, whatever the ids are).
SEP = ids.SEP


def job_id(kind: str, provider: str, tenant_id: str, install_id: str, *extra: str) -> str:
    """Deterministic job id: one active backfill per installation and stream, one delta per
    cron slot, one webhook job per delivery and installation."""
    return ids.join_key("nexus", kind, provider, tenant_id, install_id, *extra)


def stream_key(stream: str | None) -> str:
    """The id part for a stream; ``None`` (every stream of the installation) is ``all``."""
    return "all" if stream is None else stream


def sync_key(kind: str, provider: str, tenant_id: str, install_id: str, stream: str | None) -> str:
    """The logical sync a job belongs to: its continuations and retries share this key."""
    return job_id(kind, provider, tenant_id, install_id, stream_key(stream))


def chunk_job_id(sync: str, run_id: str, chunk: int) -> str:
    """Job id of chunk ``chunk`` (0 = first, then one per continuation) of run ``run_id``."""
    return f"{sync}{SEP}{run_id[:12]}{SEP}{chunk}"


def slot_job_id(sync: str, slot: int) -> str:
    """Job id of a periodic (cron) job for time slot ``slot``: the same in every scheduler."""
    return f"{sync}{SEP}slot{slot}"


def active_key(sync: str) -> str:
    return ACTIVE_PREFIX + sync


def lease_key(job_id_: str) -> str:
    return LEASE_PREFIX + job_id_


def backfill_rate_limit_key(tenant_id: str) -> str:
    """The RQ ``RateLimit`` key that caps one tenant's concurrently queued/running backfill
    chunks (NEXUS_BACKFILL_TENANT_CONCURRENCY): a tenant's 10,000-page backfill occupies at most
    that many workers and its chunks round-robin behind each other."""
    return "nexus-backfill-" + ids.key_part(tenant_id)


def backoff_intervals(
    max_retries: int, backoff_delay_ms: int, rng: random.Random | None = None
) -> list[int]:
    """Exponential backoff with jitter for RQ's ``Retry(interval=[...])``: attempt ``n`` waits a
    random time in ``[d * 2**n / 2, d * 2**n]`` (``d`` = INTEGRATION_BACKOFF_DELAY), rounded up
    to RQ's whole seconds (0 stays 0: retry at once)."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    base = backoff_delay_ms / 1000.0
    out = []
    for n in range(max_retries):
        top = base * (2**n)
        out.append(math.ceil(rng.uniform(top / 2, top)) if top > 0 else 0)
    return out


def retry_policy(max_retries: int, backoff_delay_ms: int) -> Any:
    """RQ ``Retry`` for INTEGRATION_MAX_RETRIES / INTEGRATION_BACKOFF_DELAY (None: no retry)."""
    if max_retries <= 0:
        return None
    from rq import Retry

    return Retry(max=max_retries, interval=backoff_intervals(max_retries, backoff_delay_ms))


def redis_connection(settings: Settings | None = None, url: str | None = None) -> redis.Redis:
    """The one place a Redis client is built from settings (queues, locks, rate limits,
    breakers, the web app, the CLI): the master the sentinels name when REDIS_SENTINELS is set
    (:func:`sentinel_master`), else REDIS_URL (or REDIS_HOST/PORT/PASSWORD/DB, or the
    development Redis); ``url`` forces a plain URL. Sane timeouts either way."""
    import redis as redis_lib

    options: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 30,
                               "health_check_interval": 30, **_driver_info()}
    if url is None:
        from nexus_core.config import get_settings
        from nexus_core.embedded import resolve_url

        settings = settings or get_settings()
        if settings.redis_sentinels:
            return sentinel_master(settings, **options)
        url = resolve_url(settings)
    return redis_lib.Redis.from_url(url, **options)


def sentinel_master(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the master REDIS_SENTINEL_MASTER, found through REDIS_SENTINELS (redis-py's
    ``Sentinel.master_for``). Each new connection asks the sentinels where the master is, and
    a connection that finds the old master gone or demoted (READONLY) is dropped, so after a
    failover the client reaches the promoted replica by itself: commands fail (ConnectionError)
    only while the sentinels have no master to give.

    The master's password, user name, database and TLS come from REDIS_URL when it is set (its
    host and port are not used), else REDIS_PASSWORD and REDIS_DB; REDIS_SENTINEL_PASSWORD is
    the sentinels' own. RQ rebuilds this client in its scheduler and pool processes from
    ``connection_pool.connection_kwargs``: the sentinel-managed connection class and its pool
    proxy come along, so those follow failovers too (tests/contract/test_rq_sentinel.py)."""
    from redis.connection import parse_url
    from redis.sentinel import Sentinel

    master: dict[str, Any] = {"password": settings.redis_password or None,
                              "db": settings.redis_db}
    if settings.redis_url_setting:
        parsed = parse_url(settings.redis_url_setting)
        master = {k: parsed[k] for k in ("username", "password", "db") if parsed.get(k)}
        master.setdefault("db", 0)
        if settings.redis_url_setting.lower().startswith("rediss:"):
            master["ssl"] = True
    probe = {"password": settings.redis_sentinel_password or None,
             "socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=probe)
    return sentinel.master_for(settings.redis_sentinel_master, **master, **options)


_driver: dict[str, Any] | None = None


def _driver_info() -> dict[str, Any]:
    """redis-py's client name and version for ``CLIENT SETINFO``, resolved once: left to
    redis-py, every new connection looks its own version up in the installed packages' metadata
    (~1 ms) — once per job in a forked work-horse, whose pool starts empty."""
    global _driver
    if _driver is None:
        try:
            from redis.driver_info import DriverInfo
        except ImportError:  # an older redis-py: it has no per-connection lookup either
            _driver = {}
        else:
            _driver = {"driver_info": DriverInfo()}
    return _driver


def lua_script(source: str) -> Any:
    """A redis-py ``Script`` bound to no client (pass ``client=``): EVALSHA, loaded on first
    use by each server, instead of sending the source with every EVAL."""
    from redis.commands.core import Script

    # redis-py types ``registered_client`` as required; None is its documented unbound form.
    return Script(None, source.encode())  # type: ignore[arg-type]


_CLAIM_ACTIVE = lua_script(CLAIM_ACTIVE_LUA)
_HANDOVER_ACTIVE = lua_script(HANDOVER_ACTIVE_LUA)


def queue(name: str, connection: Any) -> Any:
    """An RQ queue using the JSON serializer — job payloads are never pickled."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(name, connection=connection, serializer=JSONSerializer)


def claim_active(connection: Any, sync: str, new_job_id: str) -> str | None:
    """Make ``new_job_id`` the active job of ``sync`` unless one is active: returns the active
    job's id (nothing changed) or None (claimed: enqueue ``new_job_id`` now)."""
    from rq.job import Job

    current = _CLAIM_ACTIVE(
        keys=[active_key(sync)], args=[new_job_id, Job.redis_job_namespace_prefix,
                                       *ACTIVE_STATUSES],
        client=connection,
    )
    if current is None:
        return None
    return current.decode() if isinstance(current, bytes) else str(current)


def handover_active(connection: Any, sync: str, from_job_id: str, to_job_id: str | None) -> bool:
    """Point ``sync``'s marker at ``to_job_id`` (None: clear it) if it still names
    ``from_job_id``."""
    return bool(_HANDOVER_ACTIVE(keys=[active_key(sync)], args=[from_job_id, to_job_id or ""],
                                 client=connection))


def active_job_id(connection: Any, sync: str) -> str | None:
    value = connection.get(active_key(sync))
    return value.decode() if isinstance(value, bytes) else value


def queue_stats(connection: Any, worker_concurrency: int = 5) -> dict[str, Any]:
    """Depth and registry counts per queue (failed = the dead-letter queue), the workers on
    each queue beside the configured concurrency (INTEGRATION_WORKER_CONCURRENCY), the
    per-tenant backfill rate limits in use, and the provider accounts paused by a shared
    cool-down (a 429, a quota answer, the quota reserve) with the seconds left and why."""
    from rq import Worker
    from rq.rate_limit import RateLimitRegistry

    q_stats: dict[str, Any] = {}
    workers = Worker.all(connection=connection)
    for name in ALL_QUEUES:
        q = queue(name, connection)
        q_stats[name] = {
            "queued": q.count,
            "started": q.started_job_registry.count,
            "scheduled": q.scheduled_job_registry.count,
            "deferred": q.deferred_job_registry.count,
            "finished": q.finished_job_registry.count,
            "failed": q.failed_job_registry.count,
            "canceled": q.canceled_job_registry.count,
            "workers": sum(1 for w in workers if name in w.queue_names()),
            "concurrency": concurrency(name, worker_concurrency),
        }
    limits = {}
    for reg in RateLimitRegistry.all(connection):
        if reg.key.startswith("nexus-backfill-"):
            limits[reg.key] = {"running": reg.get_allowed_job_count(),
                               "waiting": reg.get_rate_limited_job_count(),
                               "concurrency": reg.concurrency}
    from nexus_core.ratelimit import cooldowns

    return {"queues": q_stats, "workers": len(workers), "rate_limits": limits,
            "worker_concurrency": worker_concurrency, "paused": cooldowns(connection)}
