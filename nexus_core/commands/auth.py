"""``nexus auth``: start an OAuth2 connection from the command line."""

from __future__ import annotations

import click

from nexus_core.commands._output import user_errors


@click.group()
def auth() -> None:
    """OAuth2 authorization for installations."""


@auth.command("url")
@click.argument("provider")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id.")
@click.option("--install", "install_id", required=True, help="Installation id (new or existing).")
@click.option("--redirect-uri", help="Callback URL (default: the provider's *_REDIRECT_URI).")
def url(provider: str, tenant_id: str, install_id: str, redirect_uri: str | None) -> None:
    """Print the authorization URL for PROVIDER: open it to connect the installation.

    The link carries a one-time state bound to the tenant and installation, valid for
    NEXUS_OAUTH_STATE_TTL seconds (default 600).
    """
    from nexus_core.service import IntegrationService

    service = IntegrationService()
    try:
        with user_errors():
            link = service.get_authorization_url(provider, tenant_id, install_id, redirect_uri)
    finally:
        service.close()
    click.echo(link)
