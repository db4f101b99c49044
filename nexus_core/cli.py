"""The ``nexus`` command line.

Sub-commands live in ``nexus_core.commands.*`` and are imported only when used (or when
``--help`` lists them), so ``nexus --help`` never pays for requests, rq or SQLAlchemy.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from nexus_core.__about__ import __version__

#: command name -> "module:attribute"; add a line here to add a command group.
COMMANDS: dict[str, str] = {
    "plugins": "nexus_core.commands.plugins:plugins",
    "providers": "nexus_core.commands.providers:providers",
    "run-worker": "nexus_core.commands.worker:run_worker",
    "scheduler": "nexus_core.commands.worker:scheduler",
    "sync": "nexus_core.commands.sync:sync",
    "runs": "nexus_core.commands.sync:runs",
    "dlq": "nexus_core.commands.dlq:dlq",
    "stats": "nexus_core.commands.stats:stats",
    "installs": "nexus_core.commands.installs:installs",
    "auth": "nexus_core.commands.auth:auth",
    "keys": "nexus_core.commands.keys:keys",
    "serve": "nexus_core.commands.serve:serve",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nexus")
@click.option(
    "--log-level",
    envvar="LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Log verbosity (env LOG_LEVEL).",
)
@click.option(
    "--log-format",
    envvar="NEXUS_LOG_FORMAT",
    default="pretty",
    show_default=True,
    type=click.Choice(["pretty", "json"]),
    help="pretty for a terminal, json for one object per line (env NEXUS_LOG_FORMAT).",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str) -> None:
    """Nexus Integration SDK: connect tenants to third-party APIs reliably.

    Providers are plugins (`pip install nexus-hubspot`); `nexus providers list` shows what is
    installed and `nexus plugins list` shows every plugin, including ones that failed to load.
    Settings come from the environment and a .env file (REDIS_URL, NEXUS_DATABASE_URL, ...).
    """
    from nexus_core.log import configure_logging

    configure_logging(log_level.upper(), log_format)
    ctx.ensure_object(dict)


def main(argv: list[str] | None = None) -> Any:
    from nexus_core.errors import NexusError

    try:
        return cli.main(args=argv, prog_name="nexus", standalone_mode=True)
    except NexusError as exc:  # pragma: no cover - click already handles ClickException
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
