"""Job leases and the prompt recovery of jobs whose worker died.

RQ notices a job whose worker died only when its execution's heartbeat TTL
(``job_monitoring_interval`` + a hard-coded 60 s) has passed *and* a worker runs maintenance.
Every running job here has a lease key in Redis (``nexus:lease:<job id>``, TTL
NEXUS_JOB_LEASE_TTL) refreshed every TTL/3 seconds, and a worker checks its queues'
StartedJobRegistry at start and every few seconds while idle (:func:`recover_abandoned`): a
started job whose lease is gone (and which started more than one lease TTL ago) is moved to the
FailedJobRegistry and requeued at the front with RQ's own requeue — without consuming one of its
retries; after ``MAX_RECOVERIES`` recoveries it stays in the dead-letter queue (a job that kills
its worker must not loop forever). A sync job resumes from its last committed checkpoint.

Who refreshes the lease costs nothing for a short job:

* a forked work-horse: its worker, which wakes every TTL/3 anyway to watch the horse (RQ's
  ``maintain_heartbeats``; ``nexus_core.worker.NexusWorker``). The horse starts no thread and
  sends nothing; if it finds its worker gone, it exits at its next page boundary
  (:func:`exit_if_orphaned`) and the job is recovered from its last committed page;
* a job run in the worker's own process (``--no-fork``): one thread per process, started at the
  first job, which refreshes the leases of the jobs running for longer than TTL/3.

Either way the first refresh comes TTL/3 after the job started, before recovery would consider it
(only jobs started more than one TTL ago are), so a job shorter than that never writes a lease.

A job can also be taken off its queue and never start: its worker loses Redis (a Sentinel
failover, a restart) or dies between RQ's dequeue and the work-horse marking the job started.
RQ leaves it in the queue's intermediate list (a single-queue worker's BLMOVE) or in the
StartedJobRegistry with status ``queued``, and fails it at its 10-minute maintenance. The same
sweep puts it back at the front of its queue once it has been seen so for one lease TTL
(:func:`recover_unstarted`). A worker listening on several queues dequeues with RQ's plain
BLPOP, which leaves no trace: a crash in that instant loses the job.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from loguru import logger

from nexus_core import queues

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient

MAX_RECOVERIES = 3

#: Set in a forked work-horse whose worker refreshes its lease: the worker's pid.
_parent_keeps_lease: int | None = None


def parent_keeps_lease(parent_pid: int) -> None:
    """Called in a forked work-horse (before its job runs) whose worker keeps the lease."""
    global _parent_keeps_lease
    _parent_keeps_lease = parent_pid


def in_work_horse() -> bool:
    """Whether this process is a forked work-horse (whose worker keeps its lease)."""
    return _parent_keeps_lease is not None


def exit_if_orphaned(job_id: str) -> None:
    """In a work-horse whose worker died: exit now (between pages, after a commit). The lease
    its worker kept expires and the job is recovered from its last committed page."""
    if _parent_keeps_lease is not None and os.getppid() != _parent_keeps_lease:
        logger.warning("job {}: its worker (pid {}) is gone; stopping here, the job is recovered "
                       "from its last committed page", job_id, _parent_keeps_lease)
        os._exit(70)


def refresh(connection: RedisClient, job_id: str, ttl: float) -> None:
    """Set ``job_id``'s lease for ``ttl`` seconds (a worker, for its horse's job)."""
    connection.set(queues.lease_key(job_id), b"1", px=int(ttl * 1000))


class _Keeper:
    """The thread of a process that runs jobs itself: refreshes its running jobs' leases."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.leases: dict[int, Lease] = {}
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nexus-lease", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            with self.lock:
                leases = list(self.leases.values())
            period = min((lease.ttl for lease in leases), default=5.0) / 3
            self.wake.wait(period)
            self.wake.clear()
            now = time.monotonic()
            for lease in leases:
                if lease.active and now - lease.started >= lease.ttl / 3 - 0.05:
                    lease.beat()


_keeper: _Keeper | None = None
_keeper_lock = threading.Lock()


def _the_keeper() -> _Keeper:
    global _keeper
    with _keeper_lock:
        if _keeper is None or _keeper.pid != os.getpid():
            _keeper = _Keeper()
        return _keeper


