"""Prometheus metrics of the SDK: plain metric objects, and the plumbing that gathers them from
every process.

Import the object you need and update it. Label values are bounded sets — provider ids,
operations, outcomes, HTTP methods, status codes, queue names; ``tenant_id`` stays empty and
:data:`BREAKER_STATE` (per ``install_id``) is not kept unless NEXUS_METRICS_TENANT_LABELS is on
(:func:`tenant_label`). Series that describe shared state (queue and dead-letter depths, open
breakers, installations needing re-authorization, the scheduler) are read from Redis and the
store when scraped (:mod:`nexus_core.exporter`), not counted per process. The series list is in
docs/metrics.md.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger
from prometheus_client import Counter, Gauge, Histogram

# -- HTTP client (nexus_core.http) ----------------------------------------------------------

HTTP_REQUESTS = Counter(
    "nexus_http_requests_total",
    "Provider API requests by final outcome: HTTP status code, 'error' (no answer), or "
    "'rate_limited' / 'breaker_open' (not sent)",
    ["provider", "method", "status"],
)
HTTP_DURATION = Histogram(
    "nexus_http_request_duration_seconds",
    "Provider API request latency, retries and rate-limit waits included",
    ["provider", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_RETRIES = Counter(
    "nexus_http_retries_total",
    "Provider API attempts that were retried, by reason (status code, connect, read, "
    "rate_limited, token_expired)",
    ["provider", "reason"],
)
TOKEN_REFRESHES = Counter(
    "nexus_http_token_refreshes_total",
    "Expired-token answers, by outcome (ok, failed, still_expired, no_refresh)",
    ["provider", "outcome"],
)

# -- Rate limiting (nexus_core.ratelimit) ---------------------------------------------------

RATE_LIMIT_WAIT = Histogram(
    "nexus_rate_limit_wait_seconds",
    "Time slept waiting for the shared rate limit (only waits > 0 are observed)",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
RATE_LIMITED = Counter(
    "nexus_rate_limited_total",
    "RateLimited raised (limiter: shared wait over the threshold), 429s or quota answers "
    "received (provider), quota reserve reached (quota_reserve)",
    ["provider", "source"],
)

# -- Circuit breaker (nexus_core.breaker) ---------------------------------------------------

BREAKER_STATE = Gauge(
    "nexus_breaker_state",
    "Circuit breaker state last seen by this process: 0 closed, 1 half-open, 2 open (only "
    "with NEXUS_METRICS_TENANT_LABELS: one series per installation)",
    ["provider", "install_id"],
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS = Counter(
    "nexus_breaker_transitions_total",
    "Circuit breaker transitions made by this process, by new state",
    ["provider", "state"],
)
BREAKER_REJECTIONS = Counter(
    "nexus_breaker_rejections_total",
    "Calls failed fast with ProviderUnavailable because the breaker was open or probing",
    ["provider"],
)

# -- Redis availability ---------------------------------------------------------------------

REDIS_FAIL_OPEN = Counter(
    "nexus_redis_fail_open_total",
    "Calls let through without the shared limiter/breaker because Redis was unreachable",
    ["component"],
)

# -- operations (nexus_core.sync, nexus_core.oauth): the seed's IntegrationMetrics ----------------

#: Outcomes of an operation: ``succeeded``; ``continued`` (a sync chunk out of time budget that
#: left its continuation); ``deferred`` (rate limit or open breaker: rescheduled, not failed);
#: ``stale`` (another runner owns the sync); ``failed`` (retried or dead-lettered: see
#: :data:`JOB_RETRIES` and :data:`JOBS_DEAD_LETTERED`); ``needs_reauth``.
OPERATIONS = ("backfill", "delta", "webhook", "auth", "refresh")

OPERATION_DURATION = Histogram(
    "nexus_operation_duration_seconds",
    "Duration of one operation (a sync job's chunk, a webhook job, an OAuth code exchange, a "
    "token refresh) by provider, operation and outcome; tenant_id is empty unless "
    "NEXUS_METRICS_TENANT_LABELS is on",
    ["provider", "operation", "outcome", "tenant_id"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
SYNC_PAGES = Counter(
    "nexus_sync_pages",
    "Pages a sync delivered to the sinks and committed",
    ["provider", "operation", "tenant_id"],
)
SYNC_RECORDS = Counter(
    "nexus_sync_records",
    "Records delivered to the sinks (backfill, delta pages; records a webhook carried)",
    ["provider", "operation", "tenant_id"],
)
WEBHOOK_EVENTS = Counter(
    "nexus_webhook_events",
    "Events the provider's handle_webhook returned, handed to process_events",
    ["provider", "tenant_id"],
)
JOB_RETRIES = Counter(
    "nexus_job_retries",
    "Failed jobs that RQ runs again (INTEGRATION_MAX_RETRIES, exponential backoff)",
    ["provider", "operation"],
)
JOB_DEFERRALS = Counter(
    "nexus_job_deferrals",
    "Jobs rescheduled instead of failed, by reason: rate_limited (RateLimited, a 429 or quota) "
    "or breaker_open (ProviderUnavailable); not counted as retries",
    ["provider", "operation", "reason"],
)
JOBS_DEAD_LETTERED = Counter(
    "nexus_jobs_dead_lettered",
    "Jobs that failed for good into the dead-letter queue (RQ's FailedJobRegistry), by "
    "reason: permanent (auth, config, not found) or exhausted (retries or deferrals used up)",
    ["provider", "operation", "reason"],
)
JOBS_RECOVERED = Counter(
    "nexus_jobs_recovered",
    "Abandoned jobs (their worker died; lease expired) requeued by a worker's sweep",
    ["queue"],
)
QUEUE_WAIT = Histogram(
    "nexus_queue_wait_seconds",
    "Time a job waited in its queue, from enqueue (or from its scheduled time) to its start",
    ["queue"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
NEEDS_REAUTH = Counter(
    "nexus_needs_reauth",
    "Installations marked needs_reauth, by where it was found (refresh, job, health)",
    ["provider", "source"],
)


def tenant_labels_on() -> bool:
    """NEXUS_METRICS_TENANT_LABELS, read once per process."""
    global _tenant_labels
    if _tenant_labels is None:
        try:
            from nexus_core.config import get_settings

            _tenant_labels = bool(get_settings().metrics_tenant_labels)
        except Exception:  # a malformed setting is reported at startup, not here
            _tenant_labels = False
    return _tenant_labels


def tenant_label(tenant_id: str | None) -> str:
    """The ``tenant_id`` label value: the tenant when NEXUS_METRICS_TENANT_LABELS is on, else
    empty (Prometheus treats an empty label as absent: one series per provider, whatever the
    number of tenants)."""
    return (tenant_id or "") if tenant_labels_on() else ""


_tenant_labels: bool | None = None


def reset_tenant_labels(value: bool | None = None) -> None:
    """Forget (or set) the NEXUS_METRICS_TENANT_LABELS value read by :func:`tenant_label`."""
    global _tenant_labels
    _tenant_labels = value


class Operation:
    """Times one operation and records it in :data:`OPERATION_DURATION` when it ends: the
    ``outcome`` set on it, else ``failed`` on an exception, else ``succeeded``."""

    __slots__ = ("provider", "operation", "tenant_id", "outcome", "_started")

    def __init__(self, provider: str, operation: str, tenant_id: str | None = None) -> None:
        self.provider = provider
        self.operation = operation
        self.tenant_id = tenant_id
        self.outcome: str | None = None
        self._started = 0.0

    def __enter__(self) -> Operation:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        outcome = self.outcome or ("failed" if exc_type is not None else "succeeded")
        if exc_type is not None and getattr(exc, "needs_reauth", False):
            outcome = "needs_reauth"
        try:
            OPERATION_DURATION.labels(self.provider, self.operation, outcome,
                                      tenant_label(self.tenant_id)).observe(
                time.perf_counter() - self._started)
        except Exception as err:  # metrics never fail the work they measure
            logger.debug("operation metric not recorded: {}", err)


def count_pages(provider: str, operation: str, tenant_id: str, pages: int, records: int) -> None:
    tenant = tenant_label(tenant_id)
    if pages:
        SYNC_PAGES.labels(provider, operation, tenant).inc(pages)
    if records:
        SYNC_RECORDS.labels(provider, operation, tenant).inc(records)


def deferral_reason(exc: BaseException) -> str:
    from nexus_core.errors import ProviderUnavailable

    return "breaker_open" if isinstance(exc, ProviderUnavailable) else "rate_limited"


def observe_queue_wait(job: Any) -> None:
    """The wait of ``job`` (an RQ job about to run): from its enqueue, or from the time it was
    scheduled for when it was scheduled (a retry, a deferral, a periodic delta)."""
    try:
        start = job.enqueued_at
        if start is None:
            return
        started = job.started_at or datetime.now(UTC).replace(tzinfo=None)
        if start.tzinfo is not None:
            start = start.astimezone(UTC).replace(tzinfo=None)
        if started.tzinfo is not None:
            started = started.astimezone(UTC).replace(tzinfo=None)
        QUEUE_WAIT.labels(job.origin).observe(max(0.0, (started - start).total_seconds()))
    except Exception as err:
        logger.debug("queue wait not recorded: {}", err)


# -- several processes: prometheus_client's multiprocess mode -----------------------------------
#
# `nexus serve` (gunicorn workers) and `nexus run-worker` (RQ workers forking a work-horse per
# job) each run in multiprocess mode in a private directory (:func:`use_private_dir`): every
# process writes its series to its own mmap files there and a scrape merges them
# (prometheus_client's MultiProcessCollector). A work-horse lives for one job: the horses of one
# worker share one set of files (:func:`become_work_horse`), so the directory holds a few files
# per worker, not a set per job ever run.

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_DIR_PREFIX = "nexus-"


def metrics_root(settings: Any = None) -> Path:
    """Where the processes of this machine keep their metrics directories (NEXUS_METRICS_DIR,
    default ``<tmp>/nexus-metrics``)."""
    if settings is None:
        from nexus_core.config import get_settings

        settings = get_settings()
    configured = settings.metrics_dir
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "nexus-metrics"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def use_private_dir(role: str, settings: Any = None) -> str:
    """Switch this process (and every process it starts) to multiprocess mode in a fresh
    directory ``<NEXUS_METRICS_DIR>/nexus-<role>-<pid>``; directories left by processes that
    are gone are removed first. Call it before any series is touched."""
    from prometheus_client import values

    from nexus_core.errors import ConfigError

    root = metrics_root(settings)
    path = root / f"{_DIR_PREFIX}{role}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob(f"{_DIR_PREFIX}*-*"):
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)  # a reused pid: start clean
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the metrics directory {path}: {exc.strerror or exc}",
            hint="set NEXUS_METRICS_DIR to a directory this user can write") from None
    os.environ[MULTIPROC_ENV] = str(path)
    # prometheus_client picks its value class when it is imported: set it now (the series here
    # create their values at their first .labels()), naming files by _process_identifier
    # (MultiProcessValue's documented parameter).
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked child that exits through atexit
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return str(path)


def multiprocess_dir() -> str | None:
    """This process's multiprocess directory, or None (single-process mode)."""
    return os.environ.get(MULTIPROC_ENV) or None


