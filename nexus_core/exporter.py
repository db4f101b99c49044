"""Serving the metrics: who may read them, where, and the series read when scraped.

``/metrics`` names tenants, providers and error counts: it must not face the internet with the
webhook and OAuth routes. It is served

* on a separate listener — ``nexus serve --metrics-port``, ``nexus run-worker --metrics-port``,
  ``nexus metrics serve`` — by a small process of its own (:func:`start_exporter`), which also
  answers ``/readyz`` with its details; and/or
* on the public port only with ``Authorization: Bearer <NEXUS_METRICS_TOKEN>`` (compared in
  constant time); without the token configured, the public ``/metrics`` is a 404.

When NEXUS_METRICS_TOKEN is set, the separate listener asks for it too.

:class:`StateCollector` adds, at each scrape, the series that describe shared state rather than
one process's work: queue depths, the dead-letter queue, the oldest queued job's age, workers,
open breakers, installations by status, the delta scheduler's heartbeat.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

from loguru import logger

from nexus_core import ids, queues

#: The breakers that are not closed: breaker key -> when it last changed (a sorted set kept by
#: :class:`nexus_core.breaker.CircuitBreaker`), so a scrape never scans the keyspace.
BREAKER_INDEX = "nexus:cb-index"
#: At most this many breakers are read per scrape.
_MAX_BREAKERS = 10_000


def token_ok(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time)."""
    if not token or not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"),
                               token.encode("utf-8"))


class StateCollector:
    """Series read from Redis and the store when scraped. A source that does not answer gives
    ``nexus_metrics_source_up{source} 0`` and its series are left out: the scrape still
    succeeds."""

    def __init__(self, redis: Any, store: Any = None) -> None:
        self._redis = redis
        self._store = store  # a callable returning the store, or None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("nexus_metrics_source_up",
                               "Whether the source of the scrape-time series answered",
                               labels=["source"])
        try:
            yield from self._redis_series()
            up.add_metric(["redis"], 1)
        except Exception as exc:
            logger.debug("metrics: Redis series skipped: {}", exc)
            up.add_metric(["redis"], 0)
        if self._store is not None:
            try:
                yield from self._store_series()
                up.add_metric(["store"], 1)
            except Exception as exc:
                logger.debug("metrics: store series skipped: {}", exc)
                up.add_metric(["store"], 0)
        yield up

    def _redis_series(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily
        from rq import Worker

        r = self._redis
        jobs = GaugeMetricFamily("nexus_queue_jobs", "Jobs per queue and state (queued, started, "
                                 "scheduled, deferred)", labels=["queue", "state"])
        dlq = GaugeMetricFamily("nexus_dlq_jobs", "Jobs in the dead-letter queue (RQ's "
                                "FailedJobRegistry) per queue", labels=["queue"])
        oldest = GaugeMetricFamily("nexus_queue_oldest_job_age_seconds",
                                   "Age of the job at the head of the queue (0: empty)",
                                   labels=["queue"])
        workers = GaugeMetricFamily("nexus_workers", "RQ workers listening on each queue",
                                    labels=["queue"])
        all_workers = Worker.all(connection=r)
        now = time.time()
        for name in queues.ALL_QUEUES:
            q = queues.queue(name, r)
            jobs.add_metric([name, "queued"], q.count)
            jobs.add_metric([name, "started"], q.started_job_registry.count)
            jobs.add_metric([name, "scheduled"], q.scheduled_job_registry.count)
            jobs.add_metric([name, "deferred"], q.deferred_job_registry.count)
            dlq.add_metric([name], q.failed_job_registry.count)
            oldest.add_metric([name], _head_age(r, q, now))
            workers.add_metric([name], sum(1 for w in all_workers if name in w.queue_names()))
        yield from (jobs, dlq, oldest, workers)

        breakers = GaugeMetricFamily("nexus_breakers", "Installations whose circuit breaker is "
                                     "open or half-open, per provider", labels=["provider",
                                                                                "state"])
        counts: Counter[tuple[str, str]] = Counter()
        keys = r.zrange(BREAKER_INDEX, 0, _MAX_BREAKERS - 1)
        if keys:
            with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "state")
                states = pipe.execute()
            gone = []
            for key, state in zip(keys, states, strict=True):
                state = state.decode() if isinstance(state, bytes) else state
                if state in (None, "closed"):
                    gone.append(key)
                    continue
                key_s = key.decode() if isinstance(key, bytes) else key
                counts[(ids.split_key(key_s.removeprefix("nexus:cb:"))[0], state)] += 1
            if gone:
                r.zrem(BREAKER_INDEX, *gone)
        for (provider, state), n in sorted(counts.items()):
            breakers.add_metric([provider, state], n)
        yield breakers

        from nexus_core.sync.cron import HEARTBEAT_TTL, running_schedulers

        sched = GaugeMetricFamily("nexus_scheduler_up", "1 while a delta scheduler (`nexus "
                                  "scheduler`, `run-worker --with-scheduler`) has reported in "
                                  f"the last {HEARTBEAT_TTL} s")
        sched.add_metric([], 1 if running_schedulers(r) else 0)
        yield sched

    def _store_series(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        store = self._store()
        inst = GaugeMetricFamily("nexus_installations", "Installations by status (active, "
                                 "needs_reauth, disabled, pending_authorization)",
                                 labels=["status"])
        counts = store.count_installations()
        for status in ("active", "needs_reauth", "disabled", "pending_authorization"):
            counts.setdefault(status, 0)
        for status, n in sorted(counts.items()):
            inst.add_metric([status], n)
        yield inst


def _head_age(redis: Any, q: Any, now: float) -> float:
    from datetime import UTC, datetime

    head = redis.lindex(q.key, 0)
    if head is None:
        return 0.0
    job_id = head.decode() if isinstance(head, bytes) else head
    raw = redis.hget(q.job_class.key_for(job_id), "enqueued_at")
    if not raw:
        return 0.0
    from rq.utils import str_to_date

    when = str_to_date(raw)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, now - when.timestamp()) if when <= datetime.now(UTC) else 0.0


