"""``nexus stats``: queue depths, registry counts, workers and connector/sync statistics."""

from __future__ import annotations

import click

from nexus_core.commands._output import echo_json, echo_table, user_errors


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(as_json: bool) -> None:
    """Per queue: queued, started, scheduled, finished, failed (dead-letter) and workers; per
    tenant backfill rate limits in use; provider accounts paused by a rate limit or quota;
    installations and recent sync runs by status."""
    from nexus_core.service import IntegrationService

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
