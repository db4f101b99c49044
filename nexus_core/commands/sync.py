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
    from nexus_core.service import IntegrationService

    with user_errors():
        service = IntegrationService().initialize()
        start = service.start_backfill if kind == "backfill" else service.start_delta
        job_id = start(provider, tenant, install, stream)
        if not wait:
            if as_json:
                echo_json({"job_id": job_id})
            else:
                click.echo(job_id)
            return
        result = _wait(service, tenant, job_id, quiet=as_json)
        if as_json:
            echo_json(result)
        if result["status"] != "succeeded":
            sys.exit(1)


def _wait(service: Any, tenant: str, job_id: str, *, quiet: bool = False,
          poll: float = 0.5) -> dict[str, Any]:
    """Follow a sync (across its continuation jobs) until it ends, drawing a progress line."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.serializers import JSONSerializer

    redis, store = service.redis, service.store
    started = time.monotonic()
    run_id = None
    current = job_id
    status = "queued"
    run = None
    while True:
        try:
            job = Job.fetch(current, connection=redis, serializer=JSONSerializer)
        except NoSuchJobError:
            status = "finished"
            job = None
        if job is not None:
            run_id = run_id or job.kwargs.get("run_id") or job.meta.get("nexus_run_id")
            status = job.get_status(refresh=False).value
            result = job.return_value() if status == "finished" else None
            if isinstance(result, dict) and result.get("next_job_id"):
                current = result["next_job_id"]
                continue
        if run_id:
            run = store.get_run(tenant, run_id)
        pages = run.pages if run else 0
        records = run.records if run else 0
        rate = records / max(time.monotonic() - started, 1e-6)
        if not quiet:
            click.echo(f"\r{current[-40:]:40}  {status:12} pages {pages:6}  records {records:9}  "
                       f"{rate:8.0f} rec/s", nl=False, err=True)
        if status in _TERMINAL:
            break
        time.sleep(poll)
    if not quiet:
        click.echo("", err=True)
    final = "succeeded" if status == "finished" and (run is None or run.status == "succeeded") \
        else (run.status if run is not None and run.status != "running" else status)
    return {"job_id": current, "run_id": run_id, "status": final,
            "pages": run.pages if run else 0, "records": run.records if run else 0,
            "error": run.error if run else None}


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
