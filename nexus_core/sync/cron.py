"""Periodic deltas (``nexus scheduler`` or ``run-worker --with-scheduler``): one delta per active
installation every NEXUS_DELTA_INTERVAL seconds, spread over the interval; health checks the same
way every NEXUS_HEALTH_INTERVAL seconds (:data:`HEALTH_CHECKS`).

Slot ``n`` is ``[n·I, (n+1)·I)`` — the same numbers in every scheduler, so schedulers started at
different times tick together. At the start of each slot the fan-out (:func:`enqueue_slot`)
walks the active installations in keyset batches (never all of them in memory) and, per batch,
makes two or three pipelined round trips to Redis: it claims every installation's slot (one Lua call
each, :data:`CLAIM_SLOT_LUA`), then schedules a delta for each claimed one with RQ's public
``create_job``/``schedule_job`` at the installation's *phase* in the slot: a stable hash of
(tenant, install) in ``[0, I)``. Each installation's deltas run ``I`` seconds apart and the
installations' deltas are spread evenly over the interval — no thundering herd at the slot
boundary; RQ's scheduler (every worker runs it) moves each one to ``integration-delta`` when it
is due. A scheduler that starts in the middle of a slot spreads the phases already past over
what is left of it.

Exactly once per installation and slot, with any number of schedulers: the claim refuses a slot
whose job exists (scheduled, queued, running, or finished within its result TTL) or is being
claimed, and skips an installation whose previous delta is still active (its cursor would be
read twice).

Why not RQ's ``CronScheduler``: its ``CronJob.enqueue`` pickles (our workers read JSON only) and
gives every run a random id (two schedulers enqueue every run twice); overriding its job class
relied on how its loop calls it. The loop here is small and ours: sleep to the next slot
boundary (waking every few seconds to notice a stop or the parent worker's exit), fan out.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from nexus_core import queues

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient
    from nexus_core.store import Store

DEFAULT_INTERVAL = 300
#: Installations per store read and per pair of Redis round trips.
DEFAULT_BATCH = 1000
#: Deltas whose phase is due within this many seconds are enqueued at once, not scheduled.
_NOW = 1.0

#: Claim installation KEYS[1]'s slot job ARGV[1] (job key prefix ARGV[2]). Returns 1 (claimed:
#: write the job now), 0 (this slot's job exists or is being claimed: another scheduler's) or 2
#: (the previous delta is still active: skipped). The active statuses are part of the source.
CLAIM_SLOT_LUA = """
if redis.call('EXISTS', ARGV[2] .. ARGV[1]) == 1 then return 0 end
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return 0 end
if current then
    local status = redis.call('HGET', ARGV[2] .. current, 'status')
    if status and ACTIVE[status] then return 2 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
""".replace("ACTIVE[status]", "({" + ", ".join(
    f"['{s}'] = true" for s in queues.ACTIVE_STATUSES) + "})[status]")

_claim_script: Any = None


def _claim() -> Any:
    global _claim_script
    if _claim_script is None:
        from nexus_core.queues import lua_script

        _claim_script = lua_script(CLAIM_SLOT_LUA)
    return _claim_script


def _interval(settings: Any) -> int:
    return int(settings.delta_interval)


def phase(tenant_id: str, install_id: str, interval: float, salt: str = "") -> float:
    """An installation's fixed offset in every slot, uniform over ``[0, interval)``; each
    periodic kind has its own ``salt`` (deltas none), so an installation's health check does not
    land on its delta."""
    digest = hashlib.blake2b(f"{salt}{tenant_id}\x1f{install_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 * interval


def due_at(slot: int, interval: float, offset: float, now: float) -> float:
    """When an installation with phase ``offset`` runs in ``slot``: at its phase; if that has
    passed (a scheduler starting mid-slot), at the same fraction of what is left of the slot
    (at once for a slot that is over)."""
    start = slot * interval
    target = start + offset
    if target >= now:
        return target
    end = start + interval
    return now + offset / interval * max(0.0, end - now)


@attrs.define
class FanOut:
    """What one slot's fan-out did."""

    slot: int
    #: Job ids written now (scheduled at their phase, or enqueued when due already).
    jobs: list[str] = attrs.Factory(list)
    #: Installations whose previous delta is still active.
    skipped: int = 0
    #: Installations whose slot another scheduler (or an earlier run) took.
    taken: int = 0
    installations: int = 0
    seconds: float = 0.0


def enqueue_slot(
    connection: RedisClient, store: Store, slot: int, *, interval: int, opts: Any,
    batch_size: int = DEFAULT_BATCH, now: float | None = None,
) -> list[str]:
    """Fan slot ``slot`` out: a delta for every active installation at its phase; returns the
    job ids written (not those another scheduler wrote for this slot)."""
    return fan_out(connection, store, slot, interval=interval, opts=opts,
                   batch_size=batch_size, now=now).jobs


def _delta_sync(key: Any) -> str:
    return queues.sync_key("delta", key.provider, key.tenant_id, key.install_id, None)


