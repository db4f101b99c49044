"""``nexus installs``: add, list, show, disable, enable and remove installations.

Nothing here ever prints a secret: credentials are summarized (which tokens exist, expiry,
scopes, key id), never shown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from nexus_core.commands._output import echo_json, echo_table, user_errors
from nexus_core.models import INSTALL_STATUSES

_tenant = click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
_install = click.option("--install", "install_id", required=True, help="Installation id.")


@contextmanager
def _service() -> Iterator[Any]:
    """The service, with SDK errors turned into a clean message and connections closed."""
    from nexus_core.service import IntegrationService

    service = IntegrationService()
    try:
        with user_errors():
            yield service
    finally:
        service.close()


def _row(inst: Any) -> dict[str, Any]:
    from nexus_core.converters import unstructure

    return unstructure(inst)


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is not valid JSON: {exc}") from None


@click.group()
def installs() -> None:
    """Manage installations: one tenant's connection to one provider account."""


@installs.command("add")
@click.argument("provider")
@_tenant
@_install
@click.option("--account-id", help="The provider account id (HubSpot hub id, Slack team id, ...).")
@click.option("--config", "config_json", help="Installation config as a JSON object.")
@click.option(
    "--credentials-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON file with credentials (access_token, refresh_token, expires_at, api_key, ...).",
)
def add(
    provider: str, tenant_id: str, install_id: str, account_id: str | None,
    config_json: str | None, credentials_file: Path | None,
) -> None:
    """Add an installation of PROVIDER for a tenant (credentials are encrypted at rest).

    An OAuth2 provider's installation added without --credentials-file waits as
    pending_authorization until its tenant connects it (`nexus auth link`)."""
    from nexus_core.converters import structure
    from nexus_core.models import Credentials

    config = _json_arg(config_json, "--config") if config_json else None
    if config is not None and not isinstance(config, dict):
        raise click.BadParameter("--config must be a JSON object")
    creds = None
    if credentials_file is not None:
        data = _json_arg(credentials_file.read_text(), str(credentials_file))
        if not isinstance(data, dict):
            raise click.BadParameter("the credentials file must hold a JSON object")
        known = {a.name for a in Credentials.__attrs_attrs__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise click.BadParameter(
                f"unknown credential field(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        try:
            creds = structure(data, Credentials)
        except Exception as exc:  # cattrs' validation errors
            raise click.BadParameter(f"invalid credentials file: {exc}") from None
    with _service() as service:
        inst = service.install(
            provider, tenant_id, install_id, account_id=account_id, config=config,
            credentials=creds,
        )
        url = service.webhook_url(inst)
    click.echo(
        f"added {inst.provider} installation {inst.install_id} for tenant {inst.tenant_id}"
        + (" (with credentials)" if creds else "") + f": {inst.status}"
    )
    if inst.status == "pending_authorization":
        click.echo(f"  it syncs once the tenant connects it: `nexus auth link {inst.provider} "
                   f"--tenant {inst.tenant_id} --install {inst.install_id}`")
    if url:
        click.echo(f"  webhook URL: {url}" + _relative_note(url))


def _cursor(inst: Any) -> str:
    """The opaque ``--after`` value for the page after ``inst``."""
    raw = json.dumps([inst["tenant_id"], inst["install_id"]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    try:
        tenant, install = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, TypeError):
        raise click.BadParameter("not a cursor printed by `nexus installs list`",
                                 param_hint="--after") from None
    return str(tenant), str(install)


@installs.command("list")
@click.option("--tenant", "tenant_id", help="Only this tenant (default: every tenant, operator).")
@click.option("--provider", help="Only this provider.")
@click.option("--status", type=click.Choice(list(INSTALL_STATUSES)))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="Installations per page.")
@click.option("--after", metavar="CURSOR",
              help="Start after this cursor (printed below a page that has more).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_installs(
    tenant_id: str | None, provider: str | None, status: str | None, limit: int,
    after: str | None, as_json: bool,
) -> None:
    """List installations (never their secrets), a page at a time, by tenant then install id.
    Below a full page, the cursor for the next one: `--after CURSOR`.

    HEALTH is the last health check (`nexus health`, or the scheduler's every
    NEXUS_HEALTH_INTERVAL seconds): `ok <time>`, `BAD <time>: <reason>`, or `-` if never
    checked."""
    from nexus_core.converters import unstructure
    from nexus_core.health import describe

    start = _after(after)
    with _service() as service:
        # One row more than the page tells whether another page follows.
        rows = [_row(i) for i in service.list_installations(
            tenant_id, provider=provider, status=status, limit=limit + 1, after=start
        )]
        more = len(rows) > limit
        rows = rows[:limit]
        checks = service.store.health_of((r["tenant_id"], r["install_id"]) for r in rows)
    for r in rows:
        found = checks.get((r["tenant_id"], r["install_id"]))
        r["health"] = None if found is None else unstructure(found)
    if more:
        click.echo(f"more: nexus installs list --after {_cursor(rows[-1])}"
                   + (f" --limit {limit}" if limit != 100 else ""), err=True)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        where = f" for tenant {tenant_id!r}" if tenant_id else ""
        click.echo(f"No installations{where}"
                   + (" after that cursor." if start else
                      ". Add one with `nexus installs add PROVIDER ...`."))
        return
    echo_table(
        ["TENANT", "INSTALL", "PROVIDER", "ACCOUNT", "STATUS", "UPDATED", "HEALTH"],
        [[r["tenant_id"], r["install_id"], r["provider"], r["account_id"], r["status"],
          r["updated_at"][:19], describe(checks.get((r["tenant_id"], r["install_id"])))]
         for r in rows],
    )


@installs.command("show")
@_tenant
@_install
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show(tenant_id: str, install_id: str, as_json: bool) -> None:
    """Show one installation: status, config, credential summary, checkpoints, recent runs
    and its last health check (authValid, apiAccessible, rateLimitStatus, errorCount, when)."""
    from nexus_core.converters import unstructure

    with _service() as service:
        inst = service.get_installation(tenant_id, install_id)
        data = _row(inst)
        data["webhook_url"] = service.webhook_url(inst)
        store = service.store
        summary = store.credentials_summary(tenant_id, install_id)
        data["credentials"] = unstructure(summary) if summary else None
        data["checkpoints"] = [
            {"stream": s, "kind": k, "cursor": c.cursor, "seq": c.seq,
             "updated_at": unstructure(c.updated_at)}
            for (s, k), c in store.list_checkpoints(tenant_id, install_id).items()
        ]
        data["recent_runs"] = unstructure(store.list_runs(tenant_id, install_id, limit=5))
        last_check = store.get_health(tenant_id, install_id)
        data["health"] = None if last_check is None else unstructure(last_check)
        limits = effective_rate_limits(service.get_connector(inst.provider), inst.config)
    data["rate_limits"] = limits
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key == "rate_limits":
            value = describe_rate_limits(value)
        elif key == "health":
            value = _describe_health(last_check)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = "; ".join(
                ", ".join(f"{k}={v}" for k, v in item.items() if v is not None)
                for item in value
            ) or "-"
        click.echo(f"{key:14} {'-' if value is None else value}")


def _describe_health(check: Any) -> str:
    """``ok 2026-... (authValid=true apiAccessible=true rateLimitStatus=... errorCount=0)``."""
    from nexus_core.health import describe

    if check is None:
        return "never checked (`nexus health PROVIDER --tenant T --install I`)"
    return (f"{describe(check)} (authValid={str(check.auth_valid).lower()} "
            f"apiAccessible={str(check.api_accessible).lower()} "
            f"rateLimitStatus={check.rate_limit_status or '-'} errorCount={check.error_count})")


def effective_rate_limits(provider: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The limits an installation's requests run under: the provider's, with the
    installation's ``rate_limits`` tier applied; ``tier`` says which of them it changed."""
    from nexus_core.converters import unstructure

    declared = provider.rate_limits
    effective = declared.with_overrides(config.get("rate_limits"))
    out = unstructure(effective)
    out["tier"] = "installation" if effective != declared else "provider"
    return out


def describe_rate_limits(limits: dict[str, Any]) -> str:
    """``10 req/s, burst 10; search: 4 req/s, burst 1 (provider defaults)``."""
    def one(values: dict[str, Any]) -> str:
        return f"{values['requests_per_second']:g} req/s, burst {values['burst_size']}"

    parts = [one(limits)] + [f"{name}: {one(b)}" for name, b in limits["buckets"].items()]
    source = "set by this installation" if limits["tier"] == "installation" \
        else "provider defaults"
    return "; ".join(parts) + f" ({source})"


def _relative_note(url: str) -> str:
    return " (after the public URL of `nexus serve`: set NEXUS_PUBLIC_URL)" \
        if url.startswith("/") else ""


def parse_assignments(items: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that is JSON (``20``, ``true``, ``["a"]``, ``null``) is
    taken as such, anything else as a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def config_option(fn: Any) -> Any:
    """``--config JSON`` and ``--set KEY=VALUE`` (repeatable), shared by installs and auth."""
    fn = click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                      help="Set one config key (dotted keys reach nested objects; JSON values "
                      "such as 20, true, [\"a\"] or null are parsed; null removes the key). "
                      "Repeatable.")(fn)
    return click.option("--config", "config_json", metavar="JSON",
                        help="The whole installation config as a JSON object.")(fn)


def read_config(config_json: str | None) -> dict[str, Any] | None:
    if config_json is None:
        return None
    config = _json_arg(config_json, "--config")
    if not isinstance(config, dict):
        raise click.BadParameter("--config must be a JSON object")
    return config


@installs.command("update")
@_tenant
@_install
@config_option
def update(tenant_id: str, install_id: str, config_json: str | None,
           assignments: tuple[str, ...]) -> None:
    """Change an installation's config (validated; the next sync uses it).

    \b
    nexus installs update --tenant t1 --install i1 --set streams='["contacts"]'
    nexus installs update --tenant t1 --install i1 --set rate_limits.requests_per_second=20
    nexus installs update --tenant t1 --install i1 --config '{"streams": ["deals"]}'
    """
    config = read_config(config_json)
    changes = parse_assignments(assignments)
    if config is None and not changes:
        raise click.UsageError("give --config JSON and/or --set KEY=VALUE")
    with _service() as service:
        inst = service.update_installation(tenant_id, install_id, config=config, changes=changes)
    click.echo(f"installation {inst.install_id} of tenant {inst.tenant_id}: config "
               f"{json.dumps(inst.config, sort_keys=True)}")


@installs.command("rotate-webhook-key")
@_tenant
@_install
def rotate_webhook_key(tenant_id: str, install_id: str) -> None:
    """Give an installation a new webhook URL; the old one stops working at once (update the
    URL at the provider right after)."""
    with _service() as service:
        inst = service.rotate_webhook_key(tenant_id, install_id)
        url = service.webhook_url(inst)
    click.echo(f"new webhook URL of installation {inst.install_id} of tenant "
               f"{inst.tenant_id}: {url or '(its provider takes no webhooks)'}"
               + _relative_note(url or ""))


def _set_status(tenant_id: str, install_id: str, status: str) -> None:
    with _service() as service:
        inst = service.set_installation_status(tenant_id, install_id, status)
    click.echo(f"installation {inst.install_id} of tenant {inst.tenant_id} is now {inst.status}")


@installs.command("disable")
@_tenant
@_install
def disable(tenant_id: str, install_id: str) -> None:
    """Stop syncing an installation (credentials are kept)."""
    _set_status(tenant_id, install_id, "disabled")


@installs.command("enable")
@_tenant
@_install
def enable(tenant_id: str, install_id: str) -> None:
    """Mark an installation active again."""
    _set_status(tenant_id, install_id, "active")


@installs.command("remove")
@_tenant
@_install
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(tenant_id: str, install_id: str, yes: bool) -> None:
    """Delete an installation with its credentials, checkpoints and pending OAuth links."""
    with _service() as service:
        service.get_installation(tenant_id, install_id)
        if not yes:
            click.confirm(
                f"Remove installation {install_id} of tenant {tenant_id} and its credentials?",
                abort=True,
            )
        service.remove_installation(tenant_id, install_id)
    click.echo(f"removed installation {install_id} of tenant {tenant_id}")
