"""``nexus doctor``: check the deployment and explain how to fix what is wrong."""

from __future__ import annotations

import click

from nexus_core.commands._output import echo_json


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True,
              help="Print the findings as JSON ({ok, findings: [{check, status, message, "
              "fix}]}).")
def doctor(as_json: bool) -> None:
    """Check this deployment and say how to fix each problem found. Exits 1 when a check
    fails (warnings alone exit 0).

    \b
    Redis      reachable, version, maxmemory-policy noeviction, persistence (AOF; a warning
               in development, a failure with NEXUS_ENV=production)
    database   reachable, schema migrated
    keys       encryption keys configured; a stored credential under each key in use decrypts
    plugins    every plugin loaded (or why not)
    providers  each provider's required variables (OAuth client id/secret, webhook secret)
    workers    a worker listens on every queue; a `nexus scheduler` runs when installations
               need periodic deltas and health checks; RQ's scheduler runs for retries
    dlq        jobs in the dead-letter queue

    The doctor only looks: it starts no Redis, migrates nothing, creates no key file and
    prints no secret. Run it with the environment (and .env) of the processes it is about.
    """
    import attrs

    from nexus_core.doctor import diagnose, failed, iter_lines

    findings = diagnose()
    bad = failed(findings)
    if as_json:
        echo_json({"ok": not bad, "findings": [attrs.asdict(f) for f in findings]})
    else:
        for line in iter_lines(findings):
            click.echo(line)
        fails = sum(f.status == "fail" for f in findings)
        warns = sum(f.status == "warn" for f in findings)
        click.echo(f"\n{fails} failed, {warns} warning(s)" if fails or warns else
                   "\neverything checked is in order")
    if bad:
        raise SystemExit(1)