class Lease:
    """The lease of a job running in this process (see the module doc)."""

    def __init__(self, connection: RedisClient, job_id: str, ttl: float) -> None:
        self.connection = connection
        self.job_id = job_id
        self.key = queues.lease_key(job_id)
        self.ttl = ttl
        self.started = time.monotonic()
        self.active = False
        self.written = False

    def beat(self) -> None:
        try:
            self.connection.set(self.key, b"1", px=int(self.ttl * 1000))
            self.written = True
        except Exception as exc:  # Redis down: the job fails or finishes on its own
            logger.debug("lease heartbeat failed: {}", exc)

    def __enter__(self) -> Lease:
        if _parent_keeps_lease is not None:
            return self  # its worker refreshes it
        self.started = time.monotonic()
        self.active = True
        keeper = _the_keeper()
        with keeper.lock:
            keeper.leases[id(self)] = self
        if len(keeper.leases) == 1:
            keeper.wake.set()  # re-plan with this lease's TTL
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        self.active = False
        keeper = _the_keeper()
        with keeper.lock:
            keeper.leases.pop(id(self), None)
        if self.written:
            try:
                self.connection.delete(self.key)
            except Exception as e:  # expires anyway
                logger.debug("lease release failed: {}", e)


def recover_unstarted(
    connection: RedisClient, queue_names: Iterable[str], *, lease_ttl: float,
    now: float | None = None,
) -> list[str]:
    """Requeue (at the front, no retry consumed) the jobs of ``queue_names`` that a worker took
    off the queue but never started — in RQ's intermediate list or in the StartedJobRegistry
    with status ``queued`` — once a sweep has seen them so for ``lease_ttl`` seconds (a live
    worker starts a job it took within milliseconds); returns their ids."""
    from nexus_core.sync.rq_adapter import requeue_unstarted

    recovered: list[str] = []
    now = time.time() if now is None else now
    for name in queue_names:
        queue = queues.queue(name, connection)
        registry = queue.started_job_registry
        members = {job_id: f"{job_id}:{execution}"
                   for job_id, execution in registry.get_job_and_execution_ids(cleanup=False)}
        taken = list(dict.fromkeys([*queue.intermediate_queue.get_job_ids(), *members]))
        if not taken:
            continue
        with connection.pipeline(transaction=False) as pipe:
            for job_id in taken:
                pipe.hget(queue.job_class.key_for(job_id), "status")
            statuses = pipe.execute()
        for job_id, status in zip(taken, statuses, strict=True):
            if status != b"queued":
                continue  # started (leases cover it), ended, or gone
            marker = queues.UNSTARTED_PREFIX + job_id
            seen = connection.get(marker)
            if seen is None:
                connection.set(marker, repr(now), nx=True, ex=3600)
                continue
            if now - float(seen) < lease_ttl:
                continue
            if requeue_unstarted(connection, queue, job_id, members.get(job_id), marker):
                logger.warning("requeued job {} on {}: a worker took it off the queue and lost "
                               "Redis or died before starting it", job_id, name)
                recovered.append(job_id)
    return recovered


def recover_abandoned(
    connection: RedisClient, queue_names: Iterable[str], *, lease_ttl: float
) -> list[str]:
    """Requeue the started jobs of ``queue_names`` whose lease expired, and those taken off
    their queue but never started (:func:`recover_unstarted`); returns their ids."""
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    from nexus_core.sync.rq_adapter import fail_abandoned, release_rate_limit_slot

    recovered: list[str] = []
    now = time.time()
    names = list(queue_names)
    for name in names:
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
                fail_abandoned(job, reason, pipe)
                pipe.execute()
            release_rate_limit_slot(job)
            if count > MAX_RECOVERIES:
                logger.error("job {} abandoned {} times: left in the dead-letter queue", job_id,
                             count - 1)
                continue
            job.failed_job_registry.requeue(job, at_front=True)
            from nexus_core import metrics

            metrics.JOBS_RECOVERED.labels(name).inc()
            logger.warning("recovered abandoned job {} on {} (recovery {})", job_id, name, count)
            recovered.append(job_id)
    return recovered + recover_unstarted(connection, names, lease_ttl=lease_ttl, now=now)
