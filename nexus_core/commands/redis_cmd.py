"""``nexus redis``: the development Redis the SDK starts when none is configured."""

from __future__ import annotations

import click

from nexus_core.commands._output import user_errors


@click.group("redis")
def redis_group() -> None:
    """The local development Redis (NEXUS_EMBEDDED_REDIS): started by the first command that
    needs Redis when REDIS_URL is not set, reused by the others."""


@redis_group.command("status")
def status() -> None:
    """Where the development Redis runs, if it does."""
    from nexus_core import embedded
    from nexus_core.config import get_settings

    with user_errors():
        settings = get_settings()
        running = embedded.status(settings)
    if running is None:
        click.echo("no development Redis is running"
                   + ("" if embedded.wanted(settings) else
                      f" (a Redis is configured: {settings.redis_location})"))
        raise SystemExit(1)
    click.echo(f"{running['url']} pid {running['pid']} data {running['dir']} "
               f"({running.get('binary', 'redis-server')})")


@redis_group.command("stop")
def stop() -> None:
    """Stop the development Redis (its data stays in NEXUS_EMBEDDED_REDIS_DIR)."""
    from nexus_core import embedded
    from nexus_core.config import get_settings

    with user_errors():
        stopped = embedded.stop(get_settings())
    click.echo("stopped the development Redis" if stopped else "no development Redis was running")
