"""Workers: RQ's ``Worker``/``SimpleWorker`` with the JSON serializer, plugins loaded before the
fork, prompt recovery of abandoned jobs and a warm shutdown that reaches the running job.

Abandoned jobs. RQ notices a job whose worker died only when its execution's heartbeat TTL
(``job_monitoring_interval`` + a hard-coded 60 s) has passed *and* a worker runs maintenance
(every 10 minutes by default). Every sync job here holds a lease key in Redis, refreshed by a
thread every NEXUS_JOB_LEASE_TTL/3 seconds (:class:`nexus_core.jobs._Lease`). A worker checks its
queues' StartedJobRegistry at start and every few seconds while idle: a started job whose lease is
gone (and which started more than one lease TTL ago) is moved to the FailedJobRegistry and
requeued at the front with RQ's own requeue — without consuming one of its retries; after
``MAX_RECOVERIES`` recoveries it stays in the dead-letter queue (a job that kills its worker
must not loop forever). The job resumes from its last committed checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Sequence
from typing import Any

from loguru import logger

from nexus_core import queues

MAX_RECOVERIES = 3


def recover_abandoned(
    connection: Any, queue_names: Iterable[str], *, lease_ttl: float
) -> list[str]:
    """Requeue the started jobs of ``queue_names`` whose lease expired; returns their ids."""
    from rq.job import Job, JobStatus
    from rq.job_lifecycle import record_job_failure
    from rq.rate_limit import release_slot
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    recovered: list[str] = []
    now = time.time()
    for name in queue_names:
        registry = StartedJobRegistry(name, connection=connection, serializer=JSONSerializer)
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            if connection.exists(queues.lease_key(job_id)):
                continue
            try:
                job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            except Exception:  # the job hash is gone: drop the leftover entry
                connection.zrem(registry.key, f"{job_id}:{execution_id}")
                continue
            if job.get_status(refresh=False) != JobStatus.STARTED:
                continue
            started = job.started_at.timestamp() if job.started_at else 0
            if now - started < lease_ttl:
                continue  # its horse may not have taken the lease yet
            # One recoverer per execution, even with several workers starting at once.
            claim = queues.RECOVERY_CLAIM_PREFIX + f"{job_id}:{execution_id}"
            if not connection.set(claim, b"1", nx=True, ex=max(60, int(lease_ttl * 4))):
                continue
            count = int(job.meta.get("nexus_recoveries", 0)) + 1
            job.meta["nexus_recoveries"] = count
            reason = (f"abandoned: its worker died (lease {queues.lease_key(job_id)} expired); "
                      f"recovery {count}/{MAX_RECOVERIES}")
            with connection.pipeline() as pipe:
                pipe.zrem(registry.key, f"{job_id}:{execution_id}")
                job.save_meta()
                record_job_failure(job, reason, pipe)
                pipe.execute()
            release_slot(job)
            if count > MAX_RECOVERIES:
                logger.error("job {} abandoned {} times: left in the dead-letter queue", job_id,
                             count - 1)
                continue
            job.failed_job_registry.requeue(job, at_front=True)
            logger.warning("recovered abandoned job {} on {} (recovery {})", job_id, name, count)
            recovered.append(job_id)
    return recovered


class _NexusWorkerMixin:
    """What every nexus worker adds to RQ's: JSON, short idle loop, lease-based recovery,
    warm shutdown forwarded to the running job."""

    #: Seconds between recovery sweeps (derived from the lease TTL in __init__).
    recovery_interval: float = 5.0

    def __init__(self, queues_: Sequence[Any], *args: Any, **kwargs: Any) -> None:
        from rq.serializers import JSONSerializer

        from nexus_core import runtime
        from nexus_core.plugins import load_plugins
        from nexus_core.sync import SyncOptions

        settings = runtime.get_settings()
        self.lease_ttl = SyncOptions.from_settings(settings).lease_ttl
        self.recovery_interval = max(1.0, self.lease_ttl / 3)
        kwargs["serializer"] = JSONSerializer
        kwargs.setdefault("job_class", _job_class())
        # The idle dequeue blocks for worker_ttl - 15 s; keep it short so idle workers sweep.
        kwargs.setdefault("worker_ttl", 15 + max(1, int(self.recovery_interval)))
        super().__init__(queues_, *args, **kwargs)  # type: ignore[call-arg]
        self._last_recovery: float | None = None
        load_plugins()  # before the fork: every work-horse inherits the loaded plugins
        import nexus_core.http  # noqa: F401 - and the job code with what it imports lazily
        import nexus_core.jobs  # noqa: F401
        import nexus_core.oauth  # noqa: F401

        try:  # likewise the store's engine and key ring (each horse gets its own connections)
            # and the compiled SQL of a job's statements (each horse would compile it again)
            runtime.get_store(settings).warm_up()
        except Exception as exc:
            logger.warning("store not reachable at worker start ({}); jobs will retry", exc)

    @property
    def should_run_maintenance_tasks(self) -> bool:
        due = self._last_recovery is None or (
            time.monotonic() - self._last_recovery >= self.recovery_interval
        )
        return due or super().should_run_maintenance_tasks  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        self._last_recovery = time.monotonic()
        scheduler = getattr(self, "scheduler", None)
        process = getattr(scheduler, "_process", None)
        stopping = getattr(self, "_stop_requested", False)
        if scheduler is not None and process is not None and not process.is_alive() \
                and not stopping:
            # RQ's scheduler process dies on a Redis outage and RQ restarts it only at its
            # 10-minute maintenance: retries and deferred jobs would stall that long.
            try:
                scheduler.acquire_locks(auto_start=True)
            except Exception as exc:
                logger.warning("restarting RQ's scheduler failed: {}", exc)
        try:
            recover_abandoned(self.connection, self.queue_names(), lease_ttl=self.lease_ttl)  # type: ignore[attr-defined]
        except Exception as exc:  # Redis hiccup: the next sweep tries again
            logger.warning("abandoned-job sweep failed: {}", exc)
        if super().should_run_maintenance_tasks:  # type: ignore[misc]
            super().run_maintenance_tasks()  # type: ignore[misc]

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.nexus_stop_requested = True
        super().request_stop(signum, frame)  # type: ignore[misc]

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[misc]
        horse = getattr(self, "horse_pid", 0)
        if horse:  # the job finishes its page, commits and enqueues its continuation
            with contextlib.suppress(OSError):
                os.kill(horse, signal.SIGTERM)


_JOB_CLASS: type | None = None


def _job_class() -> type:
    """RQ's ``Job`` keeping the webhook body field (``queues.WEBHOOK_BODY_FIELD``) of the hash
    RQ's dequeue already read with HGETALL: the webhook job need not fetch it again."""
    global _JOB_CLASS
    if _JOB_CLASS is None:
        from rq.job import Job

        field = queues.WEBHOOK_BODY_FIELD.encode()

        class NexusJob(Job):
            webhook_body: bytes | None = None

            def restore(self, raw_data: Any) -> Any:
                out = super().restore(raw_data)
                body = raw_data.get(field)
                self.webhook_body = body if isinstance(body, bytes) else None
                return out

        NexusJob.__module__ = __name__
        _JOB_CLASS = NexusJob
    return _JOB_CLASS