def note_breaker(redis: Any, key: str, state: str) -> None:
    """Keep :data:`BREAKER_INDEX` in step with a breaker's new state (best effort)."""
    with contextlib.suppress(Exception):
        if state == "closed":
            redis.zrem(BREAKER_INDEX, key)
        else:
            redis.zadd(BREAKER_INDEX, {key: time.time()})


# -- the listener --------------------------------------------------------------------------------


def create_metrics_app(settings: Any, redis: Any, store: Any = None,
                       dirs: Any = None) -> Any:
    """The private listener's WSGI app: ``/metrics`` (every process of ``dirs``, or of this
    process tree), ``/readyz`` with its details, ``/healthz``. NEXUS_METRICS_TOKEN, when set, is
    required here too."""
    import falcon

    from nexus_core import metrics
    from nexus_core.web import HealthResource, ReadyResource, _json, _Lazy

    lazy_store = store if isinstance(store, _Lazy) else _Lazy(store, lambda: _store(settings))
    token = getattr(settings, "metrics_token", None)
    collector = StateCollector(redis, lazy_store.get)

    class Guard:
        def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
            if req.path == "/healthz":  # a liveness probe learns nothing from it
                return
            if token and not token_ok(req.get_header("Authorization"), token):
                resp.append_header("WWW-Authenticate", 'Bearer realm="nexus-metrics"')
                _json(resp, 401, {"error": "a bearer token (NEXUS_METRICS_TOKEN) is required"})
                resp.complete = True

    class Metrics:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            from prometheus_client import CONTENT_TYPE_LATEST

            resp.content_type = CONTENT_TYPE_LATEST
            resp.data = metrics.exposition(dirs, state=collector)

    app = falcon.App(media_type=falcon.MEDIA_JSON, middleware=[Guard()])
    app.add_route("/metrics", Metrics())
    app.add_route("/readyz", ReadyResource(redis, lazy_store, details=True))
    app.add_route("/healthz", HealthResource())
    return app


def _store(settings: Any) -> Any:
    from nexus_core.store import Store

    return Store.from_settings(settings, migrate=False)


def bind(host: str, port: int, app: Any = None) -> Any:
    """A threaded WSGI server bound to ``host:port`` now (a port in use fails here, at start);
    its app is set when it is served."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return make_server(host, port, app or (lambda env, start: []), server_class=_Server,
                       handler_class=_Quiet)


def serve_forever(server: Any, settings: Any, dirs: Any,
                  parent_pid: int | None = None) -> None:
    """Serve the metrics app on ``server`` until SIGTERM/SIGINT, or until ``parent_pid`` is no
    longer this process's parent."""
    from nexus_core import queues as q

    redis = q.redis_connection(settings)
    server.set_app(create_metrics_app(settings, redis, dirs=dirs))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name="nexus-metrics", daemon=True)
    thread.start()
    while not stop.wait(1.0):
        if parent_pid is not None and os.getppid() != parent_pid:
            break
    server.shutdown()
    server.server_close()


def start_exporter(host: str, port: int, settings: Any, dirs: Any = None) -> Any:
    """Bind ``host:port`` here, then serve it from a child process (forked now, before this
    process starts threads or workers); it stops with this process. Returns the child."""
    import multiprocessing

    server = bind(host, port)
    proc = multiprocessing.get_context("fork").Process(
        target=_exporter_main, args=(server, settings, dirs, os.getpid()),
        name="nexus-metrics", daemon=False)
    proc.start()
    server.server_close()  # the child serves it
    return proc


def _exporter_main(server: Any, settings: Any, dirs: Any, parent: int) -> None:
    serve_forever(server, settings, dirs, parent_pid=parent)


def stop_exporter(proc: Any) -> None:
    if proc is None or not proc.is_alive():
        return
    with contextlib.suppress(OSError):
        os.kill(proc.pid, signal.SIGTERM)
    proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(5)
