"""Periodic deltas on RQ's cron scheduler (``nexus scheduler`` or ``run-worker --with-scheduler``).

RQ 3's ``CronJob.enqueue`` ignores the serializer (it would pickle) and gives every run a random
job id, so two schedulers enqueue every run twice. :class:`DeltaFanout` replaces ``enqueue``:
at each slot (``floor(now / NEXUS_DELTA_INTERVAL)``, the same number in every scheduler) it lists
the active installations and enqueues one delta per installation with the JSON serializer, the
job id ``nexus:delta:<provider>:<tenant>:<install>:all:slot-<n>`` and RQ's ``unique=True``:
a second scheduler's enqueue of the same slot is refused by Redis. Slots are aligned to interval
boundaries so schedulers started at different times tick together. An installation whose
previous delta is still queued or running is skipped for that slot.
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from nexus_core import queues

DEFAULT_INTERVAL = 300


def _interval(settings: Any) -> int:
    from nexus_core.config import positive_int

    return settings.get_parsed("NEXUS_DELTA_INTERVAL", positive_int, DEFAULT_INTERVAL)


def enqueue_slot(connection: Any, store: Any, slot: int, *, interval: int, opts: Any) -> list[str]:
    """Enqueue slot ``slot``'s delta for every active installation; returns the new job ids
    (installations another scheduler already enqueued for this slot are not in the list)."""
    from rq.exceptions import DuplicateJobError

    from nexus_core.sync.enqueue import enqueue_sync

    enqueued = []
    for inst in store.list_all_installations(status="active"):
        sync = queues.sync_key("delta", inst.provider, inst.tenant_id, inst.install_id, None)
        jid = queues.slot_job_id(sync, slot)
        active = queues.claim_active(connection, sync, jid)
        if active is not None:
            if active != jid:
                logger.info("delta for {}/{} still active ({}): slot {} skipped",
                            inst.tenant_id, inst.install_id, active, slot)
            continue
        try:
            enqueue_sync(connection, "delta", inst.provider, inst.tenant_id, inst.install_id,
                         None, job_id=jid, run_id=None, opts=opts, unique=True,
                         result_ttl=max(500, 2 * interval))
        except DuplicateJobError:
            continue  # another scheduler enqueued this slot: exactly once
        enqueued.append(jid)
    return enqueued


def _classes() -> tuple[type, type]:
    from rq.cron import CronJob, CronScheduler
    from rq.exceptions import StopRequested

    class DeltaFanout(CronJob):
        """The one cron entry: every ``interval`` seconds, a delta per active installation."""

        def __init__(self, interval: int, settings: Any) -> None:
            super().__init__(queue_name=queues.DELTA, func_name=queues.JOB_DELTA,
                             interval=interval, name="nexus-delta-fanout")
            self.settings = settings
            self.next_enqueue_time = self._boundary(time.time(), first=True)

        def _boundary(self, now: float, first: bool = False) -> datetime:
            slot = math.floor(now / self.interval) + (0 if first else 1)
            return datetime.fromtimestamp(slot * self.interval, UTC)

        def should_run(self) -> bool:
            return datetime.now(UTC) >= self.next_enqueue_time

        def get_next_enqueue_time(self) -> datetime:
            return self._boundary(time.time())

        def enqueue(self, connection: Any) -> Any:
            from nexus_core import runtime
            from nexus_core.sync.enqueue import SyncOptions

            slot = math.floor(time.time() / self.interval)
            try:
                ids = enqueue_slot(connection, runtime.get_store(self.settings), slot,
                                   interval=self.interval,
                                   opts=SyncOptions.from_settings(self.settings))
                logger.info("delta slot {}: {} job(s) enqueued", slot, len(ids))
            except Exception as exc:  # store or Redis down: the next slot tries again
                logger.error("delta slot {} not enqueued: {}", slot, exc)
            return None

    class NexusCronScheduler(CronScheduler):
        """Exits when its parent worker dies (it never outlives ``run-worker``)."""

        parent_pid: int | None = None

        def calculate_sleep_interval(self) -> float:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                raise StopRequested()
            return min(super().calculate_sleep_interval(), 5)

    return DeltaFanout, NexusCronScheduler


def build_scheduler(
    connection: Any = None, settings: Any = None, *, parent_pid: int | None = None
) -> Any:
    from nexus_core import runtime

    settings = settings or runtime.get_settings()
    connection = connection or runtime.get_redis(settings)
    fanout_cls, scheduler_cls = _classes()
    scheduler = scheduler_cls(connection=connection)
    scheduler.parent_pid = parent_pid
    scheduler.get_jobs().append(fanout_cls(_interval(settings), settings))
    return scheduler


def run_scheduler(parent_pid: int | None = None) -> None:
    """Run the cron scheduler in the foreground until SIGTERM/SIGINT."""
    from nexus_core.plugins import load_plugins

    load_plugins()
    scheduler = build_scheduler(parent_pid=parent_pid)
    logger.info("scheduler {}: a delta per active installation every {} s", scheduler.name,
                scheduler.get_jobs()[0].interval)
    scheduler.start()


def start_in_background() -> Any:
    """The scheduler in a child process of this one (``run-worker --with-scheduler``)."""
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(
        target=run_scheduler, kwargs={"parent_pid": os.getpid()}, name="nexus-scheduler",
        daemon=True,
    )
    proc.start()
    return proc
