"""``nexus dev``: a plugin author's inner loop — run one hook in this process, with no Redis,
worker or store, and print what it returns as JSON lines (like Singer's ``tap --config`` or
Airbyte's ``read``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from nexus_core.commands._output import user_errors


def _json_option(value: str | None, what: str) -> Any:
    """JSON text, or ``@path`` to a JSON file."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {value[1:]}: {exc.strerror}",
                                     param_hint=what) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None


def _context(provider_id: str, config_json: str | None, creds_json: str | None,
             account_id: str | None) -> Any:
    """A context like a job's: the provider's resilient session with these credentials, but
    no shared limiter or breaker (no Redis) and no refresh (no store)."""
    from nexus_core.converters import structure
    from nexus_core.http import ProviderSession
    from nexus_core.models import ConnectorContext, Credentials
    from nexus_core.plugins import load_plugins

    registry = load_plugins()
    provider = registry.provider(provider_id)
    config = _json_option(config_json, "--config") or {}
    if not isinstance(config, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--config")
    creds = None
    raw = _json_option(creds_json, "--credentials")
    if raw is not None:
        if not isinstance(raw, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--credentials")
        try:
            creds = structure(raw, Credentials)
        except Exception as exc:  # cattrs' validation errors
            raise click.BadParameter(f"not credentials: {exc}",
                                     param_hint="--credentials") from None
    elif provider.auth_type not in ("none",):
        click.echo(f"note: no --credentials for {provider.auth_type} provider {provider_id}",
                   err=True)
    account = account_id or (creds.extra.get("account_id") if creds else None)
    http = ProviderSession(provider, tenant_id="dev", install_id="dev", account_id=account,
                           registry=registry, credentials=lambda: creds, config=config)
    from loguru import logger

    ctx = ConnectorContext(tenant_id="dev", install_id="dev", provider=provider_id,
                           credentials=creds, config=config, account_id=account, http=http,
                           log=logger.bind(provider=provider_id, tenant_id="dev",
                                           install_id="dev"))
    return registry, provider, ctx


def _emit(obj: Any) -> None:
    from nexus_core.converters import unstructure

    click.echo(json.dumps(unstructure(obj), sort_keys=True, default=str))


_common = [
    click.argument("provider"),
    click.option("--config", "config_json", metavar="JSON|@FILE", help="Installation config."),
    click.option("--credentials", "creds_json", metavar="JSON|@FILE",
                 help="Credentials (access_token, api_key, ...), as stored."),
    click.option("--account-id", help="The provider account id (default: from credentials)."),
]


def _with_common(fn: Any) -> Any:
    for option in reversed(_common):
        fn = option(fn)
    return fn


@click.group()
def dev() -> None:
    """Run a provider's hooks in this process (no Redis, worker or store): records and events
    are printed as JSON lines on stdout, progress on stderr."""


def _pages(kind: str, provider: str, config_json: str | None, creds_json: str | None,
           account_id: str | None, stream: str | None, cursor: str | None,
           max_pages: int) -> None:
    with user_errors():
        registry, prov, ctx = _context(provider, config_json, creds_json, account_id)
        hook = registry.hook(kind, provider)
        names = [stream] if stream else list(getattr(prov, "stream_names", None)
                                             or [getattr(s, "name", s) for s in prov.streams])
        try:
            for name in names:
                at, pages, records, started = cursor, 0, 0, time.monotonic()
                while pages < max_pages:
                    page = hook(ctx=ctx, stream=name, cursor=at)
                    if page is None:
                        raise click.ClickException(f"{kind} returned nothing for {name}")
                    pages += 1
                    records += len(page.records)
                    for record in page.records:
                        _emit(record)
                    click.echo(f"{name}: page {pages}, {len(page.records)} records, "
                               f"next cursor {page.next_cursor!r}"
                               + (" (done)" if page.done else ""), err=True)
                    if page.done:
                        break
                    if page.next_cursor == at:
                        raise click.ClickException(
                            f"{kind} of {name} returned its own cursor again (paging loop)")
                    at = page.next_cursor
                click.echo(f"{name}: {records} records in {pages} page(s), "
                           f"{time.monotonic() - started:.1f} s", err=True)
        finally:
            ctx.http.close()


@dev.command("backfill")
@_with_common
@click.option("--stream", "-s", help="One stream (default: every stream).")
@click.option("--cursor", help="Start from this cursor (default: the beginning).")
@click.option("--max-pages", default=10, show_default=True, type=click.IntRange(1),
              help="Stop after this many pages per stream.")
def backfill(provider: str, config_json: str | None, creds_json: str | None,
             account_id: str | None, stream: str | None, cursor: str | None,
             max_pages: int) -> None:
    """Call PROVIDER's `backfill` hook page by page and print the records."""
    _pages("backfill", provider, config_json, creds_json, account_id, stream, cursor, max_pages)


@dev.command("delta")
@_with_common
@click.option("--stream", "-s", help="One stream (default: every stream).")
@click.option("--cursor", help="The delta cursor (what a backfill's last page returned).")
@click.option("--max-pages", default=10, show_default=True, type=click.IntRange(1))
def delta(provider: str, config_json: str | None, creds_json: str | None,
          account_id: str | None, stream: str | None, cursor: str | None,
          max_pages: int) -> None:
    """Call PROVIDER's `delta` hook from CURSOR and print the changed records."""
    _pages("delta", provider, config_json, creds_json, account_id, stream, cursor, max_pages)


@dev.command("webhook")
@_with_common
@click.option("--body", "body_path", required=True, metavar="FILE|-",
              help="The delivery's raw body (- for stdin).")
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME:VALUE",
              help="A request header (repeatable).")
@click.option("--url", default="http://localhost/webhooks/dev", show_default=True,
              help="The URL the provider called (some schemes sign it).")
@click.option("--verify", is_flag=True,
              help="Check the signature with the configured secret first (401 stops here).")
def webhook(provider: str, config_json: str | None, creds_json: str | None,
            account_id: str | None, body_path: str, headers: tuple[str, ...], url: str,
            verify: bool) -> None:
    """Call PROVIDER's `handle_webhook` hook on a delivery and print the events."""
    from nexus_core.models import WebhookRequest

    body = sys.stdin.buffer.read() if body_path == "-" else Path(body_path).read_bytes()
    parsed: dict[str, str] = {}
    for item in headers:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME:VALUE", param_hint="--header")
        parsed[name.strip().lower()] = value.strip()
    request = WebhookRequest(method="POST", url=url, headers=parsed, body=body)
    with user_errors():
        registry, prov, ctx = _context(provider, config_json, creds_json, account_id)
        try:
            if verify:
                from nexus_core.config import get_settings
                from nexus_core.webhook_schemes import Check, configured_secrets, verify_request

                settings = get_settings()
                verify_request(prov, request, configured_secrets(prov, settings),
                               Check(url=url, tolerance=settings.webhook_tolerance), registry)
                click.echo("signature: ok", err=True)
            events = registry.hook("handle_webhook", provider)(ctx=ctx, request=request) or []
        finally:
            ctx.http.close()
    for event in events:
        _emit(event)
    click.echo(f"{len(events)} event(s)", err=True)


@dev.command("health")
@_with_common
def health(provider: str, config_json: str | None, creds_json: str | None,
           account_id: str | None) -> None:
    """Call PROVIDER's `health_check` hook and print the result."""
    from nexus_core.health import check_health

    with user_errors():
        registry, _prov, ctx = _context(provider, config_json, creds_json, account_id)
        try:
            result = check_health(registry, ctx)
        finally:
            ctx.http.close()
    _emit(result)
    if not result.healthy:
        raise SystemExit(1)