def _classes() -> tuple[type, type]:
    from rq import SimpleWorker, Worker

    class NexusWorker(_NexusWorkerMixin, Worker):
        """Forks a work-horse per job (isolation; the default)."""

        def fork_work_horse(self, job: Any, queue: Any) -> None:
            import gc

            from nexus_core import jobs

            # The job's first store reads, on this process's warm connection: the horse
            # inherits them and opens no database connection for a job that writes nothing.
            jobs.preload(job)
            # Move everything alive now out of the GC's reach before forking: the horse then
            # does not touch (copy) the parent's pages when it collects (CPython's pre-fork
            # recipe; cuts the per-job cost of a fork-per-job worker).
            gc.freeze()
            try:
                super().fork_work_horse(job, queue)
            finally:
                jobs.forget_preload()  # in this process; the horse has its copy

    class NexusSimpleWorker(_NexusWorkerMixin, SimpleWorker):
        """Runs jobs in its own process (tests, debugging)."""

    NexusWorker.__module__ = NexusSimpleWorker.__module__ = __name__
    return NexusWorker, NexusSimpleWorker


def __getattr__(name: str) -> Any:
    # The classes subclass rq's; building them lazily keeps `import nexus_core.worker` cheap.
    if name in ("NexusWorker", "NexusSimpleWorker"):
        worker, simple = _classes()
        globals().update(NexusWorker=worker, NexusSimpleWorker=simple)
        return globals()[name]
    raise AttributeError(name)


def resolve_queues(names: Sequence[str] | None) -> list[str]:
    """Queue names to listen on, in dequeue-priority order; unknown names are an error."""
    if not names:
        return list(queues.WORKER_QUEUE_ORDER)
    aliases = {q.removeprefix("integration-"): q for q in queues.ALL_QUEUES}
    out = []
    for raw in names:
        for part in raw.split(","):
            part = part.strip()
            if not part:
                continue
            name = aliases.get(part, part)
            if name not in queues.ALL_QUEUES:
                from nexus_core.errors import ConfigError

                raise ConfigError(
                    f"unknown queue {part!r}; queues: {', '.join(queues.ALL_QUEUES)} "
                    "(or backfill, delta, webhook, health)")
            if name not in out:
                out.append(name)
    return out


def _rq_log_level() -> int:
    """The level for RQ's loggers: the configured one (``--log-level``) once logging is set up
    (:func:`nexus_core.log.configure_logging`), else INFO. RQ would set its loggers to INFO: a
    worker at WARNING then builds and routes several records per job only to drop them."""
    import logging

    root = logging.getLogger()
    return root.level if root.handlers else logging.INFO


