"""``nexus serve``: the web app (webhooks, OAuth callback, probes) under gunicorn."""

from __future__ import annotations

from typing import Any

import click


def _child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited; drop its live-only series (prometheus_client's recipe)."""
    from nexus_core import metrics

    if metrics.multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def gunicorn_options(host: str, port: int, workers: int, threads: int, timeout: int) -> dict:
    """The gunicorn settings ``nexus serve`` runs with (the benchmark reuses them)."""
    return {
        "child_exit": _child_exit,
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": timeout,
        "graceful_timeout": timeout,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "nexus-serve",
    }


def run_gunicorn(app_factory: Any, options: dict[str, Any]) -> None:
    """Serve ``app_factory()`` — called in each worker after fork, so every worker gets its own
    Redis and database connections."""
    from gunicorn.app.base import BaseApplication

    class _Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if value is not None or key == "accesslog":
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return app_factory()

    _Server().run()


def _app() -> Any:
    from nexus_core.web import create_app

    return create_app()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 256),
              help="gunicorn worker processes.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Threads per worker (>1 uses gunicorn's gthread worker).")
@click.option("--timeout", default=30, show_default=True, type=click.IntRange(1, 3600),
              help="Seconds before a stuck worker is restarted.")
@click.option("--metrics-port", default=None, type=click.IntRange(1, 65535),
              help="Serve /metrics and the /readyz details on this separate port (for "
              "Prometheus; keep it off the internet). Without it, the public /metrics needs "
              "NEXUS_METRICS_TOKEN and is a 404 when that is unset.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Interface of the metrics port (0.0.0.0: every interface).")
def serve(host: str, port: int, workers: int, threads: int, timeout: int,
          metrics_port: int | None, metrics_host: str) -> None:
    """Serve webhooks, the OAuth flow, /healthz and /readyz with gunicorn; /metrics on
    --metrics-port (or on the public port with NEXUS_METRICS_TOKEN).

    Providers POST to /webhooks/<provider> (or /webhooks/<provider>/<install_id>); set
    NEXUS_PUBLIC_URL to the public base URL when behind a proxy (HubSpot v3 signs it).
    Every gunicorn worker's series are gathered (prometheus_client's multiprocess mode, in a
    directory of this process's own under NEXUS_METRICS_DIR; PROMETHEUS_MULTIPROC_DIR is not
    needed).
    """
    from nexus_core import exporter, metrics
    from nexus_core.commands._output import user_errors
    from nexus_core.config import get_settings
    from nexus_core.plugins import load_plugins
    from nexus_core.runtime import check_startup
    from nexus_core.webhooks import IngressOptions

    with user_errors():  # a malformed setting fails here, once, not in every worker
        settings = get_settings()
        check_startup(settings)
        IngressOptions.from_settings(settings)
        metrics.use_private_dir("serve", settings)
        load_plugins()
        proc = None
        if metrics_port is not None:
            try:
                proc = exporter.start_exporter(metrics_host, metrics_port, settings)
            except OSError as exc:
                from nexus_core.errors import ConfigError

                raise ConfigError(f"cannot listen on {metrics_host}:{metrics_port} for "
                                  f"metrics: {exc.strerror or exc}") from None
    if proc:
        where = f"; metrics: http://{metrics_host}:{metrics_port}/metrics"
    elif settings.metrics_token:
        where = "; /metrics with the NEXUS_METRICS_TOKEN bearer token"
    else:
        where = "; /metrics not served (add --metrics-port, or set NEXUS_METRICS_TOKEN)"
    click.echo(f"nexus serve: http://{host}:{port} ({workers} worker(s)){where}", err=True)
    try:
        run_gunicorn(_app, gunicorn_options(host, port, workers, threads, timeout))
    finally:
        exporter.stop_exporter(proc)