def _process_identifier() -> str:
    """The name of this process's files: its pid; in a work-horse, ``<worker pid>h<n>`` — the
    same for every horse of a worker (see :func:`become_work_horse`)."""
    if _horse_of is not None and os.getpid() != _horse_of[0]:
        return f"{_horse_of[0]}h{_horse_of[1]}"
    return str(os.getpid())


_horse_of: tuple[int, int] | None = None


def become_work_horse(worker_pid: int, worker_number: int = 0) -> None:
    """Called in a work-horse, before its job touches a series: its series go to the files its
    worker's horses share (``*_<worker pid>h<worker number>.db``; the number tells apart the
    workers one process runs one after the other). A worker runs one horse at a time, so the
    horses never write them at once; each horse starts from the figures the previous ones left
    and adds its own. The directory keeps one set of files per worker, not one per job, and no
    figure of a finished job is lost or counted twice."""
    global _horse_of
    _horse_of = (worker_pid, worker_number)


class _Collector:
    """prometheus_client's merge over the ``*.db`` files of one or more directories."""

    def __init__(self, dirs: list[str] | Callable[[], list[str]]) -> None:
        self.dirs = dirs

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        files: list[str] = []
        for d in self.dirs() if callable(self.dirs) else self.dirs:
            files.extend(glob.glob(os.path.join(d, "*.db")))
        return list(MultiProcessCollector.merge(files, accumulate=True))


def machine_dirs(settings: Any = None) -> list[str]:
    """Every nexus process directory under NEXUS_METRICS_DIR (``nexus metrics serve``)."""
    return sorted(str(p) for p in metrics_root(settings).glob(f"{_DIR_PREFIX}*-*") if p.is_dir())


def exposition(dirs: list[str] | Callable[[], list[str]] | None = None,
               state: Any = None) -> bytes:
    """The Prometheus text of this process tree (its multiprocess directory, or ``dirs``: a
    list, or a callable listing them at each scrape; the default registry in single-process
    mode), plus ``state``'s series read at scrape time."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    own = multiprocess_dir()
    if dirs is None and own:
        dirs = [own]
    if dirs is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(dirs))
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    if state is not None:
        extra = CollectorRegistry(auto_describe=False)
        extra.register(state)
        text += generate_latest(extra)
    return text
