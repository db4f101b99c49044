"""Queue names, concurrency, job ids and the Redis connection: the conventions every producer
(service, web app, scheduler) and consumer (worker) share."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

    from nexus_core.config import Settings

BACKFILL = "integration-backfill"
DELTA = "integration-delta"
WEBHOOK = "integration-webhook"
HEALTH = "integration-health"
ALL_QUEUES: tuple[str, ...] = (BACKFILL, DELTA, WEBHOOK, HEALTH)

#: The seed's per-queue concurrency at INTEGRATION_WORKER_CONCURRENCY=5 (the default).
BASE_CONCURRENCY: dict[str, int] = {BACKFILL: 2, DELTA: 5, WEBHOOK: 10, HEALTH: 3}

#: Dotted paths of the job functions (RQ stores the path, not a pickled function).
JOB_BACKFILL = "nexus_core.jobs.run_backfill"
JOB_DELTA = "nexus_core.jobs.run_delta"
JOB_WEBHOOK = "nexus_core.jobs.run_webhook"
JOB_HEALTH = "nexus_core.jobs.run_health_check"


def concurrency(queue: str, worker_concurrency: int = 5) -> int:
    """The seed's concurrency for ``queue``, scaled by INTEGRATION_WORKER_CONCURRENCY / 5."""
    return max(1, round(BASE_CONCURRENCY[queue] * worker_concurrency / 5))


def _safe(part: str) -> str:
    # RQ job ids become Redis key parts: keep them printable and bounded.
    return part if part.replace("-", "").replace("_", "").replace(".", "").isalnum() and len(
        part
    ) <= 64 else hashlib.sha256(part.encode()).hexdigest()[:16]


def job_id(kind: str, provider: str, tenant_id: str, install_id: str, *extra: str) -> str:
    """Deterministic job id: one active backfill per installation and stream, one delta per
    cron slot, one webhook job per delivery and installation."""
    return ":".join(["nexus", kind, *(_safe(p) for p in (provider, tenant_id, install_id, *extra))])


def redis_connection(settings: Settings | None = None, url: str | None = None) -> redis.Redis:
    """A Redis client for REDIS_URL (or REDIS_HOST/PORT/PASSWORD/DB) with sane timeouts."""
    import redis as redis_lib

    if url is None:
        from nexus_core.config import get_settings

        url = (settings or get_settings()).redis_url
    return redis_lib.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
    )


def queue(name: str, connection: Any) -> Any:
    """An RQ queue using the JSON serializer — job payloads are never pickled."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(name, connection=connection, serializer=JSONSerializer)
