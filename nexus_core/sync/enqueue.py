"""Starting syncs: the options, job ids and enqueueing of backfill and delta chunks.

Everything that puts a sync job on a queue goes through here (the service, the web app's OAuth
callback, the cron scheduler and a running job's continuation), so "one active sync per
installation and stream" and the retry policy hold on every path. The jobs themselves are in
:mod:`nexus_core.sync.engine`.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

import attrs

from nexus_core import queues
from nexus_core import runtime as rt

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient, SyncStore

#: Stored as a stream's backfill cursor once its last page is committed.
BACKFILL_DONE = "nexus:backfill-complete"
DEFAULT_TIME_BUDGET = 60.0
DEFAULT_LEASE_TTL = 15.0
DEFAULT_MAX_DEFERRALS = 100


_options_cache: dict[int, tuple[Any, SyncOptions]] = {}


@attrs.frozen
class SyncOptions:
    """The sync engine's knobs, read from settings (one place, validated)."""

    time_budget: float = DEFAULT_TIME_BUDGET
    lease_ttl: float = DEFAULT_LEASE_TTL
    max_deferrals: int = DEFAULT_MAX_DEFERRALS
    tenant_backfill_concurrency: int = 1
    max_retries: int = 3
    backoff_delay_ms: int = 2000

    @classmethod
    def from_settings(cls, settings: Any) -> SyncOptions:
        cached = _options_cache.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1]
        opts = cls._parse(settings)
        _options_cache.clear()  # one settings object per process (tests switch between them)
        _options_cache[id(settings)] = (settings, opts)
        return opts

    @classmethod
    def _parse(cls, settings: Any) -> SyncOptions:
        return cls(
            time_budget=settings.backfill_time_budget,
            lease_ttl=settings.job_lease_ttl,
            max_deferrals=settings.max_deferrals,
            tenant_backfill_concurrency=settings.backfill_tenant_concurrency,
            max_retries=settings.max_retries,
            backoff_delay_ms=settings.backoff_delay_ms,
        )


# -- enqueueing ------------------------------------------------------------------------------


#: One generator for the jitter of every job's retry intervals (a new ``random.Random()`` per
#: job seeds itself from the OS: 10 us, a tenth of a periodic delta's enqueue).
_JITTER = random.Random()  # noqa: S311 - jitter, not cryptography


def _retry(opts: SyncOptions) -> Any:
    if opts.max_retries <= 0:
        return None
    from rq import Retry

    return Retry(max=opts.max_retries, interval=queues.backoff_intervals(
        opts.max_retries, opts.backoff_delay_ms, rng=_JITTER))


def job_options(opts: SyncOptions, kind: str) -> dict[str, Any]:
    from rq import Callback

    timeout = int(max(600, opts.time_budget * 3)) if kind in ("backfill", "delta") else 300
    return {
        "retry": _retry(opts),
        "on_failure": Callback(queues.ON_FAILURE),
        "timeout": timeout,
    }