def _delta_job(key: Any, jid: str, opts: Any, result_ttl: int) -> dict[str, Any]:
    from nexus_core.sync.enqueue import sync_job

    return sync_job("delta", key.provider, key.tenant_id, key.install_id, None, job_id=jid,
                    run_id=None, opts=opts, result_ttl=result_ttl)


def health_sync(provider: str, tenant_id: str, install_id: str) -> str:
    """The logical key of an installation's periodic health checks (its slot jobs and the
    "still active" marker); apart from ``schedule_health_check``'s once-a-minute ids."""
    return queues.job_id("health", provider, tenant_id, install_id, "periodic")


def _health_sync(key: Any) -> str:
    return health_sync(key.provider, key.tenant_id, key.install_id)


def _health_job(key: Any, jid: str, opts: Any, result_ttl: int) -> dict[str, Any]:
    from rq import Callback

    return {"func": queues.JOB_HEALTH,
            "kwargs": {"provider": key.provider, "tenant_id": key.tenant_id,
                       "install_id": key.install_id},
            "job_id": jid, "on_failure": Callback(queues.ON_FAILURE), "timeout": 300,
            "result_ttl": result_ttl,
            "description": f"health {key.provider} {key.tenant_id}/{key.install_id} (periodic)"}


@attrs.frozen
class Periodic:
    """One kind of periodic job: which queue, the logical key of an installation's jobs (slot
    job ids and the "still active" marker derive from it), and the job's arguments."""

    name: str
    queue: str
    sync: Any
    job: Any
    salt: str = ""


#: The periodic jobs a scheduler fans out: deltas every NEXUS_DELTA_INTERVAL, health checks
#: every NEXUS_HEALTH_INTERVAL (0: none).
DELTAS = Periodic("delta", queues.DELTA, _delta_sync, _delta_job)
HEALTH_CHECKS = Periodic("health", queues.HEALTH, _health_sync, _health_job, salt="health\x1f")


def fan_out(
    connection: RedisClient, store: Store, slot: int, *, interval: int, opts: Any,
    batch_size: int = DEFAULT_BATCH, now: float | None = None, kind: Periodic = DELTAS,
) -> FanOut:
    """:func:`enqueue_slot`, with counts (see the module doc); ``kind`` :data:`HEALTH_CHECKS`
    fans out health checks the same way."""
    from rq.job import Job

    started = time.monotonic()
    queue = queues.queue(kind.queue, connection)
    prefix = Job.redis_job_namespace_prefix
    result_ttl = max(500, 2 * interval)
    out = FanOut(slot)
    claim = _claim()
    for batch in store.iter_installation_keys(batch_size=batch_size, status="active"):
        out.installations += len(batch)
        syncs = [kind.sync(k) for k in batch]
        ids = [queues.slot_job_id(sync, slot) for sync in syncs]
        with connection.pipeline(transaction=False) as pipe:
            for sync, jid in zip(syncs, ids, strict=True):
                claim(keys=[queues.active_key(sync)], args=[jid, prefix], client=pipe)
            answers = pipe.execute()
        clock = time.time() if now is None else now
        due_now = []
        with connection.pipeline(transaction=False) as pipe:
            for key, jid, answer in zip(batch, ids, answers, strict=True):
                if answer != 1:
                    if answer == 2:
                        out.skipped += 1
                    else:
                        out.taken += 1
                    continue
                job = queue.create_job(**kind.job(key, jid, opts, result_ttl))
                at = due_at(slot, interval,
                            phase(key.tenant_id, key.install_id, interval, kind.salt), clock)
                if at - clock < _NOW:
                    due_now.append(job)
                else:
                    queue.schedule_job(job, datetime.fromtimestamp(at, UTC), pipeline=pipe)
                out.jobs.append(jid)
            pipe.execute()
        if due_now:  # RQ's enqueue_job wants a transaction
            with connection.pipeline() as pipe:
                pipe.multi()
                for job in due_now:
                    queue.enqueue_job(job, pipeline=pipe)
                pipe.execute()
    out.seconds = time.monotonic() - started
    return out


#: Heartbeats of running schedulers: a sorted set of ``<host>:<pid>`` scored by when each
#: one's heartbeat expires, refreshed at every wake-up (at most every 5 s) and good for
#: :data:`HEARTBEAT_TTL` seconds; ``nexus doctor`` reads it (one ZRANGEBYSCORE, no key scan).
SCHEDULERS_KEY = "nexus:schedulers"
HEARTBEAT_TTL = 30


def _scheduler_name() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def running_schedulers(connection: Any, now: float | None = None) -> list[str]:
    """The schedulers whose heartbeat is fresh (``host:pid``)."""
    now = time.time() if now is None else now
    names = connection.zrangebyscore(SCHEDULERS_KEY, now, "+inf")
    return sorted(n.decode() if isinstance(n, bytes) else n for n in names)


