"""The job harness: what runs around every job's own work.

* the job's environment (settings, options, plugins, store, Redis, the RQ job) and its log
  context (:func:`job_env`);
* its lease (:mod:`nexus_core.sync.lease`) and the SIGTERM handling that lets a sync finish its
  page (:func:`request_stop`);
* the first store reads, done by the worker before it forks the job's work-horse
  (:func:`preload`);
* deferral (:func:`defer`) and the failure policy (:func:`on_job_failure`): retries with RQ's
  ``Retry`` (exponential backoff with jitter); ``RateLimited``/``ProviderUnavailable`` return a
  ``Retry`` for ``retry_after`` instead (RQ counts those separately, so no retry is consumed);
  auth and other permanent errors fail fast into the FailedJobRegistry, the dead-letter queue.
"""

from __future__ import annotations

import math
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from nexus_core import queues
from nexus_core import runtime as rt
from nexus_core.errors import (
    AuthError,
    ConfigError,
    NexusError,
    NotFound,
    PluginError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from nexus_core.sync import follow
from nexus_core.sync.enqueue import SyncOptions
from nexus_core.sync.lease import Lease, in_work_horse

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient, SyncStore

#: Set by SIGTERM (or :func:`request_stop`) while a job runs: a sync finishes its page, commits
#: it and leaves a continuation.
stop_event = threading.Event()


@contextmanager
def _sigterm_finishes_page() -> Iterator[None]:
    """SIGTERM during a job asks it to finish its page, commit and leave a continuation.
    In a forked work-horse the previous handler is SIG_DFL; in-process (SimpleWorker) it is the
    worker's warm-shutdown handler, which is chained."""
    stop_event.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        stop_event.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def request_stop() -> None:
    """Ask the running sync job (this process) to stop after its current page."""
    stop_event.set()


class _ProcessStore:
    """The process's store (:func:`nexus_core.runtime.get_store`), fetched at its first use: a
    work-horse whose job reads nothing from the store (an empty delta with a preloaded state)
    never sets up a connection pool of its own."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings

    def __getattr__(self, name: str) -> Any:
        return getattr(rt.get_store(self._settings), name)


# -- preloading, before the fork -------------------------------------------------------------

#: (job id, SyncState) read by the worker just before it forked this job's work-horse.
_preloaded: tuple[str, Any] | None = None

_KINDS = {queues.JOB_BACKFILL: "backfill", queues.JOB_DELTA: "delta"}
#: The operation label of each job function's metrics.
_OPERATIONS = {**_KINDS, queues.JOB_WEBHOOK: "webhook", queues.JOB_HEALTH: "health"}
#: Jobs that need only the installation (and credentials): read through the worker's copies.
_INSTALLATION_JOBS = (queues.JOB_WEBHOOK, queues.JOB_HEALTH)


def preload(job: Any) -> None:
    """Called by the worker for the job it is about to fork a work-horse for: read the job's
    first store reads (installation, credentials, checkpoints — one transaction) on the
    worker's warm connection, so the horse inherits them instead of opening a database
    connection of its own. Anything unexpected: nothing is preloaded and the job reads (and
    reports) it itself."""
    global _preloaded
    _preloaded = None
    try:
        kind = _KINDS.get(job.func_name)
        if kind is None and job.func_name not in _INSTALLATION_JOBS:
            return
        from nexus_core.plugins import load_plugins

        kw = job.kwargs
        prov = load_plugins().provider(kw["provider"])
        creds = rt.reads_credentials(prov)
        if kind is None:
            from nexus_core.sync import installations

            state = installations.cache(job.connection).state(
                rt.get_store(), kw["tenant_id"], kw["install_id"], credentials=creds)
        else:
            state = rt.get_store().load_sync_state(kw["tenant_id"], kw["install_id"], kind,
                                                   credentials=creds)
    except Exception as exc:
        logger.debug("no preload for job {}: {}", job.id, exc)
        return
    _preloaded = (job.id, state)


def forget_preload() -> None:
    """The worker's side, once the horse is forked: credentials stay in the horse only."""
    global _preloaded
    _preloaded = None


def take_preloaded(job: Any) -> Any:
    """The state :func:`preload` read for ``job`` (once), or None."""
    global _preloaded
    found, _preloaded = _preloaded, None
    if found is None or job is None or found[0] != job.id:
        return None
    return found[1]


# -- warming up, once per worker process ------------------------------------------------------

_warmed: set[str] = set()


def _warm_store() -> None:
    # The engine and key ring, and the compiled SQL of a job's statements: a horse inherits
    # them instead of building them again.
    rt.get_store().warm_up()


def _warm_installations() -> None:
    # The worker's copies of installations, listening for changes before the first job reads.
    from nexus_core.sync import installations

    installations.cache(rt.get_redis())


def _warm_webhook() -> None:
    from nexus_core.converters import structure
    from nexus_core.models import WebhookRequest
    from nexus_core.sync import webhook  # noqa: F401

    # cattrs builds a class's structuring code at its first use: here, not in every horse.
    structure({"method": "POST", "url": "http://warm.up/", "headers": {"a": "b"}, "body": b"",
               "received_at": "2000-01-01T00:00:00Z"}, WebhookRequest)
    _warm_store()
    _warm_installations()


def _warm_sync() -> None:
    import nexus_core.http  # noqa: F401 - the provider session and what it imports
    import nexus_core.oauth  # noqa: F401
    from nexus_core.sync import engine  # noqa: F401

    _warm_store()


def _warm_health() -> None:
    import nexus_core.health  # noqa: F401
    import nexus_core.http  # noqa: F401
    from nexus_core.sync import health  # noqa: F401

    _warm_store()
    _warm_installations()


_WARMERS = {queues.JOB_WEBHOOK: _warm_webhook, queues.JOB_BACKFILL: _warm_sync,
            queues.JOB_DELTA: _warm_sync, queues.JOB_HEALTH: _warm_health}


def warm_up(func_name: str) -> None:
    """Prepare this process for jobs of ``func_name``, once: import their code and build what
    every job would otherwise build again. A worker calls it before it forks the work-horse of
    its first job of each kind (so a worker starts fast, and loads only what its queues use);
    the horses inherit it all."""
    warmer = _WARMERS.get(func_name)
    if warmer is None or warmer.__name__ in _warmed:
        return
    _warmed.add(warmer.__name__)
    try:
        warmer()
    except Exception as exc:  # the job itself will report what is wrong
        logger.warning("warming up for {} failed: {}", func_name, exc)


# -- the environment ---------------------------------------------------------------------------


@attrs.define
class Env:
    settings: Any
    opts: SyncOptions
    registry: Any
    store: SyncStore
    redis: RedisClient
    job: Any


#: Namespace of the run ids derived from a job (:func:`job_run_id`).
_RUN_NAMESPACE = uuid.UUID("8f6d3c1e-5b0a-4d7e-9c2f-3a1b6e4d7c90")


def job_run_id(job: Any) -> str | None:
    """The run a job's work belongs to, for its log lines: a backfill's or delta's sync run
    (``nexus runs list``; continuations and retries carry it), else an id derived from the job
    (its id and creation time: the same across its retries) — the id its sync run gets if it
    records one, and the run id of a webhook or health job's lines."""
    if job is None:
        return None
    try:
        kwargs = job.kwargs or {}
        found = kwargs.get("run_id") or (job.meta or {}).get("nexus_run_id")
        if found:
            return str(found)
        created = job.created_at.isoformat() if job.created_at else ""
    except Exception:  # not one of ours (arguments that are not keyword JSON)
        return None
    return uuid.uuid5(_RUN_NAMESPACE, f"{job.id}\x1f{created}").hex


def job_log_context(job: Any) -> dict[str, Any]:
    """What every log line of ``job``'s work carries: provider, tenant_id, install_id (from its
    arguments), job_id and run_id (:func:`job_run_id`)."""
    out: dict[str, Any] = {"job_id": job.id}
    with suppress(Exception):
        kwargs = job.kwargs or {}
        out.update({k: kwargs[k] for k in ("provider", "tenant_id", "install_id")
                    if isinstance(kwargs.get(k), str)})
    run_id = job_run_id(job)
    if run_id:
        out["run_id"] = run_id
    return out


@contextmanager
def job_env(provider: str, tenant_id: str, install_id: str) -> Iterator[Env]:
    """The job's environment, its log context (provider, tenant_id, install_id, job_id,
    run_id), and (inside an RQ job) its lease and SIGTERM handling."""
    from rq import get_current_job

    from nexus_core.plugins import load_plugins

    settings = rt.get_settings()
    opts = SyncOptions.from_settings(settings)
    job = get_current_job()
    redis = job.connection if job is not None else rt.get_redis(settings)
    env = Env(settings, opts, load_plugins(), _ProcessStore(settings), redis, job)
    ids = job_log_context(job) if job is not None else {}
    with logger.contextualize(**{**ids, "provider": provider, "tenant_id": tenant_id,
                                 "install_id": install_id}):
        if job is None:
            yield env
            return
        with Lease(redis, job.id, opts.lease_ttl), _sigterm_finishes_page():
            yield env


def installation_state(env: Env, provider: str, tenant_id: str, install_id: str) -> Any:
    """What a webhook or health job reads: the installation and the credentials its provider
    needs, as preloaded by the worker before the fork, or through the worker's copies
    (:mod:`nexus_core.sync.installations`) when the job runs in the worker's own process."""
    state = take_preloaded(env.job)
    if state is not None:
        return state
    creds = rt.reads_credentials(env.registry.provider(provider))
    if env.job is None or in_work_horse():  # a horse lives for one job: nothing to keep
        return env.store.load_installation_state(tenant_id, install_id, credentials=creds)
    from nexus_core.sync import installations

    return installations.cache(env.redis).state(env.store, tenant_id, install_id,
                                                credentials=creds)


def defer(env: Env, exc: RateLimited | ProviderUnavailable, operation: str) -> Any:
    """Reschedule the job after ``retry_after`` by returning RQ's ``Retry``: RQ counts those in
    ``number_of_retries``, not in the ``retries_left`` of the failure policy."""
    from rq import Retry

    from nexus_core import metrics

    done = (env.job.number_of_retries or 0) if env.job is not None else 0
    if env.job is None or done >= env.opts.max_deferrals:
        raise ProviderError(
            f"deferred {done} times ({type(exc).__name__}: {exc.message}); giving up",
            retryable=False, provider=exc.provider, tenant_id=exc.tenant_id,
            install_id=exc.install_id,
        ) from exc
    delay = max(1, math.ceil(exc.retry_after))
    metrics.JOB_DEFERRALS.labels(exc.provider or "unknown", operation,
                                 metrics.deferral_reason(exc)).inc()
    logger.info("{}: rescheduled in {} s (not counted as a retry)", type(exc).__name__, delay)
    return Retry(max=env.opts.max_deferrals, interval=delay)


# -- failure policy --------------------------------------------------------------------------


def is_permanent(exc: BaseException | None) -> bool:
    """Errors that retrying cannot fix: they skip the remaining retries (fail fast)."""
    if isinstance(exc, RateLimited | ProviderUnavailable):
        return False
    if isinstance(exc, ProviderError):
        return not exc.retryable
    return isinstance(exc, AuthError | PluginError | NotFound | ConfigError) or (
        type(exc) is NexusError
    )


def on_job_failure(
    job: Any, connection: RedisClient, exc_type: Any, exc_value: Any, tb: Any
) -> None:
    """RQ ``on_failure`` callback of every sync job (runs before RQ decides to retry).

    Permanent errors set ``retries_left`` to 0 so RQ moves the job straight to the
    FailedJobRegistry; ``AuthError(needs_reauth)`` also marks the installation. When the job
    will not run again, its sync run is recorded as failed."""
    from nexus_core import metrics

    kwargs = job.kwargs or {}
    tenant_id, install_id = kwargs.get("tenant_id"), kwargs.get("install_id")
    provider, operation = kwargs.get("provider") or "unknown", _OPERATIONS.get(job.func_name,
                                                                               "other")
    try:
        permanent = is_permanent(exc_value)
        if permanent:
            job.retries_left = 0
        store = rt.get_store()
        if isinstance(exc_value, AuthError) and exc_value.needs_reauth and tenant_id and install_id:
            with suppress(NotFound):
                # a refresh in the job may have marked it already (and counted it)
                if store.get_installation(tenant_id, install_id).status != "needs_reauth":
                    metrics.NEEDS_REAUTH.labels(provider, "job").inc()
                store.set_status(tenant_id, install_id, "needs_reauth")
        error = f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}"[:2000]
        run_id = kwargs.get("run_id") or (job.meta or {}).get("nexus_run_id")
        if job.should_retry:
            metrics.JOB_RETRIES.labels(provider, operation).inc()
            follow.job_failed(connection, job, final=False, error=error, run_id=run_id)
            return  # the worker logs the failure (its traceback once per job)
        metrics.JOBS_DEAD_LETTERED.labels(provider, operation,
                                          "permanent" if permanent else "exhausted").inc()
        if run_id and tenant_id:
            store.finish_run(tenant_id, run_id, "failed", error=error)
        follow.job_failed(connection, job, final=True, error=error, run_id=run_id)
        logger.error("job {} failed for good and is in the dead-letter queue: {}", job.id,
                     exc_value)
    except Exception as exc:  # a callback that raises would replace the job's own error
        logger.exception("on_job_failure for {} failed: {}", job.id, exc)
