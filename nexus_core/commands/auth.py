"""``nexus auth``: connect links and authorization URLs for OAuth2 installations."""

from __future__ import annotations

from typing import Any

import click

from nexus_core.commands._output import echo_json, user_errors
from nexus_core.commands.installs import config_option, parse_assignments, read_config


@click.group()
def auth() -> None:
    """OAuth2 authorization for installations."""


def _config(config_json: str | None, assignments: tuple[str, ...]) -> dict[str, Any] | None:
    config = read_config(config_json)
    changes = parse_assignments(assignments)
    if changes:
        config = {**(config or {}), **changes}
    return config


@auth.command("link")
@click.argument("provider")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--install", "install_id", required=True, help="Installation id (new or existing).")
@config_option
@click.option("--reconnect", is_flag=True,
              help="Allow binding the installation to another provider account (logged).")
@click.option("--expires-in", type=click.FloatRange(1, 30 * 86400), metavar="SECONDS",
              help="Validity [default: NEXUS_CONNECT_LINK_TTL, 3600].")
@click.option("--base-url", help="Public URL of `nexus serve` [default: NEXUS_PUBLIC_URL].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (url, expires_at, ...).")
def link(provider: str, tenant_id: str, install_id: str, config_json: str | None,
         assignments: tuple[str, ...], reconnect: bool, expires_in: float | None,
         base_url: str | None, as_json: bool) -> None:
    """Print a connect link for PROVIDER: a single-use, expiring URL on `nexus serve` that
    starts the OAuth flow for this tenant's installation. Give it only to a user you have
    authenticated as acting for the tenant."""
    from nexus_core.service import IntegrationService

    config = _config(config_json, assignments)
    service = IntegrationService()
    try:
        with user_errors():
            info = service.create_connect_link(
                provider, tenant_id, install_id, config=config, expires_in=expires_in,
                intent="reconnect" if reconnect else "connect", base_url=base_url)
    finally:
        service.close()
    if as_json:
        echo_json({"url": info.url, "provider": info.provider, "tenant_id": info.tenant_id,
                   "install_id": info.install_id, "intent": info.intent,
                   "expires_at": info.expires_at.isoformat()})
        return
    click.echo(info.url)


@auth.command("url")
@click.argument("provider")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--install", "install_id", required=True, help="Installation id (new or existing).")
@click.option("--redirect-uri", help="Callback URL (default: the provider's *_REDIRECT_URI).")
@config_option
@click.option("--reconnect", is_flag=True,
              help="Allow binding the installation to another provider account (logged).")
def url(provider: str, tenant_id: str, install_id: str, redirect_uri: str | None,
        config_json: str | None, assignments: tuple[str, ...], reconnect: bool) -> None:
    """Print the provider's authorization URL for PROVIDER (for an operator at a terminal):
    open it to connect the installation.

    The link carries a one-time state bound to the tenant and installation, valid for
    NEXUS_OAUTH_STATE_TTL seconds (default 600); --config/--set are stored with the
    installation when the flow completes. To hand a link to a tenant's user, use
    `nexus auth link`.
    """
    from nexus_core.service import IntegrationService

    config = _config(config_json, assignments)
    service = IntegrationService()
    try:
        with user_errors():
            link = service.get_authorization_url(
                provider, tenant_id, install_id, redirect_uri, config=config,
                intent="reconnect" if reconnect else "connect")
    finally:
        service.close()
    click.echo(link)
