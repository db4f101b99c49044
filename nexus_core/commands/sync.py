"""``nexus sync backfill|delta`` and ``nexus runs list``."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from nexus_core.commands._output import echo_json, echo_table, user_errors

_TERMINAL = ("finished", "failed", "stopped", "canceled")


@click.group()
def sync() -> None:
    """Start syncs: a full backfill or a delta from the stored cursor."""


def _start(kind: str, provider: str, tenant: str, install: str, stream: str | None,
           wait: bool, as_json: bool) -> None:
    with user_errors():
        if wait:
            _start_and_follow(kind, provider, tenant, install, stream, as_json)
            return
        from nexus_core.service import IntegrationService

        service = IntegrationService().initialize()
        start = service.start_backfill if kind == "backfill" else service.start_delta
        job_id = start(provider, tenant, install, stream)
        if as_json:
            echo_json({"job_id": job_id})
        else:
            click.echo(job_id)


def _start_and_follow(kind: str, provider: str, tenant: str, install: str,
                      stream: str | None, as_json: bool) -> None:
    """``--wait``: start with Redis alone (the job checks the installation and records the run,
    :func:`~nexus_core.sync.enqueue.start_sync_by_job`) and follow the sync's progress stream
    — this process never opens the store (no SQLAlchemy import)."""
    from nexus_core.config import get_settings
    from nexus_core.plugins import load_plugins
    from nexus_core.queues import redis_connection
    from nexus_core.sync.enqueue import SyncOptions, start_sync_by_job

    settings = get_settings()
    load_plugins().provider(provider)  # an unknown provider is an error now, not in a job
    redis = redis_connection(settings)
    job_id = start_sync_by_job(redis, kind, provider, tenant, install, stream,
                               opts=SyncOptions.from_settings(settings))
    result = _wait(redis, job_id, quiet=as_json)
    if as_json:
        echo_json(result)
    elif result["error"]:
        click.echo(f"{kind} {result['status']}: {result['error']}", err=True)
    if result["status"] != "succeeded":
        sys.exit(1)


def _wait(redis: Any, job_id: str, *, quiet: bool = False) -> dict[str, Any]:
    """Follow a sync (across its continuation jobs) until it ends, drawing a progress line.
    Woken by each event of its progress stream (:mod:`nexus_core.sync.follow`); when none comes
    for 2 s, the current job is looked at (a job run by an older worker publishes nothing)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from nexus_core.sync import follow

    started = time.monotonic()
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    run_id = (job.kwargs or {}).get("run_id") or (job.meta or {}).get("nexus_run_id")
    state: dict[str, Any] = {"job_id": job_id, "run_id": run_id, "status": "queued",
                             "pages": 0, "records": 0, "error": None}

    def draw() -> None:
        if quiet:
            return
        # The sync's own duration when its events carry it (a follower may start late).
        seconds = state.get("seconds") or (time.monotonic() - started)
        rate = state["records"] / max(seconds, 1e-6)
        click.echo(f"\r{state['job_id'][-40:]:40}  {state['status']:12} pages "
                   f"{state['pages']:6}  records {state['records']:9}  {rate:8.0f} rec/s",
                   nl=False, err=True)

    def settled_without_events() -> bool:
        """The current job ended but told nobody (an older worker): read what RQ kept."""
        try:
            current = Job.fetch(state["job_id"], connection=redis, serializer=JSONSerializer)
        except NoSuchJobError:
            state["status"] = "succeeded"
            return True
        status = current.get_status(refresh=False).value
        if status == "finished":
            result = current.return_value()
            result = result if isinstance(result, dict) else {}
            if result.get("next_job_id"):
                state["job_id"] = result["next_job_id"]
                return False
            # "stale": another runner of the same sync committed and carries on
            state["status"] = {"stale": "succeeded"}.get(result.get("status", ""),
                                                          result.get("status") or "succeeded")
            for field in ("pages", "records", "run_id"):
                if result.get(field) is not None:
                    state[field] = result[field]
            return True
        if status in _TERMINAL:
            latest = current.latest_result()
            state["status"] = "failed"
            state["error"] = (latest.exc_string or "").strip().splitlines()[-1] \
                if latest is not None and latest.exc_string else status
            return True
        state["status"] = status
        return False

    draw()
    for event in follow.events(redis, follow.key_of(job)):
        if event is None:
            if settled_without_events():
                break
            draw()
            continue
        state["pages"] = event.get("pages", state["pages"])
        state["records"] = event.get("records", state["records"])
        if isinstance(event.get("seconds"), int | float):
            state["seconds"] = event["seconds"]
        if event.get("run_id"):
            state["run_id"] = event["run_id"]
        kind = event["type"]
        if kind == "continued":
            state["job_id"], state["status"] = event["next_job_id"], "continued"
        elif kind == "done":
            state["job_id"] = event.get("job_id", state["job_id"])
            state["status"], state["error"] = event["status"], event.get("error")
            break
        else:
            state["status"] = {"progress": "running"}.get(kind, kind)
            state["error"] = event.get("error")
        draw()
    draw()
    if not quiet:
        click.echo("", err=True)
    return state


