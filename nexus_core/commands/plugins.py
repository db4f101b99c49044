"""``nexus plugins``: what is installed, what loaded and why something did not."""

from __future__ import annotations

import attrs
import click

from nexus_core.commands._output import echo_json, echo_table


@click.group()
def plugins() -> None:
    """Inspect installed plugins (entry-point group `nexus`)."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_plugins(as_json: bool) -> None:
    """List every plugin: name, distribution, version, hooks, status (ok/skipped) and reason.

    A plugin that failed to import, lacks a required hook, claims a provider id another plugin
    took, or targets another core API version is listed as skipped with the reason; the others
    keep working. Exits 0 either way.
    """
    from nexus_core.plugins import load_plugins

    infos = load_plugins().infos
    if as_json:
        echo_json([attrs.asdict(i) for i in infos])
        return
    if not infos:
        click.echo("No plugins installed. Add a provider with e.g. `pip install nexus-hubspot`.")
        return
    echo_table(
        ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDER", "HOOKS / REASON"],
        [
            [i.name, i.distribution, i.version, i.status, i.provider,
             ", ".join(i.hooks) if i.status == "ok" else i.reason]
            for i in infos
        ],
    )
