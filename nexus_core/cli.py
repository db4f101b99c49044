"""The ``nexus`` command line.

Sub-commands live in ``nexus_core.commands.*`` and are imported only when used (or when
``--help`` lists them), so ``nexus --help`` never pays for requests, rq or SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from nexus_core.__about__ import __version__
from nexus_core.config import LOG_FORMATS, LOG_LEVELS

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
    "simulate": "nexus_core.commands.simulate:simulate",
    "dev": "nexus_core.commands.dev:dev",
    "new-provider": "nexus_core.commands.new_provider:new_provider",
    "redis": "nexus_core.commands.redis_cmd:redis_group",
    "doctor": "nexus_core.commands.doctor:doctor",
    "health": "nexus_core.commands.health:health",
    "metrics": "nexus_core.commands.metrics_cmd:metrics_group",
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

    def invoke(self, ctx: click.Context) -> Any:
        """Expected errors (a bad setting, Redis or the database unreachable, an unknown
        provider, tenant or installation) become one line and exit status 1; the traceback only
        with ``--debug`` or LOG_LEVEL=DEBUG/TRACE. Anything else is a bug and shows its
        traceback."""
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            from nexus_core.errors import describe_error

            message = describe_error(exc)
            if message is None:
                raise
            if _debug(ctx):
                import traceback

                traceback.print_exc()
            raise click.ClickException(message) from None


def _debug(ctx: click.Context) -> bool:
    obj = ctx.find_root().obj
    return bool(isinstance(obj, dict) and obj.get("debug"))


def _level(value: str | None) -> str | None:
    return value.upper() if value else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nexus")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(list(LOG_LEVELS), case_sensitive=False),
    help="Log verbosity [default: LOG_LEVEL from the environment or .env, else INFO].",
)
@click.option(
    "--log-format",
    default=None,
    type=click.Choice(list(LOG_FORMATS)),
    help="pretty for a terminal, json for one object per line [default: NEXUS_LOG_FORMAT, "
    "else pretty].",
)
@click.option("--debug", is_flag=True,
              help="Show the traceback of an error (as LOG_LEVEL=DEBUG does).")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str | None, debug: bool) -> None:
    """Nexus Integration SDK: connect tenants to third-party APIs reliably.

    Providers are plugins (`pip install nexus-hubspot`); `nexus providers list` shows what is
    installed and `nexus plugins list` shows every plugin, including ones that failed to load.
    Settings come from the environment and a .env file (REDIS_URL, NEXUS_DATABASE_URL, ...).
    """
    from nexus_core.config import get_settings
    from nexus_core.log import configure_logging

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    settings = get_settings()  # a malformed setting stops here, naming the variable
    level = _level(log_level) or settings.log_level
    ctx.obj["debug"] = debug or level in ("DEBUG", "TRACE")
    configure_logging(level, log_format or settings.log_format)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="nexus", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    main()
