"""``nexus keys``: the credential encryption key ring (NEXUS_ENCRYPTION_KEYS)."""

from __future__ import annotations

import click

from nexus_core.commands._output import echo_json, user_errors


@click.group()
def keys() -> None:
    """Manage the keys that encrypt credentials at rest.

    Rotation: put a new key first in NEXUS_ENCRYPTION_KEYS (`NEW,OLD`), run `nexus keys rotate`,
    then remove OLD.
    """


@keys.command("generate")
@click.option("--webhook", is_flag=True,
              help="A Standard Webhooks signing secret (whsec_...) instead, for "
              "NEXUS_SINK_SECRET.")
def generate(webhook: bool) -> None:
    """Print a new random key (base64url, 32 bytes) for NEXUS_ENCRYPTION_KEYS."""
    if webhook:
        import base64
        import secrets

        click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        return
    from nexus_core.crypto import generate_key

    click.echo(generate_key())


@keys.command("rotate")
@click.option("--json", "as_json", is_flag=True, help="Print counts as JSON.")
def rotate(as_json: bool) -> None:
    """Re-encrypt every stored credential under the first key of NEXUS_ENCRYPTION_KEYS."""
    from nexus_core.config import get_settings
    from nexus_core.store import Store

    with user_errors():
        store = Store.from_settings(get_settings())
        try:
            counts = store.rotate_keys()
            usage = store.key_usage()
        finally:
            store.close()
    if as_json:
        echo_json({**counts, "primary_key_id": store.keyring.primary_id, "key_usage": usage})
        return
    click.echo(
        f"re-encrypted {counts['rotated']} secret(s) under key {store.keyring.primary_id}; "
        f"{counts['current']} already used it"
    )
    old = [k for k in usage if k != store.keyring.primary_id]
    if not old:
        click.echo("no credential uses an older key: you may remove old keys now")


@keys.command("status")
def status() -> None:
    """Show the configured key ids and how many credentials each encrypts."""
    from nexus_core.config import get_settings
    from nexus_core.store import Store

    with user_errors():
        store = Store.from_settings(get_settings())
        try:
            usage = store.key_usage()
        finally:
            store.close()
    for kid in store.keyring.key_ids:
        role = "primary" if kid == store.keyring.primary_id else "decrypt-only"
        click.echo(f"{kid}  {role:12}  {usage.pop(kid, 0)} credential(s)")
    for kid, n in usage.items():
        click.echo(f"{kid}  MISSING       {n} credential(s) encrypted under a key not configured")
