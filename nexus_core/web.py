"""The WSGI app (Falcon) served by ``nexus serve``: webhook ingress, the OAuth flow, probes.

=======================================  ===================================================
``POST /webhooks/{provider}``            app-level webhook URL, routed by the account id
``POST /webhooks/{provider}/{key}``      per-installation URL (the installation's webhook key)
``GET /integrations/{p}/authorize``      a connect link's ``?token=``: 302 to the provider's
                                         consent page (state + PKCE); nothing else starts a flow
``GET /integrations/{p}/callback``       code exchange, store, first backfill, small HTML page
``GET /healthz``                         the process is alive
``GET /readyz``                          Redis and the store answer (status only; the
                                         details with the metrics token)
``GET /metrics``                         Prometheus text format, only with
                                         ``Authorization: Bearer <NEXUS_METRICS_TOKEN>``
=======================================  ===================================================

This app faces the internet. ``/metrics`` (tenant and provider names, error counts) and the
``/readyz`` details are for operators: ``nexus serve --metrics-port`` serves them on a separate
listener (:mod:`nexus_core.exporter`); on this one they need the bearer token.

Everything a worker process needs (Redis client, store, plugin registry) is created by
:func:`create_app`, which gunicorn calls in each worker after ``fork``.
"""

from __future__ import annotations

import html
import json
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import falcon
from loguru import logger

from nexus_core import queues, webhooks
from nexus_core.errors import (
    AuthError,
    NexusError,
    PluginError,
    ProviderError,
    WebhookRejected,
)
from nexus_core.models import WebhookRequest

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.plugins import PluginRegistry
    from nexus_core.seams import RedisClient, SyncStore


class _Lazy:
    """Created on first use: the store is not needed to answer /healthz or a webhook 404."""

    def __init__(self, value: Any, factory: Any) -> None:
        self._value = value
        self._factory = factory
        self._lock = threading.Lock()  # gthread workers: build it once

    def get(self) -> Any:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
        return self._value


def _raw_path(req: falcon.Request) -> str:
    """The request target as the client sent it (still percent-encoded), with the query."""
    raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
    if raw:
        path = raw.partition("?")[0]
        if not path.startswith("/"):  # absolute-form request target
            path = urlsplit(raw).path or "/"
    else:
        path = req.env.get("SCRIPT_NAME", "") + req.env.get("PATH_INFO", "")
        path = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~%")
    query = req.env.get("QUERY_STRING")
    return path + ("?" + query if query else "")


def _read_body(req: falcon.Request, limit: int) -> bytes:
    """At most ``limit`` bytes of the body. A chunked body has no Content-Length: read the
    server's de-chunked input stream (gunicorn marks it ``wsgi.input_terminated``)."""
    if req.content_length is None and (
        req.env.get("wsgi.input_terminated")
        or "chunked" in (req.get_header("Transfer-Encoding") or "").lower()
    ):
        return req.stream.read(limit)
    return req.bounded_stream.read(limit)


def _json(resp: falcon.Response, status: int, doc: dict[str, Any]) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(doc, separators=(",", ":"))


class WebhookResource:
    def __init__(self, ingress: _Lazy) -> None:
        self._ingress = ingress

    def on_post(self, req: falcon.Request, resp: falcon.Response, provider: str) -> None:
        self._handle(req, resp, provider, None)

    def on_post_install(
        self, req: falcon.Request, resp: falcon.Response, provider: str, key: str
    ) -> None:
        self._handle(req, resp, provider, key)

    def _handle(
        self, req: falcon.Request, resp: falcon.Response, provider_id: str, key: str | None
    ) -> None:
        started = time.perf_counter()
        ingress: webhooks.WebhookIngress = self._ingress.get()
        label = "unknown"
        try:
            provider = ingress.provider(provider_id)
            label = provider.id
            ingress.check_size(req.content_length)  # 413 before reading a byte
            body = _read_body(req, ingress.options.max_body + 1)
            ingress.check_size(len(body))  # chunked bodies carry no Content-Length
            request = WebhookRequest(
                method=req.method,
                url=(ingress.options.public_url + _raw_path(req)) if ingress.options.public_url
                else webhooks.public_request_url(ingress.options, _raw_path(req), req.uri),
                headers={k.lower(): v for k, v in req.headers.items()},
                body=body,
            )
            result = ingress.ingest(provider.id, request, webhook_key=key)
        except WebhookRejected as exc:
            webhooks.record_rejection(label, exc)
            if exc.status >= 500:
                resp.append_header("Retry-After", "30")
            else:
                logger.info("webhook {!r} rejected ({}): {}", provider_id, exc.status, exc.message)
            _json(resp, exc.status, {"error": exc.message})
            return
        webhooks.record_outcome(label, result.outcome)
        webhooks.INGRESS_SECONDS.labels(label).observe(time.perf_counter() - started)
        if result.challenge is not None:
            _json(resp, 200, {result.challenge_field: result.challenge})
            return
        if provider.webhook is not None and provider.webhook.accept_body is not None:
            # The provider expects this exact answer, or it delivers again (a SOAP ack).
            resp.status = 200
            resp.content_type = provider.webhook.accept_content_type
            resp.text = provider.webhook.accept_body
            return
        _json(resp, 200, {
            "ok": True,
            "enqueued": len(result.jobs),
            "duplicates": len(result.duplicate_jobs),
            "unknown_account_events": result.unknown_account_events,
            "ignored_installations": result.ignored_installations,
        })


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _json(resp, 200, {"status": "ok"})


