"""Workers: RQ's ``Worker``/``SimpleWorker`` with the JSON serializer, plugins loaded before the
fork, prompt recovery of abandoned jobs and a warm shutdown that reaches the running job.

Abandoned jobs: every job holds a lease in Redis; a worker sweeps its queues' started jobs at
start and every few seconds while idle and requeues those whose lease expired
(:mod:`nexus_core.sync.lease`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from nexus_core import queues

# Lease-based recovery lives with the lease (nexus_core.sync.lease); importable from here too.
from nexus_core.sync.lease import MAX_RECOVERIES, recover_abandoned  # noqa: E402,F401
from nexus_core.sync.rq_adapter import TracebackOncePerJob

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient

_workers_made = 0


class _NexusWorkerMixin(TracebackOncePerJob):
    """What every nexus worker adds to RQ's: JSON, short idle loop, lease-based recovery,
    warm shutdown forwarded to the running job, one traceback per failing job."""

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
        global _workers_made
        _workers_made += 1
        #: This worker among those this process ran (a supervised restart makes a new one).
        self.nexus_number = _workers_made
        self.nexus_stop_requested = False
        self.nexus_burst = False
        # Before the fork: every work-horse inherits the loaded plugins. The job code, the
        # store and the HTTP stack are set up at the first job of each kind (harness.warm_up).
        load_plugins()

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self.nexus_burst = bool(kwargs.get("burst", args[0] if args else False))
        return super().work(*args, **kwargs)  # type: ignore[misc]

    def execute_job(self, job: Any, queue: Any) -> Any:
        """Every line logged while a job runs — RQ's own (``Job OK``, failures) and the
        job's, in its work-horse too — carries the job's provider, tenant_id, install_id,
        job_id and run_id."""
        from nexus_core.sync.harness import job_log_context

        with logger.contextualize(**job_log_context(job)):
            return super().execute_job(job, queue)  # type: ignore[misc]

    @property
    def should_run_maintenance_tasks(self) -> bool:
        due = self._last_recovery is None or (
            time.monotonic() - self._last_recovery >= self.recovery_interval
        )
        return due or super().should_run_maintenance_tasks  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        """Every few seconds (RQ's own maintenance: every 10 minutes): restart RQ's scheduler
        process if it died (it does on a Redis outage; retries and deferred jobs would stall
        until RQ's next maintenance) and requeue abandoned jobs."""
        self._last_recovery = time.monotonic()
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and not self.nexus_stop_requested and not self.nexus_burst:
            try:  # refreshes the lock it holds; starts the process when it is not running
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


def _job_class() -> type:
    """RQ's ``Job`` keeping the webhook body field (``queues.WEBHOOK_BODY_FIELD``) of the hash
    RQ's dequeue already read with HGETALL: the webhook job need not fetch it again."""
    from nexus_core.sync.rq_adapter import job_class_keeping

    return job_class_keeping(queues.WEBHOOK_BODY_FIELD)


def _classes() -> tuple[type, type]:
    from rq import SimpleWorker, Worker

    class NexusWorker(_NexusWorkerMixin, Worker):
        """Forks a work-horse per job (isolation; the default). While a horse runs, this
        process refreshes its job's lease each time it wakes to watch the horse (every
        NEXUS_JOB_LEASE_TTL/3 s): the horse needs no thread of its own for it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # RQ wakes every job_monitoring_interval (default 30 s) to heartbeat: at the
            # lease's pace instead, and the lease is refreshed then (maintain_heartbeats).
            self.job_monitoring_interval = max(1, int(self.lease_ttl / 3))
            self._lease_written: str | None = None

        def main_work_horse(self, job: Any, queue: Any) -> None:
            from nexus_core import metrics
            from nexus_core.sync import lease

            # the metrics files this worker's horses share (see nexus_core.metrics)
            metrics.become_work_horse(os.getppid(), self.nexus_number)
            lease.parent_keeps_lease(os.getppid())
            super().main_work_horse(job, queue)

        def maintain_heartbeats(self, job: Any, execution: Any) -> None:
            super().maintain_heartbeats(job, execution)
            from nexus_core.sync import lease

            try:
                lease.refresh(self.connection, job.id, self.lease_ttl)
                self._lease_written = job.id
            except Exception as exc:  # Redis hiccup: the next wake-up tries again
                logger.debug("lease refresh for {} failed: {}", job.id, exc)

        def monitor_work_horse(self, job: Any, queue: Any, execution: Any) -> None:
            try:
                super().monitor_work_horse(job, queue, execution)
            finally:
                if self._lease_written == job.id:
                    self._lease_written = None
                    with contextlib.suppress(Exception):  # it expires anyway
                        self.connection.delete(queues.lease_key(job.id))

        def fork_work_horse(self, job: Any, queue: Any) -> None:
            import gc

            from nexus_core import metrics
            from nexus_core.sync import harness

            metrics.observe_queue_wait(job)
            harness.warm_up(job.func_name)  # the first job of its kind: imports, caches
            # The job's first store reads, on this process's warm connection: the horse
            # inherits them and opens no database connection for a job that writes nothing.
            harness.preload(job)
            # Move everything alive now out of the GC's reach before forking: the horse then
            # does not touch (copy) the parent's pages when it collects (CPython's pre-fork
            # recipe; cuts the per-job cost of a fork-per-job worker).
            gc.freeze()
            try:
                super().fork_work_horse(job, queue)
            finally:
                harness.forget_preload()  # in this process; the horse has its copy

    class NexusSimpleWorker(_NexusWorkerMixin, SimpleWorker):
        """Runs jobs in its own process (``--no-fork``, tests)."""

        def execute_job(self, job: Any, queue: Any) -> Any:
            from nexus_core import metrics
            from nexus_core.sync import harness

            metrics.observe_queue_wait(job)
            harness.warm_up(job.func_name)
            return super().execute_job(job, queue)

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


def _pending(connection: RedisClient, names: Sequence[str]) -> bool:
    from nexus_core import queues as q

    return any(q.queue(n, connection).count or q.queue(n, connection).started_job_registry.count
               for n in names)


def _supervise(cls: type, names: Sequence[str], connection: RedisClient, *, burst: bool) -> bool:
    """Run a worker; start a fresh one when RQ's gave up on an error (RQ's loop survives a Redis
    outage only while it waits for a job — an outage during a job makes it quit). The jobs it
    was running are recovered through their leases."""
    import redis
    from rq.exceptions import StopRequested

    worked = False
    delay = 1.0
    worker: Any = None
    while True:
        try:  # RQ's Worker asks Redis for its version: a failover in progress refuses that
            worker = cls(names, connection=connection)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.warning("cannot start a worker, Redis unavailable ({}); trying again in "
                           "{:.0f} s", exc, delay)
            try:
                time.sleep(delay)  # a SIGTERM reaches the last worker's handler: we stop
            except StopRequested:
                return worked
            if getattr(worker, "nexus_stop_requested", False):
                return worked
            delay = min(delay * 2, 30.0)
            continue
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
    connection: RedisClient | None = None,
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


def _pool(names: Sequence[str], n: int, cls: type, connection: RedisClient, *, burst: bool) -> None:
    import logging

    from rq.serializers import JSONSerializer
    from rq.worker_pool import WorkerPool

    pool = WorkerPool(names, connection=connection, num_workers=n, worker_class=cls,
                      serializer=JSONSerializer)
    pool.start(burst=burst, logging_level=logging.getLevelName(_rq_log_level()))


def _pool_child(names: Sequence[str], n: int, cls: type, connection: RedisClient, *,
                burst: bool) -> None:
    # Not the parent's forwarding handlers: RQ's pool installs its own once its workers run.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _pool(names, n, cls, connection, burst=burst)


def _run_pools(layout: dict[str, int], cls: type, connection: RedisClient, *, burst: bool) -> bool:
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
