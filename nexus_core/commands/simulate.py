"""``nexus simulate PROVIDER``: serve a provider plugin's local simulator in the foreground.

Plugins ship their simulator under the entry-point group ``nexus_simulators`` (name = provider
id, value = a :class:`~nexus_core.testing.provider_sim.ProviderSimulator` subclass).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

SIMULATOR_GROUP = "nexus_simulators"


def find_simulator(provider: str) -> Any:
    from importlib.metadata import entry_points

    from nexus_core.errors import PluginError

    found = {ep.name: ep for ep in entry_points(group=SIMULATOR_GROUP)}
    if provider not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise PluginError(f"no simulator for provider {provider!r}; simulators: {known}",
                          hint="a plugin ships one under the entry-point group "
                          f"`{SIMULATOR_GROUP}`")
    return found[provider].load()


def _sizes(items: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for item in items:
        stream, sep, n = item.partition("=")
        if not sep or not n.isdigit() or not stream:
            raise click.BadParameter(f"{item!r} is not STREAM=COUNT", param_hint="--size")
        out[stream] = int(n)
    return out


@click.command("simulate")
@click.argument("provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data.")
@click.option("--size", "sizes", multiple=True, metavar="STREAM=COUNT",
              help="Records per stream and account (repeatable); default: the simulator's.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the variables that point a connector here to this file "
              "(KEY=VALUE lines, for `set -a; . FILE`).")
def simulate(provider: str, host: str, port: int, seed: int, sizes: tuple[str, ...],
             env_file: Path | None) -> None:
    """Serve PROVIDER's local simulator (its real paths, paging, errors, OAuth and rate
    limits) until Ctrl-C, and print how to point the connector at it.

    The printed credentials belong to the simulator's first account: use them with
    `nexus dev backfill PROVIDER --credentials ...` for a quick look without any store."""
    from nexus_core.commands._output import user_errors
    from nexus_core.converters import unstructure

    with user_errors():
        cls = find_simulator(provider)
    sim = cls(seed=seed, sizes={**cls.streams, **_sizes(sizes)} if sizes else None, port=port)
    if host != "127.0.0.1":
        click.echo("note: the simulator always listens on 127.0.0.1", err=True)
    account = sim.add_account(sim.demo_account)
    env = sim.env()
    creds = unstructure(sim.credentials(account))
    creds = {k: v for k, v in creds.items() if v not in (None, [], {})}
    click.echo(f"{provider} simulator on {sim.url} (account {account}; "
               f"{', '.join(f'{s}: {n}' for s, n in sim.data.sizes.items())} records)")
    click.echo("point the connector at it:")
    for key, value in env.items():
        click.echo(f"  export {key}={value}")
    click.echo(f"control: GET {sim.url}/_sim; POST {sim.url}/_sim/mutate|delete "
               '{"stream": S, "n": N}; POST ' + f"{sim.url}/_sim/webhook " +
               '{"url": U, "n": N, "tamper": false}')
    click.echo(f"credentials of {account}:\n  {json.dumps(creds, sort_keys=True)}")
    if env_file is not None:
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    sim.serve_forever()