class ReadyResource:
    """``details``: say which dependency failed and how (the private listener); else only
    ``{"ready": bool}``, unless the request carries the metrics token."""

    def __init__(self, redis: RedisClient, store: _Lazy, *, details: bool = False,
                 token: str | None = None) -> None:
        self._redis = redis
        self._store = store
        self._details = details
        self._token = token

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, str] = {}
        try:
            self._redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
        try:
            store = self._store.get()
            ping = getattr(store, "ping", None) or store.schema_version
            ping()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"unreachable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        from nexus_core.exporter import token_ok

        if self._details or token_ok(req.get_header("Authorization"), self._token):
            _json(resp, 200 if ready else 503, {"ready": ready, **checks})
        else:
            _json(resp, 200 if ready else 503, {"ready": ready})


class MetricsResource:
    """The public port's ``/metrics``: a 404 unless NEXUS_METRICS_TOKEN is set, then a 401
    without ``Authorization: Bearer <token>``."""

    def __init__(self, token: str | None, redis: Any, store: _Lazy) -> None:
        from nexus_core.exporter import StateCollector

        self._token = token
        self._state = StateCollector(redis, store.get)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        from nexus_core import metrics
        from nexus_core.exporter import token_ok

        if not self._token:
            _json(resp, 404, {"error": "metrics are not served on this port: scrape the "
                              "metrics listener (nexus serve --metrics-port) or set "
                              "NEXUS_METRICS_TOKEN"})
            return
        if not token_ok(req.get_header("Authorization"), self._token):
            resp.append_header("WWW-Authenticate", 'Bearer realm="nexus-metrics"')
            _json(resp, 401, {"error": "a bearer token (NEXUS_METRICS_TOKEN) is required"})
            return
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = metrics.exposition(state=self._state)


def _page(resp: falcon.Response, status: int, title: str, message: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.text = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )


class OAuthResource:
    """``/integrations/{provider}/authorize`` and ``/callback`` over :mod:`nexus_core.oauth`."""

    def __init__(
        self, settings: Settings, registry: PluginRegistry, redis: RedisClient, store: _Lazy
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._redis = redis
        self._store = store

    def on_get_authorize(self, req: falcon.Request, resp: falcon.Response, provider: str) -> None:
        """Only a connect link (``?token=``, created by the product's server for a user it has
        authenticated) starts a flow: raw tenant and installation ids never do, or anyone could
        bind their own provider account to another tenant's installation."""
        from nexus_core import oauth

        token = req.get_param("token")
        if not token:
            logger.info("authorize {} refused: no connect link token", provider)
            _page(resp, 401, "Cannot connect",
                  "This page needs a connect link. Start the connection again from the "
                  "application.")
            return
        try:
            url = oauth.start_connect_link(
                self._store.get(), self._registry, provider, token,
                redirect_uri=self._default_redirect(provider), settings=self._settings,
            )
        except PluginError as exc:
            _page(resp, 404, "Unknown provider", exc.message)
            return
        except AuthError as exc:
            logger.info("authorize {} refused: {}", provider, exc.message)
            _page(resp, 403, "Cannot connect", f"{exc.message}. {exc.hint or ''}".strip())
            return
        except NexusError as exc:
            logger.warning("authorize {} failed: {}", provider, exc)
            _page(resp, 400, "Cannot connect", exc.message)
            return
        raise falcon.HTTPFound(url)

    def on_get_callback(self, req: falcon.Request, resp: falcon.Response, provider: str) -> None:
        from nexus_core import oauth

        error = req.get_param("error")
        if error:
            detail = req.get_param("error_description") or error
            _page(resp, 400, "Connection not completed", f"The provider answered: {detail}")
            return
        code, state = req.get_param("code"), req.get_param("state")
        if not code or not state:
            _page(resp, 400, "Connection not completed", "code and state are required.")
            return
        try:
            install = oauth.complete_authorization(
                self._store.get(), self._registry, provider, code, state, settings=self._settings
            )
        except PluginError as exc:
            _page(resp, 404, "Unknown provider", exc.message)
            return
        except AuthError as exc:
            logger.warning("OAuth callback for {} refused: {}", provider, exc)
            _page(resp, 400, "Connection not completed", exc.message)
            return
        except ProviderError as exc:
            logger.warning("OAuth callback for {} failed: {}", provider, exc)
            _page(resp, 502, "Connection not completed",
                  f"{exc.message}. Please try connecting again in a moment.")
            return
        except NexusError as exc:
            logger.error("OAuth callback for {} failed: {}", provider, exc)
            _page(resp, 400, "Connection not completed", exc.message)
            return
        try:
            self._enqueue_backfill(install.provider, install.tenant_id, install.install_id)
            note = "The first sync has started."
        except Exception as exc:  # the connection itself is stored; the sync can be started later
            logger.error("first backfill for {}/{} not enqueued: {}", install.tenant_id,
                         install.install_id, exc)
            note = ("The connection is saved, but the first sync could not be queued; "
                    "it has to be started again.")
        name = self._registry.providers.get(install.provider)
        _page(resp, 200, "Connected",
              f"{name.name if name else install.provider} is connected. {note}")

    def _default_redirect(self, provider_id: str) -> str | None:
        """Our own callback under NEXUS_PUBLIC_URL, unless the provider's redirect URI setting
        (HUBSPOT_REDIRECT_URI, ...) is configured — then :mod:`nexus_core.oauth` uses that."""
        public = self._settings.public_url
        provider = self._registry.providers.get(provider_id)
        if not public or provider is None or provider.oauth is None:
            return None
        env = provider.oauth.redirect_uri_env or (
            "".join(c if c.isalnum() else "_" for c in provider_id).upper() + "_REDIRECT_URI"
        )
        if self._settings.get(env):
            return None
        return f"{public.rstrip('/')}/integrations/{provider_id}/callback"

    def _enqueue_backfill(self, provider: str, tenant_id: str, install_id: str) -> str:
        """The first backfill, through the one path that starts syncs (one active backfill per
        installation) — what ``IntegrationService.start_backfill`` does, on this app's Redis
        and store."""
        from nexus_core.sync import SyncOptions, start_sync

        return start_sync(self._redis, self._store.get(), "backfill", provider, tenant_id,
                          install_id, None, opts=SyncOptions.from_settings(self._settings))


def create_app(
    settings: Settings | None = None,
    store: SyncStore | None = None,
    redis: RedisClient | None = None,
    registry: PluginRegistry | None = None,
) -> falcon.App:
    """The WSGI app. Anything not given is built from the settings (NEXUS_DATABASE_URL,
    REDIS_URL) and the installed plugins; the store connects on first use."""
    from nexus_core.config import get_settings
    from nexus_core.plugins import load_plugins

    settings = settings or get_settings()
    registry = registry or load_plugins()
    redis = redis if redis is not None else queues.redis_connection(settings)

    def make_store() -> Any:
        from nexus_core.store import Store

        return Store.from_settings(settings)

    lazy_store = _Lazy(store, make_store)
    ingress = _Lazy(None, lambda: webhooks.WebhookIngress(
        registry=registry, redis=redis, settings=settings, store_factory=lazy_store.get,
    ))

    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    hooks = WebhookResource(ingress)
    app.add_route("/webhooks/{provider}", hooks)
    app.add_route("/webhooks/{provider}/{key}", hooks, suffix="install")
    oauth_routes = OAuthResource(settings, registry, redis, lazy_store)
    app.add_route("/integrations/{provider}/authorize", oauth_routes, suffix="authorize")
    app.add_route("/integrations/{provider}/callback", oauth_routes, suffix="callback")
    app.add_route("/healthz", HealthResource())
    token = settings.metrics_token
    app.add_route("/readyz", ReadyResource(redis, lazy_store, token=token))
    app.add_route("/metrics", MetricsResource(token, redis, lazy_store))
    return app