def _pending(connection: Any, names: Sequence[str]) -> bool:
    from nexus_core import queues as q

    return any(q.queue(n, connection).count or q.queue(n, connection).started_job_registry.count
               for n in names)


def _supervise(cls: type, names: Sequence[str], connection: Any, *, burst: bool) -> bool:
    """Run a worker; start a fresh one when RQ's gave up on an error (RQ's loop survives a Redis
    outage only while it waits for a job — an outage during a job makes it quit). The jobs it
    was running are recovered through their leases."""
    import redis
    from rq.exceptions import StopRequested

    worked = False
    delay = 1.0
    while True:
        worker = cls(names, connection=connection)
        try:
            worked = worker.work(burst=burst, with_scheduler=True,
                                 logging_level=_rq_log_level()) or worked
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.warning("worker {} lost Redis: {}", worker.name, exc)
        if getattr(worker, "nexus_stop_requested", False):
            return worked
        try:
            if burst and not _pending(connection, names):
                return worked
            delay = 1.0
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            delay = min(delay * 2, 30.0)
        logger.warning("worker {} stopped unexpectedly; starting a new one in {:.0f} s",
                       worker.name, delay)
        try:
            time.sleep(delay)  # a SIGTERM now reaches the old worker's handler: we stop
        except StopRequested:
            return worked
        if getattr(worker, "nexus_stop_requested", False):
            return worked


def pool_layout(queue_names: Sequence[str], worker_concurrency: int) -> dict[str, int]:
    """Worker processes per queue: the seed's concurrency scaled by
    INTEGRATION_WORKER_CONCURRENCY / 5 (at least one each)."""
    return {name: queues.concurrency(name, worker_concurrency) for name in queue_names}


def run_worker(
    queue_names: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    burst: bool = False,
    with_scheduler: bool = False,
    simple: bool = False,
    connection: Any = None,
) -> bool:
    """Run workers until stopped (or until the queues are empty with ``burst``).

    ``workers`` None: one RQ WorkerPool per queue, sized by :func:`pool_layout`
    (INTEGRATION_WORKER_CONCURRENCY); a number: that many workers, each listening on every
    queue in priority order (1: one supervised worker in this process; more: RQ's
    WorkerPool). Each worker forks a work-horse per job (``simple``: runs jobs itself).
    ``with_scheduler`` also runs the periodic-delta cron scheduler in this process's child.
    RQ's own scheduler for retries and rescheduled jobs always runs (one per Redis, elected by
    lock)."""
    from nexus_core import runtime

    names = resolve_queues(queue_names)
    connection = connection or runtime.get_redis()
    cls = __getattr__("NexusSimpleWorker" if simple else "NexusWorker")
    cron = None
    if with_scheduler:
        from nexus_core.scheduler import start_in_background

        cron = start_in_background()
    try:
        if workers is None:
            layout = pool_layout(names, runtime.get_settings().worker_concurrency)
            logger.info("worker pools: {}", ", ".join(f"{q} x{n}" for q, n in layout.items()))
            return _run_pools(layout, cls, connection, burst=burst)
        if workers > 1:
            _pool(names, workers, cls, connection, burst=burst)
            return True
        return _supervise(cls, names, connection, burst=burst)
    finally:
        if cron is not None:
            cron.terminate()
            cron.join(10)


def _pool(names: Sequence[str], n: int, cls: type, connection: Any, *, burst: bool) -> None:
    from rq.serializers import JSONSerializer
    from rq.worker_pool import WorkerPool

    pool = WorkerPool(names, connection=connection, num_workers=n, worker_class=cls,
                      serializer=JSONSerializer)
    pool.start(burst=burst, logging_level=_rq_log_level())


def _pool_child(names: Sequence[str], n: int, cls: type, connection: Any, *,
                burst: bool) -> None:
    # Not the parent's forwarding handlers: RQ's pool installs its own once its workers run.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _pool(names, n, cls, connection, burst=burst)


def _run_pools(layout: dict[str, int], cls: type, connection: Any, *, burst: bool) -> bool:
    """One RQ WorkerPool per queue, each in a child process of this one (RQ's pool serves one
    set of queues with one size). SIGTERM/SIGINT here reaches every pool (each stops its
    workers warmly); a pool that dies is started again unless ``burst`` or stopping."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    stopping = {"flag": False}

    def start(name: str) -> Any:
        proc = ctx.Process(target=_pool_child, args=([name], layout[name], cls, connection),
                           kwargs={"burst": burst}, name=f"nexus-pool-{name}")
        proc.start()
        return proc

    procs = {name: start(name) for name in layout}

    def stop(signum: int, frame: Any) -> None:
        stopping["flag"] = True
        for proc in procs.values():
            if proc.is_alive() and proc.pid:
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            for name, proc in list(procs.items()):
                proc.join(0.5)
                if proc.is_alive():
                    continue
                if burst or stopping["flag"]:
                    procs.pop(name)
                    continue
                logger.warning("worker pool of {} exited ({}); starting it again", name,
                               proc.exitcode)
                procs[name] = start(name)
            if not procs:
                return True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
