"""``nexus dlq``: the dead-letter queue = RQ's FailedJobRegistry of each integration queue."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from nexus_core.commands._output import echo_json, echo_table, user_errors

_DURATION = re.compile(r"^([0-9]{1,15}(?:\.[0-9]{1,9})?)([smhdw])$", re.ASCII)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w``."""
    m = _DURATION.match(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r:.40} is not a duration such as 30m, 12h or 7d")
    seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds > 100 * 365 * 86400:
        raise click.BadParameter(f"{text!r:.40} is not a duration such as 30m, 12h or 7d "
                                 "(at most 100 years)")
    return timedelta(seconds=seconds)


def error_line(traceback_text: str) -> str:
    """The exception line of a traceback (``ProviderError: HTTP 500 ... [provider=...]``), not
    its last line: an SDK error's message ends with an indented ``hint:`` line."""
    for line in reversed(traceback_text.strip().splitlines()):
        if line and not line[0].isspace():
            return re.sub(r"^(?:[A-Za-z_][\w]*\.)+(?=[A-Za-z_]\w*:)", "", line)
    return ""


def _queue_names(queue: str | None) -> list[str]:
    from nexus_core.worker import resolve_queues

    return resolve_queues([queue] if queue else None)


def failed_jobs(connection: Any, queue: str | None = None) -> list[dict[str, Any]]:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import queues as q

    out = []
    for name in _queue_names(queue):
        registry = q.queue(name, connection).failed_job_registry
        ids = registry.get_job_ids(cleanup=False)
        for job in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer):
            if job is None:
                continue
            result = job.latest_result()
            error = (result.exc_string if result is not None and result.exc_string else "") or ""
            last = error_line(error)
            kwargs = job.kwargs or {}
            out.append({
                "job_id": job.id, "queue": name, "function": job.func_name,
                "provider": kwargs.get("provider"), "tenant_id": kwargs.get("tenant_id"),
                "install_id": kwargs.get("install_id"), "stream": kwargs.get("stream"),
                "failed_at": job.ended_at, "enqueued_at": job.enqueued_at,
                "retries_left": job.retries_left, "error": last, "traceback": error,
            })
    return sorted(out, key=lambda j: j["failed_at"] or datetime.min.replace(tzinfo=UTC))


@click.group()
def dlq() -> None:
    """Dead-letter queue: jobs that failed for good (retries exhausted or a permanent error)."""


@dlq.command("list")
@click.option("--queue", "-q", default=None, help="One queue (backfill, delta, webhook, health).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with tracebacks).")
def list_(queue: str | None, as_json: bool) -> None:
    """List dead-lettered jobs, oldest first, with the last line of their error."""
    from nexus_core import runtime

    with user_errors():
        jobs = failed_jobs(runtime.get_redis(), queue)
    if as_json:
        echo_json(jobs)
        return
    if not jobs:
        click.echo("The dead-letter queue is empty.")
        return
    echo_table(["JOB", "QUEUE", "TENANT", "INSTALL", "FAILED", "ERROR"],
               [[j["job_id"], j["queue"].removeprefix("integration-"), j["tenant_id"],
                 j["install_id"], j["failed_at"].strftime("%Y-%m-%d %H:%M:%S")
                 if j["failed_at"] else "", j["error"][:80]] for j in jobs])


@dlq.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead-lettered job.")
@click.option("--queue", "-q", default=None, help="With --all: only this queue.")
def requeue(job_ids: tuple[str, ...], all_: bool, queue: str | None) -> None:
    """Put dead-lettered jobs back on their queue (with a fresh set of retries)."""
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import runtime
    from nexus_core.sync import SyncOptions
    from nexus_core.sync.rq_adapter import FAILURES_META

    if bool(job_ids) == all_:
        raise click.UsageError("give JOB_ID(s) or --all")
    with user_errors():
        redis = runtime.get_redis()
        opts = SyncOptions.from_settings(runtime.get_settings())
        ids = job_ids or tuple(j["job_id"] for j in failed_jobs(redis, queue))
        done = 0
        for job_id in ids:
            try:
                job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
                if opts.max_retries:
                    job.retries_left = opts.max_retries
                job.meta.pop("nexus_recoveries", None)
                job.meta.pop(FAILURES_META, None)  # a requeued job logs its traceback again
                job.save()
                job.requeue()
            except (NoSuchJobError, InvalidJobOperation):
                click.echo(f"{job_id}: not in the dead-letter queue", err=True)
                continue
            done += 1
            click.echo(f"requeued {job_id}")
    if not done and ids:
        raise SystemExit(1)
    if not ids:
        click.echo("The dead-letter queue is empty.")


@dlq.command("purge")
@click.option("--older-than", "older_than", required=True, metavar="DURATION",
              help="Delete dead-lettered jobs that failed longer ago than this (30m, 12h, 7d).")
@click.option("--queue", "-q", default=None, help="Only this queue.")
@click.option("--dry-run", is_flag=True, help="Only print what would be deleted.")
def purge(older_than: str, queue: str | None, dry_run: bool) -> None:
    """Delete old dead-lettered jobs for good."""
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core import runtime

    cutoff = datetime.now(UTC) - parse_duration(older_than)
    with user_errors():
        redis = runtime.get_redis()
        n = 0
        for j in failed_jobs(redis, queue):
            if j["failed_at"] is None or j["failed_at"] >= cutoff:
                continue
            n += 1
            if not dry_run:
                Job.fetch(j["job_id"], connection=redis, serializer=JSONSerializer).delete()
    click.echo(f"{'would delete' if dry_run else 'deleted'} {n} job(s) that failed before "
               f"{cutoff:%Y-%m-%d %H:%M:%S} UTC")