def _common(fn: Any) -> Any:
    for option in reversed([
        click.argument("provider"),
        click.option("--tenant", "-t", required=True, help="Tenant id."),
        click.option("--install", "-i", required=True, help="Installation id."),
        click.option("--stream", "-s", default=None, help="One stream (default: every stream)."),
        click.option("--wait", is_flag=True,
                     help="Follow the sync with a progress line (pages, records, rate) until it "
                     "ends; exit 1 if it failed."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]):
        fn = option(fn)
    return fn


@sync.command("backfill")
@_common
def backfill(provider: str, tenant: str, install: str, stream: str | None, wait: bool,
             as_json: bool) -> None:
    """Backfill an installation's full history (resumes an interrupted one; prints the job id;
    an active backfill's id if one is running)."""
    _start("backfill", provider, tenant, install, stream, wait, as_json)


@sync.command("delta")
@_common
def delta(provider: str, tenant: str, install: str, stream: str | None, wait: bool,
          as_json: bool) -> None:
    """Read changes since the stored delta cursor (set when a backfill completes)."""
    _start("delta", provider, tenant, install, stream, wait, as_json)


@click.group()
def runs() -> None:
    """Sync-run history (recorded in the store)."""


@runs.command("list")
@click.option("--tenant", "-t", default=None, help="One tenant (default: every tenant).")
@click.option("--install", "-i", default=None, help="One installation (needs --tenant).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_runs(tenant: str | None, install: str | None, limit: int, as_json: bool) -> None:
    """List sync runs, newest first: kind, stream, status, pages, records, duration, error."""
    import attrs

    from nexus_core.store import Store

    if install and not tenant:
        raise click.UsageError("--install needs --tenant (install ids are unique per tenant)")
    with user_errors():
        rows = Store.from_settings().list_runs(tenant, install, limit)
    if as_json:
        echo_json([attrs.asdict(r) for r in rows])
        return
    if not rows:
        click.echo("No sync runs yet. Start one with `nexus sync backfill PROVIDER --tenant T "
                   "--install I`.")
        return

    def took(r: Any) -> str:
        if r.finished_at is None:
            return ""
        return f"{(r.finished_at - r.started_at).total_seconds():.1f}s"

    echo_table(
        ["RUN", "TENANT", "INSTALL", "KIND", "STREAM", "STATUS", "PAGES", "RECORDS", "TOOK",
         "STARTED", "ERROR"],
        [[r.run_id[:12], r.tenant_id, r.install_id, r.kind, r.stream or "all", r.status,
          r.pages, r.records, took(r), r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
          (r.error or "")[:60]] for r in rows],
    )
