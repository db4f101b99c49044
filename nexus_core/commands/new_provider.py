"""``nexus new-provider NAME``: scaffold a provider plugin distribution."""

from __future__ import annotations

from pathlib import Path

import click

from nexus_core.commands._output import user_errors


@click.command("new-provider")
@click.argument("name")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Directory to create nexus-NAME in.")
@click.option("--force", is_flag=True, help="Overwrite an existing nexus-NAME directory.")
def new_provider(name: str, output: Path, force: bool) -> None:
    """Generate the distribution nexus-NAME: a working connector (OAuth2, cursor paging,
    incremental deltas, Standard Webhooks, health check) against its own simulator, tests that
    run the standard connector suite, a PEP 621 pyproject.toml with the `nexus` entry point,
    README and CHANGELOG.

    \b
    nexus new-provider acme
    cd nexus-acme && pip install -e . && pytest     # the standard suite passes
    nexus providers list                             # acme is there
    """
    from nexus_core.scaffold import generate, tokens

    with user_errors():
        target = generate(name, output, force=force)
        subs = tokens(name)
    click.echo(f"created {target}/")
    click.echo(f"  {subs['package']}/connector.py   the connector: adapt paths, streams, auth")
    click.echo(f"  {subs['package']}/simulator.py   the provider's API, simulated for tests")
    click.echo("  tests/test_connector.py          the standard connector suite")
    click.echo(f"next: cd {target} && pip install -e . && pytest")
