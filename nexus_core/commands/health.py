"""``nexus health``: check one installation now, or have a worker check it."""

from __future__ import annotations

import click

from nexus_core.commands._output import echo_json, user_errors


@click.command("health")
@click.argument("provider")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--install", "install_id", required=True, help="Installation id.")
@click.option("--schedule", is_flag=True,
              help="Enqueue the check on the integration-health queue for a worker (at most "
              "one per installation and minute) and print its job id, instead of checking here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def health(provider: str, tenant_id: str, install_id: str, schedule: bool,
           as_json: bool) -> None:
    """Check an installation's health: are its credentials accepted (authValid), does the
    provider answer (apiAccessible), its rate-limit status and the errors seen.

    The answer is stored as the installation's last check, shown by `nexus installs list` and
    `nexus installs show`; an installation that turns unhealthy is logged once at WARNING with
    the reason. Exits 1 when it is unhealthy.

    Every active installation is also checked by `nexus scheduler` (or `run-worker
    --with-scheduler`) every NEXUS_HEALTH_INTERVAL seconds (default 900, 0: never), spread over
    the interval.
    """
    from nexus_core.converters import unstructure
    from nexus_core.health import reason
    from nexus_core.service import IntegrationService

    service = IntegrationService()
    try:
        with user_errors():
            if schedule:
                job_id = service.schedule_health_check(provider, tenant_id, install_id)
            else:
                result = service.health_check_immediate(provider, tenant_id, install_id)
    finally:
        service.close()
    if schedule:
        if as_json:
            echo_json({"job_id": job_id})
        else:
            click.echo(f"health check of {provider} installation {install_id} of tenant "
                       f"{tenant_id} enqueued: job {job_id} (a worker on integration-health "
                       "runs it; `nexus installs show` shows the result)")
        return
    if as_json:
        echo_json(unstructure(result))
    else:
        state = "healthy" if result.healthy else f"UNHEALTHY: {reason(result)}"
        click.echo(f"{provider} installation {install_id} of tenant {tenant_id}: {state}")
        click.echo(f"  authValid={str(result.auth_valid).lower()} "
                   f"apiAccessible={str(result.api_accessible).lower()} "
                   f"rateLimitStatus={result.rate_limit_status or '-'} "
                   f"errorCount={result.error_count}")
    if not result.healthy:
        raise SystemExit(1)
