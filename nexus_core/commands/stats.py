"""``nexus stats``: queue depths, registry counts, workers and connector/sync statistics."""

from __future__ import annotations

import click

from nexus_core.commands._output import echo_json, echo_table, user_errors


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--tenant", "tenant_id", default=None, metavar="TENANT",
              help="Only this tenant's figures: per installation and operation, the runs, "
              "success rate, p50/p95 duration, records and last error (from the store's run "
              "history).")
def stats(as_json: bool, tenant_id: str | None) -> None:
    """Per queue: queued, started, scheduled, finished, failed (dead-letter) and workers; per
    tenant backfill rate limits in use; provider accounts paused by a rate limit or quota;
    installations and recent sync runs by status. With --tenant: one tenant's sync figures."""
    from nexus_core.service import IntegrationService

    if tenant_id is not None:
        with user_errors():
            service = IntegrationService().initialize()
            data = service.get_tenant_stats(tenant_id)
        _print_tenant(data, as_json)
        return
    with user_errors():
        service = IntegrationService().initialize()
        data = {"queues": service.get_queue_stats(),
                "connectors": service.get_connector_stats(sync=True)}
    if as_json:
        echo_json(data)
        return
    q = data["queues"]
    echo_table(["QUEUE", "QUEUED", "STARTED", "SCHEDULED", "FINISHED", "FAILED(DLQ)", "WORKERS",
                "CONCURRENCY"],
               [[name, s["queued"], s["started"], s["scheduled"], s["finished"], s["failed"],
                 s["workers"], s["concurrency"]] for name, s in q["queues"].items()])
    click.echo(f"\nworkers: {q['workers']} (CONCURRENCY: the seed's per-queue concurrency x "
               f"INTEGRATION_WORKER_CONCURRENCY={q['worker_concurrency']} / 5; "
               "`nexus run-worker` starts that many per queue)")
    for key, rl in sorted(q["rate_limits"].items()):
        click.echo(f"  {key}: {rl['running']} running, {rl['waiting']} waiting "
                   f"(limit {rl['concurrency']})")
    for pause in q.get("paused", []):
        whose = f"account {pause['account']}" if "account" in pause else \
            f"installation {pause['tenant_id']}/{pause['install_id']}"
        bucket = f" (bucket {pause['bucket']})" if pause["bucket"] else ""
        click.echo(f"paused: {pause['provider']} {whose}{bucket} for {pause['seconds']:.0f} s"
                   + (f": {pause['reason']}" if pause["reason"] else "")
                   + " — its jobs are deferred, not failed")
    c = data["connectors"]
    click.echo(f"connectors: {c['connectors']}  plugins ok/skipped: {c['plugins_ok']}/"
               f"{c['plugins_skipped']}")
    click.echo(f"installations: {c['installations']}  recent runs: {c['recent_runs']}  "
               f"records (recent runs): {c['records_synced_recent']}")


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and unit == "%":
        return f"{value * 100:.1f}%"
    return f"{value}{unit}"


def _print_tenant(data: dict, as_json: bool) -> None:
    if as_json:
        echo_json(data)
        return
    if not data["by_installation"]:
        click.echo(f"tenant {data['tenant_id']}: no installations")
        return
    rows = []
    errors = []
    for inst in data["by_installation"]:
        ops = inst["operations"] or {"-": None}
        for kind, s in ops.items():
            if s is None:
                rows.append([inst["install_id"], inst["provider"], inst["status"], "-", 0, "-",
                             "-", "-", 0])
                continue
            rows.append([inst["install_id"], inst["provider"], inst["status"], kind, s["runs"],
                         _fmt(s["success_rate"], "%"), _fmt(s["p50_seconds"], " s"),
                         _fmt(s["p95_seconds"], " s"), s["records"]])
            if s["last_error"]:
                e = s["last_error"]
                errors.append(f"  {inst['install_id']} {kind} at {e['at']}: {e['error']}")
    echo_table(["INSTALLATION", "PROVIDER", "STATUS", "OPERATION", "RUNS", "SUCCESS", "P50",
                "P95", "RECORDS"], rows)
    o = data["overall"]
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(data["installations"].items()))
    click.echo(f"\ntenant {data['tenant_id']}: installations: {by_status}; "
               f"{o['runs']} run(s) considered, success {_fmt(o['success_rate'], '%')}, "
               f"records {o['records']}")
    if errors:
        click.echo("last errors:")
        for line in errors:
            click.echo(line)
