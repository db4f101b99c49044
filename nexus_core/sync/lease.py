"""Job leases and the prompt recovery of jobs whose worker died.

RQ notices a job whose worker died only when its execution's heartbeat TTL
(``job_monitoring_interval`` + a hard-coded 60 s) has passed *and* a worker runs maintenance.
Every job here holds a lease key in Redis (``nexus:lease:<job id>``), refreshed by a thread every
NEXUS_JOB_LEASE_TTL/3 seconds. A worker checks its queues' StartedJobRegistry at start and every
few seconds while idle (:func:`recover_abandoned`): a started job whose lease is gone (and which
started more than one lease TTL ago) is moved to the FailedJobRegistry and requeued at the front
with RQ's own requeue — without consuming one of its retries; after ``MAX_RECOVERIES``
recoveries it stays in the dead-letter queue (a job that kills its worker must not loop
forever). A sync job resumes from its last committed checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from loguru import logger

from nexus_core import queues

MAX_RECOVERIES = 3


class Lease:
    """``nexus:lease:<job id>`` kept alive by a thread while the job runs. When the process
    dies the key expires within NEXUS_JOB_LEASE_TTL and the next worker requeues the job."""

    def __init__(self, connection: Any, job_id: str, ttl: float) -> None:
        self.connection = connection
        self.key = queues.lease_key(job_id)
        self.ttl_ms = int(ttl * 1000)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nexus-lease", daemon=True)

    def _beat(self) -> None:
        try:
            self.connection.set(self.key, b"1", px=self.ttl_ms)
        except Exception as exc:  # Redis down: the job fails or finishes on its own
            logger.debug("lease heartbeat failed: {}", exc)

    def _run(self) -> None:
        while not self._done.wait(self.ttl_ms / 3000):
            self._beat()

    def __enter__(self) -> Lease:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)
        try:
            self.connection.delete(self.key)
        except Exception as e:  # expires anyway
            logger.debug("lease release failed: {}", e)


def recover_abandoned(
    connection: Any, queue_names: Iterable[str], *, lease_ttl: float
) -> list[str]:
    """Requeue the started jobs of ``queue_names`` whose lease expired; returns their ids."""
    from rq.job import Job, JobStatus
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    from nexus_core.sync.rq_adapter import fail_abandoned, release_rate_limit_slot

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
                fail_abandoned(job, reason, pipe)
                pipe.execute()
            release_rate_limit_slot(job)
            if count > MAX_RECOVERIES:
                logger.error("job {} abandoned {} times: left in the dead-letter queue", job_id,
                             count - 1)
                continue
            job.failed_job_registry.requeue(job, at_front=True)
            logger.warning("recovered abandoned job {} on {} (recovery {})", job_id, name, count)
            recovered.append(job_id)
    return recovered
