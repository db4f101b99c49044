"""``nexus providers``: the providers installed plugins offer."""

from __future__ import annotations

from typing import Any

import click

from nexus_core.commands._output import echo_json, echo_table, user_errors


def _summary(provider: Any, registry: Any) -> dict[str, Any]:
    info = registry.plugin_info_for(provider.id)
    return {
        "id": provider.id,
        "name": provider.name,
        "version": provider.version,
        "distribution": info.distribution if info else None,
        "auth_type": provider.auth_type,
        "supports_webhooks": provider.supports_webhooks,
        "streams": list(provider.stream_names),
    }


def _stream_text(stream: Any) -> str:
    key = stream.primary_key if isinstance(stream.primary_key, str) else "+".join(
        stream.primary_key)
    cursor = f", cursor {stream.cursor_field}" if stream.cursor_field else ""
    return f"{stream.name} (key {key}{cursor})"


@click.group()
def providers() -> None:
    """Inspect the providers that installed plugins offer."""


@providers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_providers(as_json: bool) -> None:
    """List providers: id, name, version, distribution, auth type, webhooks, streams."""
    from nexus_core.plugins import load_plugins

    registry = load_plugins()
    rows = [_summary(p, registry) for p in registry.providers.values()]
    if as_json:
        echo_json(rows)
        return
    skipped = registry.skipped
    if skipped:
        click.echo(f"{len(skipped)} plugin(s) failed to load "
                   f"({', '.join(i.name for i in skipped)}); `nexus plugins list` says why.",
                   err=True)
    if not rows:
        if skipped:
            click.echo("No providers loaded.")
        else:
            click.echo("No providers installed. Add one with e.g. `pip install nexus-hubspot`.")
        return
    echo_table(
        ["ID", "NAME", "VERSION", "DISTRIBUTION", "AUTH", "WEBHOOKS", "STREAMS"],
        [
            [r["id"], r["name"], r["version"], r["distribution"], r["auth_type"],
             "yes" if r["supports_webhooks"] else "no", ", ".join(r["streams"])]
            for r in rows
        ],
    )


@providers.command("show")
@click.argument("provider_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show_provider(provider_id: str, as_json: bool) -> None:
    """Show everything known about one provider (exits 1 listing known ids if unknown), with
    every environment variable it reads and whether it is set (values of secrets: never)."""
    from nexus_core.config import get_settings
    from nexus_core.converters import unstructure
    from nexus_core.plugins import load_plugins

    registry = load_plugins()
    with user_errors():
        provider = registry.provider(provider_id)
    data = unstructure(provider)
    data["supports_webhooks"] = provider.supports_webhooks
    data["distribution"] = _summary(provider, registry)["distribution"]
    data["variables"] = variables = _variables(provider, get_settings())
    if as_json:
        echo_json(data)
        return
    for key in sorted(data):
        value = data[key]
        if key in ("variables", "env"):
            continue
        if key == "streams":
            value = ", ".join(_stream_text(s) for s in provider.streams)
        elif key == "stream_pattern":
            if provider.stream_pattern is None:
                continue
            value = (f"any stream the installation names matching "
                     f"{provider.stream_pattern.pattern}: "
                     + _stream_text(provider.stream_pattern.stream("<name>")))
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        click.echo(f"{key:18} {value}")
    click.echo("variables" if variables else "variables          none")
    width = max((len(v["name"]) for v in variables), default=0)
    for var in variables:
        shown = "(secret)" if var["secret"] else var["value"]
        state = f"set: {shown}" if var["set"] else "unset"
        needed = ", required" if var["required"] else ""
        click.echo(f"  {var['name']:{width}}  {state}  ({var['help'] or 'no description'}"
                   f"{needed})")


def _variables(provider: Any, settings: Any) -> list[dict[str, Any]]:
    """Each variable the provider reads, set or not; a secret's value is never included."""
    out = []
    for var in provider.variables():
        value = settings.get(var.name)
        out.append({"name": var.name, "help": var.help, "secret": var.secret,
                    "required": var.required, "set": value is not None,
                    "value": None if var.secret else value})
    return out
