"""``nexus run-worker`` and ``nexus scheduler``: process sync jobs, schedule periodic deltas."""

from __future__ import annotations

import click

from nexus_core.commands._output import user_errors


@click.command("run-worker")
@click.option("--queues", "-q", "queue_names", multiple=True, metavar="QUEUE",
              help="Queues to listen on, in priority order (repeat or comma-separate): "
              "webhook, delta, health, backfill or their integration-* names. Default: all, "
              "latency-sensitive first.")
@click.option("--workers", "-n", default=None, type=click.IntRange(1),
              help="Run N workers, each listening on every queue given (RQ WorkerPool when > 1). "
              "Default: one pool per queue with the seed's concurrency x "
              "INTEGRATION_WORKER_CONCURRENCY / 5 (webhook 10, delta 5, health 3, backfill 2 at "
              "the default 5).")
@click.option("--burst", is_flag=True, help="Quit when the queues are empty.")
@click.option("--with-scheduler", is_flag=True,
              help="Also run the scheduler of periodic deltas and health checks (like `nexus "
              "scheduler`) in a child.")
@click.option("--no-fork", is_flag=True,
              help="Run jobs in the worker processes themselves (RQ SimpleWorker): less per-job "
              "cost, no isolation between jobs.")
@click.option("--metrics-port", default=None, type=click.IntRange(1, 65535),
              help="Serve /metrics (every worker and job of this command, plus queue and "
              "dead-letter depths) and /readyz on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Interface of the metrics port (0.0.0.0: every interface).")
def run_worker(queue_names: tuple[str, ...], workers: int | None, burst: bool,
               with_scheduler: bool, no_fork: bool, metrics_port: int | None,
               metrics_host: str) -> None:
    """Process sync jobs from Redis (REDIS_URL) with RQ workers.

    SIGTERM/SIGINT is a warm shutdown: a running backfill finishes its current page, commits its
    checkpoint, enqueues its continuation and the worker exits. A second signal kills the job
    (it resumes from its last checkpoint). Jobs of a worker that died are requeued by the next
    worker within NEXUS_JOB_LEASE_TTL seconds.
    """
    from nexus_core import exporter, metrics
    from nexus_core.runtime import check_startup, get_settings
    from nexus_core.worker import run_worker as run

    with user_errors():
        check_startup()
        settings = get_settings()
        # Every process of this command (pools, workers, the work-horse of each job) writes
        # its series under one directory; see nexus_core.metrics.
        metrics.use_private_dir("worker", settings)
        proc = None
        if metrics_port is not None:
            try:
                proc = exporter.start_exporter(metrics_host, metrics_port, settings)
            except OSError as exc:
                from nexus_core.errors import ConfigError

                raise ConfigError(f"cannot listen on {metrics_host}:{metrics_port} for "
                                  f"metrics: {exc.strerror or exc}") from None
        try:
            run(list(queue_names) or None, workers=workers, burst=burst,
                with_scheduler=with_scheduler, simple=no_fork)
        finally:
            exporter.stop_exporter(proc)


@click.command("scheduler")
def scheduler() -> None:
    """Enqueue a delta per active installation every NEXUS_DELTA_INTERVAL seconds and a health
    check every NEXUS_HEALTH_INTERVAL seconds (0: none), each spread over its interval.

    Running two schedulers is safe: each slot's job id is the same in both and only one claims
    it. `nexus doctor` reports when no scheduler runs (each one keeps a heartbeat in Redis).
    """
    from nexus_core.runtime import check_startup
    from nexus_core.scheduler import run_scheduler

    with user_errors():
        check_startup()
        run_scheduler()
