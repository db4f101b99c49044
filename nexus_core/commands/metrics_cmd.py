"""``nexus metrics``: serve and inspect the Prometheus metrics of this machine's processes."""

from __future__ import annotations

import click

from nexus_core.commands._output import user_errors


@click.group("metrics")
def metrics_group() -> None:
    """Prometheus metrics: a listener for every nexus process of this machine."""


@metrics_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", default=9464, show_default=True, type=click.IntRange(1, 65535))
def serve(host: str, port: int) -> None:
    """Serve /metrics for every `nexus serve` and `nexus run-worker` of this machine that
    shares NEXUS_METRICS_DIR (their series summed), plus the queue, dead-letter, breaker,
    installation and scheduler series read from Redis and the store; and /readyz.

    Use it when the workers run without --metrics-port (one listener per machine or pod).
    NEXUS_METRICS_TOKEN, when set, is required as a bearer token.
    """
    from nexus_core import exporter, metrics
    from nexus_core.errors import ConfigError
    from nexus_core.runtime import check_startup, get_settings

    with user_errors():
        check_startup()
        settings = get_settings()
        root = metrics.metrics_root(settings)
        try:
            server = exporter.bind(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"nexus metrics: http://{host}:{port}/metrics (processes under {root})", err=True)

    # Listed again at each scrape: processes come and go.
    exporter.serve_forever(server, settings, lambda: metrics.machine_dirs(settings))
