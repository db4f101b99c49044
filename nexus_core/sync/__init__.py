"""The sync engine, grouped by what it does.

* :mod:`~nexus_core.sync.enqueue` — starting syncs: options, job ids, one active sync per
  installation and stream, the enqueue every producer goes through (re-exported here);
* :mod:`~nexus_core.sync.engine` — the backfill/delta jobs: page → sinks → commit, chunks;
* :mod:`~nexus_core.sync.harness` — what runs around every job: environment, SIGTERM, the
  pre-fork preload, deferral and the failure policy;
* :mod:`~nexus_core.sync.lease` — job leases and the recovery of jobs whose worker died;
* :mod:`~nexus_core.sync.webhook` — a webhook delivery from the ingress to its job;
* :mod:`~nexus_core.sync.health` — the health-check job;
* :mod:`~nexus_core.sync.cron` — periodic deltas, spread over the interval;
* :mod:`~nexus_core.sync.follow` — a sync's progress stream (``nexus sync ... --wait``);
* :mod:`~nexus_core.sync.installations` — a worker's copies of installations, dropped on change;
* :mod:`~nexus_core.sync.rq_adapter` — every use of RQ beyond its public API.

RQ stores the job functions under their historical names (:mod:`nexus_core.jobs`).
"""

from nexus_core.sync.enqueue import (
    BACKFILL_DONE,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_DEFERRALS,
    DEFAULT_TIME_BUDGET,
    SyncOptions,
    enqueue_sync,
    job_options,
    start_sync,
    sync_streams,
)

__all__ = [
    "BACKFILL_DONE",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_MAX_DEFERRALS",
    "DEFAULT_TIME_BUDGET",
    "SyncOptions",
    "enqueue_sync",
    "job_options",
    "start_sync",
    "sync_streams",
]