def sync_job(
    kind: str,
    provider: str,
    tenant_id: str,
    install_id: str,
    stream: str | None,
    *,
    job_id: str,
    run_id: str | None,
    chunk: int = 0,
    opts: SyncOptions,
    result_ttl: int | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The arguments of RQ's ``enqueue_call`` / ``create_job`` for one backfill/delta chunk:
    function, JSON kwargs, id, description, retry policy, failure callback, timeout; backfills
    carry the tenant's RQ ``RateLimit``."""
    from rq import RateLimit

    extra: dict[str, Any] = {}
    if kind == "backfill":
        extra["rate_limit"] = RateLimit(
            queues.backfill_rate_limit_key(tenant_id), opts.tenant_backfill_concurrency
        )
    if result_ttl is not None:
        extra["result_ttl"] = result_ttl
    if meta:
        extra["meta"] = meta
    return {
        "func": queues.JOB_BACKFILL if kind == "backfill" else queues.JOB_DELTA,
        "kwargs": {"provider": provider, "tenant_id": tenant_id, "install_id": install_id,
                   "stream": stream, "run_id": run_id, "chunk": chunk},
        "job_id": job_id,
        "description": f"{kind} {provider} {tenant_id}/{install_id} {queues.stream_key(stream)}"
        + (f" (continued {chunk})" if chunk else ""),
        **job_options(opts, kind),
        **extra,
    }


def enqueue_sync(
    connection: RedisClient,
    kind: str,
    provider: str,
    tenant_id: str,
    install_id: str,
    stream: str | None,
    *,
    job_id: str,
    run_id: str | None,
    chunk: int = 0,
    opts: SyncOptions,
    unique: bool = False,
    result_ttl: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Any:
    """Enqueue one backfill/delta chunk (:func:`sync_job`). Deltas may be ``unique`` since RQ
    refuses ``unique`` together with a rate limit."""
    name = queues.BACKFILL if kind == "backfill" else queues.DELTA
    return queues.queue(name, connection).enqueue_call(
        **sync_job(kind, provider, tenant_id, install_id, stream, job_id=job_id, run_id=run_id,
                   chunk=chunk, opts=opts, result_ttl=result_ttl, meta=meta),
        unique=unique,
    )


def start_sync(
    connection: RedisClient,
    store: SyncStore,
    kind: str,
    provider: str,
    tenant_id: str,
    install_id: str,
    stream: str | None = None,
    *,
    opts: SyncOptions,
) -> str:
    """Start a backfill or delta unless one is active for this installation and stream; returns
    the id of the job that is (now) active. A backfill whose every stream is complete starts
    over (a full re-sync); an interrupted one resumes from its checkpoints. A periodic delta
    scheduled for later in its slot (:mod:`nexus_core.sync.cron`) is run now instead."""
    sync = queues.sync_key(kind, provider, tenant_id, install_id, stream)
    new_id = queues.chunk_job_id(sync, uuid.uuid4().hex, 0)
    existing = queues.claim_active(connection, sync, new_id)
    if existing is not None:
        if kind == "delta":
            _run_now_if_scheduled(connection, existing)
        return existing
    try:
        inst = rt.load_installation(store, tenant_id, install_id, provider)
        if kind == "backfill":
            reset_completed_backfill(store, inst, stream)
        run_id = store.start_run(tenant_id, install_id, kind, stream, job_id=new_id)
        try:
            enqueue_sync(connection, kind, provider, tenant_id, install_id, stream,
                         job_id=new_id, run_id=run_id, opts=opts)
        except Exception as exc:
            store.finish_run(tenant_id, run_id, "failed", error=f"not enqueued: {exc}")
            raise
    except Exception:
        queues.handover_active(connection, sync, new_id, None)
        raise
    return new_id


#: Job meta of a sync started with Redis alone (:func:`start_sync_by_job`): the job does what
#: :func:`start_sync` would have done with the store.
START_META = "nexus_start"


def start_sync_by_job(
    connection: RedisClient,
    kind: str,
    provider: str,
    tenant_id: str,
    install_id: str,
    stream: str | None = None,
    *,
    opts: SyncOptions,
) -> str:
    """:func:`start_sync` with Redis alone (``nexus sync ... --wait``, which then follows the
    job with :mod:`nexus_core.sync.follow`): the first job checks the installation, starts a
    completed backfill over and records the run itself; a problem ends the sync as failed
    with its reason, which the follower reports. Returns the active job's id."""
    sync = queues.sync_key(kind, provider, tenant_id, install_id, stream)
    new_id = queues.chunk_job_id(sync, uuid.uuid4().hex, 0)
    existing = queues.claim_active(connection, sync, new_id)
    if existing is not None:
        if kind == "delta":
            _run_now_if_scheduled(connection, existing)
        return existing
    try:
        enqueue_sync(connection, kind, provider, tenant_id, install_id, stream, job_id=new_id,
                     run_id=None, opts=opts, meta={START_META: True})
    except Exception:
        queues.handover_active(connection, sync, new_id, None)
        raise
    return new_id


def _run_now_if_scheduled(connection: RedisClient, job_id: str) -> None:
    """Move a scheduled delta to the front of its queue. Whoever takes it out of the
    ScheduledJobRegistry (this, or RQ's scheduler when it falls due) enqueues it."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    queue = queues.queue(queues.DELTA, connection)
    try:
        job = Job.fetch(job_id, connection=connection, serializer=queue.serializer)
    except NoSuchJobError:
        return
    if job.get_status(refresh=False) != JobStatus.SCHEDULED:
        return
    if connection.zrem(queue.scheduled_job_registry.key, job_id):
        queue.enqueue_job(job, at_front=True)


def sync_streams(inst_config: dict[str, Any], provider: Any, stream: str | None) -> list[str]:
    if stream is not None:
        return [stream]
    configured = inst_config.get("streams")
    return list(configured or provider.stream_names or ("default",))


def reset_completed_backfill(store: SyncStore, inst: Any, stream: str | None) -> None:
    """A backfill whose every stream is complete starts over: forget their cursors."""
    from nexus_core.plugins import load_plugins

    names = sync_streams(inst.config, load_plugins().provider(inst.provider), stream)
    cps = [store.get_checkpoint(inst.tenant_id, inst.install_id, s, "backfill") for s in names]
    if all(cp.cursor == BACKFILL_DONE for cp in cps):
        for s in names:
            store.reset_checkpoint(inst.tenant_id, inst.install_id, s, "backfill")