class DeltaScheduler:
    """The loop: fan out each slot once, at its start (see the module doc) — deltas, and
    health checks on their own interval (NEXUS_HEALTH_INTERVAL; 0: none)."""

    def __init__(self, connection: RedisClient, settings: Any, *, parent_pid: int | None = None,
                 interval: int | None = None, store: Store | None = None,
                 health_interval: int | None = None) -> None:
        self.connection = connection
        self.settings = settings
        self.interval = interval or _interval(settings)
        self.health_interval = int(getattr(settings, "health_interval", 0)) \
            if health_interval is None else health_interval
        self.parent_pid = parent_pid
        self._store = store
        self.last_slot: int | None = None
        self.last_health_slot: int | None = None
        self.stop = threading.Event()

    @property
    def store(self) -> Any:
        if self._store is None:
            from nexus_core import runtime

            self._store = runtime.get_store(self.settings)
        return self._store

    def tick(self, now: float | None = None) -> FanOut | None:
        """Fan out the current slot unless this scheduler did already."""
        from nexus_core.sync.enqueue import SyncOptions

        now = time.time() if now is None else now
        slot = math.floor(now / self.interval)
        if slot == self.last_slot:
            return None
        try:
            result = fan_out(self.connection, self.store, slot, interval=self.interval,
                             opts=SyncOptions.from_settings(self.settings), now=now)
        except Exception as exc:  # store or Redis down: the next wake-up tries again
            logger.error("delta slot {} not enqueued: {}", slot, exc)
            return None
        self.last_slot = slot
        logger.info("delta slot {}: {} delta(s) spread over {} s for {} active installation(s) "
                    "({} still running, {} taken by another scheduler) in {:.1f} s", slot,
                    len(result.jobs), self.interval, result.installations, result.skipped,
                    result.taken, result.seconds)
        return result

    def tick_health(self, now: float | None = None) -> FanOut | None:
        """Fan out the current health-check slot unless this scheduler did already (or health
        checks are off)."""
        from nexus_core.sync.enqueue import SyncOptions

        if not self.health_interval:
            return None
        now = time.time() if now is None else now
        slot = math.floor(now / self.health_interval)
        if slot == self.last_health_slot:
            return None
        try:
            result = fan_out(self.connection, self.store, slot, interval=self.health_interval,
                             opts=SyncOptions.from_settings(self.settings), now=now,
                             kind=HEALTH_CHECKS)
        except Exception as exc:  # store or Redis down: the next wake-up tries again
            logger.error("health-check slot {} not enqueued: {}", slot, exc)
            return None
        self.last_health_slot = slot
        logger.info("health-check slot {}: {} check(s) spread over {} s for {} active "
                    "installation(s) ({} still running, {} taken by another scheduler)", slot,
                    len(result.jobs), self.health_interval, result.installations,
                    result.skipped, result.taken)
        return result

    def seconds_to_next_slot(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        wait = (math.floor(now / self.interval) + 1) * self.interval - now
        if self.health_interval:
            wait = min(wait, (math.floor(now / self.health_interval) + 1)
                       * self.health_interval - now)
        return wait

    def run(self) -> None:
        """Until SIGTERM/SIGINT or :attr:`stop` (or the parent worker's exit)."""
        def request_stop(signum: int, _frame: Any) -> None:
            logger.info("scheduler: stop requested (signal {})", signum)
            self.stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, request_stop)
        while not self.stop.is_set():
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                return  # never outlive `run-worker --with-scheduler`
            self.heartbeat()  # `nexus doctor` and the nexus_scheduler_up series read it
            self.tick()
            self.tick_health()
            self.stop.wait(min(5.0, self.seconds_to_next_slot()) + 0.001)
        with contextlib.suppress(Exception):
            self.connection.zrem(SCHEDULERS_KEY, _scheduler_name())

    def heartbeat(self) -> None:
        """Say that this scheduler runs (``nexus doctor`` checks that one does); forget
        schedulers whose heartbeat expired."""
        now = time.time()
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.zadd(SCHEDULERS_KEY, {_scheduler_name(): now + HEARTBEAT_TTL})
                pipe.zremrangebyscore(SCHEDULERS_KEY, "-inf", now)
                pipe.execute()
        except Exception as exc:  # Redis down: the tick reports it
            logger.debug("scheduler heartbeat not written: {}", exc)


def build_scheduler(
    connection: RedisClient | None = None, settings: Any = None, *, parent_pid: int | None = None
) -> DeltaScheduler:
    from nexus_core import runtime

    settings = settings or runtime.get_settings()
    connection = connection or runtime.get_redis(settings)
    return DeltaScheduler(connection, settings, parent_pid=parent_pid)


def run_scheduler(parent_pid: int | None = None) -> None:
    """Run the delta scheduler in the foreground until SIGTERM/SIGINT."""
    from nexus_core.plugins import load_plugins

    load_plugins()
    scheduler = build_scheduler(parent_pid=parent_pid)
    logger.info("scheduler: a delta per active installation every {} s, spread over the "
                "interval", scheduler.interval)
    if scheduler.health_interval:
        logger.info("scheduler: a health check per active installation every {} s, spread "
                    "over the interval", scheduler.health_interval)
    scheduler.run()


def start_in_background() -> Any:
    """The scheduler in a child process of this one (``run-worker --with-scheduler``)."""
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(
        target=run_scheduler, kwargs={"parent_pid": os.getpid()}, name="nexus-scheduler",
        daemon=True,
    )
    proc.start()
    return proc
