"""``IntegrationService``: the seed's public API in snake_case.

Product code talks to this class; the CLI and the web app are thin layers over it.
"""

from __future__ import annotations

from collections import Counter
from numbers import Real
from typing import TYPE_CHECKING, Any

import attrs

from nexus_core.config import Settings, get_settings
from nexus_core.errors import PluginError
from nexus_core.models import (
    Credentials,
    Health,
    Installation,
    Provider,
    quota_problems,
    rate_limit_problems,
)
from nexus_core.plugins import PluginRegistry, load_plugins

if TYPE_CHECKING:
    from nexus_core.store import Store


@attrs.frozen
class ConfigValidation:
    valid: bool
    errors: list[str] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)


class IntegrationService:
    """Entry point for product code: connectors, installations, syncs, webhooks, health."""

    def __init__(
        self, settings: Settings | None = None, registry: PluginRegistry | None = None
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._initialized = False
        self._logging_checked = False

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        if not self._logging_checked:
            from nexus_core.log import configure_for_library

            self._logging_checked = True
            configure_for_library(self._settings.log_level, self._settings.log_format)
        return self._settings

    @property
    def registry(self) -> PluginRegistry:
        if self._registry is None:
            _ = self.settings  # logging set up before plugins log anything
            self._registry = load_plugins()
        return self._registry

    def initialize(self) -> IntegrationService:
        """Validate settings (in production: the encryption keys too) and load plugins now
        rather than on first use (fail fast)."""
        from nexus_core.runtime import check_startup

        check_startup(self.settings)
        _ = self.registry
        self._initialized = True
        return self

    # -- connectors ------------------------------------------------------------------------

    def get_available_connectors(self) -> list[Provider]:
        return list(self.registry.providers.values())

    def get_connector(self, provider_id: str) -> Provider:
        """The provider's metadata; :class:`PluginError` listing the known ids if unknown."""
        return self.registry.provider(provider_id)

    def get_webhook_supported_connectors(self) -> list[Provider]:
        return [p for p in self.get_available_connectors() if p.supports_webhooks]

    def validate_connector_config(self, provider_id: str, config: Any) -> ConfigValidation:
        """Check an installation config for ``provider_id`` before it is stored.

        Knows the keys the core reads (streams, rate-limit and timeout overrides, the quota
        share, the installation's own authorization server), asks the provider plugin about
        its own (``validate_config`` hook) and checks that the provider's OAuth client
        settings are present in the environment.
        """
        errors: list[str] = []
        warnings: list[str] = []
        try:
            provider = self.get_connector(provider_id)
        except PluginError as exc:
            return ConfigValidation(False, [exc.message])
        if not isinstance(config, dict):
            return ConfigValidation(
                False, [f"config must be a JSON object, got {type(config).__name__}"]
            )
        errors += rate_limit_problems(provider.rate_limits, config.get("rate_limits"))
        if config.get("quota") is not None:
            errors += quota_problems(config["quota"]) if provider.quota is not None else [
                f"quota: {provider.id} declares no quota whose share could be kept free"]
        if provider.oauth is not None and provider.oauth.auth_base_url_config:
            from nexus_core.auth import auth_base_url_problems

            errors += auth_base_url_problems(
                provider, config.get(provider.oauth.auth_base_url_config), self.settings)
        timeouts = config.get("timeouts")
        if timeouts is not None:
            if not isinstance(timeouts, dict):
                errors.append("timeouts must be an object")
            else:
                for key in ("connect", "read"):
                    v = timeouts.get(key)
                    if v is not None and (not isinstance(v, Real) or v <= 0):
                        errors.append(f"timeouts.{key} must be a number of seconds > 0")
        streams = config.get("streams")
        if streams is not None:
            unknown = [s for s in streams if not provider.accepts_stream(s)] if isinstance(
                streams, list
            ) else None
            if unknown is None:
                errors.append("streams must be a list of stream names")
            elif unknown:
                errors.append(
                    f"unknown stream(s) {', '.join(map(str, unknown))}; "
                    f"{provider.id} has: {provider.describe_streams()}"
                )
        if self.registry.implements("validate_config", provider.id):
            found = self.registry.hook("validate_config", provider.id)(
                provider=provider, config=config)
            errors += [str(problem) for problem in found or ()]
        for var in provider.variables():
            if var.required and not self.settings.get(var.name):
                warnings.append(f"{var.name} is not set ({var.help}): {provider.id} will not "
                                "work without it")
        return ConfigValidation(not errors, errors, warnings)

    def get_connector_stats(self, *, sync: bool = False,
                            tenant_id: str | None = None) -> dict[str, Any]:
        """Counts over the installed connectors and plugins; with ``sync``, also installations
        by status and recent sync runs by status (:meth:`get_sync_stats`, reads the store);
        with ``tenant_id``, that tenant's figures under ``"tenant"``
        (:meth:`get_tenant_stats`) — the per-tenant view the metrics leave out unless
        NEXUS_METRICS_TENANT_LABELS is on."""
        providers = self.get_available_connectors()
        infos = self.registry.infos
        extra = self.get_sync_stats() if sync else {}
        if tenant_id is not None:
            extra["tenant"] = self.get_tenant_stats(tenant_id)
        return {
            **extra,
            "connectors": len(providers),
            "by_auth_type": dict(Counter(p.auth_type for p in providers)),
            "webhook_supported": sum(p.supports_webhooks for p in providers),
            "plugins_ok": sum(i.status == "ok" for i in infos),
            "plugins_skipped": sum(i.status == "skipped" for i in infos),
        }

    # -- installations (store) -------------------------------------------------------------

    _store: Store | None = None

    @property
    def store(self) -> Store:
        """The :class:`~nexus_core.store.Store` at NEXUS_DATABASE_URL, opened on first use."""
        store = self._store
        if store is None:
            from nexus_core.store import Store

            store = self._store = Store.from_settings(self.settings)
        return store

    def close(self) -> None:
        """Release the store's database connections (the service reopens it when used)."""
        store = getattr(self, "_store", None)
        if store is not None:
            self._store = None
            store.close()

    def install(
        self,
        provider: str,
        tenant_id: str,
        install_id: str,
        *,
        account_id: str | None = None,
        config: dict[str, Any] | None = None,
        credentials: Credentials | None = None,
    ) -> Installation:
        """Create an installation after checking the provider and its config. An OAuth2
        provider's installation without credentials is ``pending_authorization`` until its
        tenant completes the consent flow (:meth:`create_connect_link`); nothing syncs before."""
        self._check_config(provider, config or {}, tenant_id, install_id)
        prov = self.get_connector(provider)
        pending = prov.auth_type == "oauth2" and credentials is None
        return self.store.add_installation(
            tenant_id, install_id, provider, account_id=account_id, config=config,
            credentials=credentials, status="pending_authorization" if pending else "active",
        )

    def _check_config(
        self, provider: str, config: Any, tenant_id: str, install_id: str
    ) -> None:
        from nexus_core.errors import ConfigError

        check = self.validate_connector_config(provider, config)
        if not check.valid:
            raise ConfigError(
                f"invalid config for {provider}: {'; '.join(check.errors)}",
                provider=provider, tenant_id=tenant_id, install_id=install_id,
            )

    def update_installation(
        self,
        tenant_id: str,
        install_id: str,
        *,
        config: dict[str, Any] | None = None,
        changes: dict[str, Any] | None = None,
    ) -> Installation:
        """Change an installation's config: ``config`` replaces it, ``changes`` sets keys
        (dotted keys reach into nested objects; a None value removes the key). The result is
        validated like :meth:`install`'s; the next job of the installation uses it."""
        inst = self.store.get_installation(tenant_id, install_id)
        merged = dict(config) if config is not None else dict(inst.config)
        for key, value in (changes or {}).items():
            _set_path(merged, key, value)
        self._check_config(inst.provider, merged, tenant_id, install_id)
        return self.store.update_installation(tenant_id, install_id, config=merged)

    def rotate_webhook_key(self, tenant_id: str, install_id: str) -> Installation:
        """A new webhook key for the installation: its old webhook URL stops working now."""
        return self.store.rotate_webhook_key(tenant_id, install_id)

    def webhook_url(self, inst: Installation) -> str | None:
        """The installation's own webhook URL (under NEXUS_PUBLIC_URL; a path without it), or
        None when its provider takes no webhooks."""
        provider = self.registry.providers.get(inst.provider)
        if provider is None or provider.webhook is None or not inst.webhook_key:
            return None
        base = (self.settings.public_url or "").rstrip("/")
        return f"{base}/webhooks/{inst.provider}/{inst.webhook_key}"

    def get_installation(self, tenant_id: str, install_id: str) -> Installation:
        return self.store.get_installation(tenant_id, install_id)

    def list_installations(
        self, tenant_id: str | None = None, *, provider: str | None = None,
        status: str | None = None, limit: int | None = None,
        after: tuple[str, str] | None = None,
    ) -> list[Installation]:
        """One tenant's installations, or every tenant's when ``tenant_id`` is None (operator).
        With ``limit``, one page in (tenant id, install id) order, starting after the
        installation ``after`` = (tenant id, install id)."""
        if limit is not None:
            return self.store.page_installations(limit=limit, after=after, tenant_id=tenant_id,
                                                 provider=provider, status=status)
        if tenant_id is None:
            return self.store.list_all_installations(provider=provider, status=status)
        return [
            i for i in self.store.list_installations(tenant_id)
            if (provider is None or i.provider == provider)
            and (status is None or i.status == status)
        ]

    def set_installation_status(self, tenant_id: str, install_id: str, status: str) -> Installation:
        """Disable or re-enable an installation. One waiting for its OAuth authorization (no
        credentials yet) cannot be made active by hand: its tenant must connect it."""
        from nexus_core.errors import NexusError

        if status == "active":
            inst = self.store.get_installation(tenant_id, install_id)
            if inst.status == "pending_authorization" and \
                    self.store.get_credentials(tenant_id, install_id) is None:
                raise NexusError(
                    "installation has no credentials yet: it becomes active when its tenant "
                    "completes the OAuth authorization", provider=inst.provider,
                    tenant_id=tenant_id, install_id=install_id,
                    hint=f"send the tenant a connect link: `nexus auth link {inst.provider} "
                    f"--tenant {tenant_id} --install {install_id}`")
        return self.store.set_status(tenant_id, install_id, status)

    def remove_installation(self, tenant_id: str, install_id: str) -> None:
        """Delete an installation with its credentials, checkpoints and pending OAuth states."""
        self.store.remove_installation(tenant_id, install_id)

    def get_authorization_url(
        self, provider: str, tenant_id: str, install_id: str, redirect_uri: str | None = None,
        *, config: dict[str, Any] | None = None, intent: str = "connect",
    ) -> str:
        """The provider's consent URL for an installation, for trusted server code that has
        authenticated its user as acting for ``tenant_id`` (a browser-facing flow uses
        :meth:`create_connect_link`). ``config`` is stored with the installation when the flow
        completes; ``intent="reconnect"`` allows binding it to another provider account."""
        from nexus_core import oauth

        if config is not None:
            self._check_config(provider, config, tenant_id, install_id)
        return oauth.authorization_url(
            self.store, self.registry, provider, tenant_id, install_id,
            redirect_uri=redirect_uri, settings=self.settings, config=config, intent=intent,
        )

    def create_connect_link(
        self,
        provider: str,
        tenant_id: str,
        install_id: str,
        *,
        config: dict[str, Any] | None = None,
        expires_in: float | None = None,
        intent: str = "connect",
        base_url: str | None = None,
        redirect_uri: str | None = None,
    ) -> Any:
        """A single-use, expiring link that starts the OAuth flow for this tenant's
        installation on the public app (``/integrations/<provider>/authorize?token=…``): the
        only way a browser may start one. Create it server-side, after authenticating the user
        as acting for ``tenant_id``. ``intent="reconnect"`` may move the installation to another
        provider account (logged); ``expires_in`` defaults to NEXUS_CONNECT_LINK_TTL. Returns a
        :class:`~nexus_core.oauth.ConnectLinkInfo` (``.url``, ``.expires_at``)."""
        from nexus_core import oauth

        if config is not None:
            self._check_config(provider, config, tenant_id, install_id)
        return oauth.create_connect_link(
            self.store, self.registry, provider, tenant_id, install_id, config=config,
            intent=intent, expires_in=expires_in, base_url=base_url, redirect_uri=redirect_uri,
            settings=self.settings,
        )

    def complete_authorization(
        self, provider: str, code: str, state: str, *, tenant_id: str | None = None,
        install_id: str | None = None,
    ) -> Installation:
        from nexus_core import oauth

        return oauth.complete_authorization(
            self.store, self.registry, provider, code, state, settings=self.settings,
            tenant_id=tenant_id, install_id=install_id,
        )

    # -- sync (RQ jobs) --------------------------------------------------------------------

    @property
    def redis(self) -> Any:
        """The Redis client for REDIS_URL (queues), connected on first use."""
        client = getattr(self, "_redis", None)
        if client is None:
            from nexus_core.queues import redis_connection

            client = self._redis = redis_connection(self.settings)
        return client

    def _start(
        self, kind: str, provider: str, tenant_id: str, install_id: str, stream: str | None
    ) -> str:
        from nexus_core.sync import SyncOptions, start_sync

        self.registry.provider(provider)
        return start_sync(self.redis, self.store, kind, provider, tenant_id, install_id, stream,
                          opts=SyncOptions.from_settings(self.settings))

    def start_backfill(
        self, provider: str, tenant_id: str, install_id: str, stream: str | None = None
    ) -> str:
        """Enqueue a backfill of ``stream`` (None: every stream) and return its job id; while
        one is active for this installation and stream, return that one's id instead."""
        return self._start("backfill", provider, tenant_id, install_id, stream)

    def start_delta(
        self, provider: str, tenant_id: str, install_id: str, stream: str | None = None
    ) -> str:
        """Enqueue a delta from the stored delta cursor; an active one's id if there is one."""
        return self._start("delta", provider, tenant_id, install_id, stream)

    #: The seed's WorkerManager names.
    def schedule_backfill_job(
        self, provider: str, tenant_id: str, install_id: str, stream: str | None = None
    ) -> str:
        return self.start_backfill(provider, tenant_id, install_id, stream)

    def schedule_delta_job(
        self, provider: str, tenant_id: str, install_id: str, stream: str | None = None
    ) -> str:
        return self.start_delta(provider, tenant_id, install_id, stream)

    def schedule_webhook_job(
        self, provider: str, tenant_id: str, install_id: str, request: Any
    ) -> str:
        """Enqueue an already verified and routed delivery (a ``WebhookRequest``) for one
        installation, with the same job id and replay protection as the ingress."""
        from nexus_core.webhooks import WebhookIngress

        ingress = WebhookIngress(registry=self.registry, redis=self.redis,
                                 settings=self.settings, store=self.store)
        return ingress.enqueue_verified(provider, request, tenant_id, install_id)

    def schedule_health_check(self, provider: str, tenant_id: str, install_id: str) -> str:
        """Enqueue a health check (at most one per installation per minute); returns its id."""
        import contextlib
        import time

        from rq import Callback
        from rq.exceptions import DuplicateJobError

        from nexus_core import queues

        self.registry.provider(provider)
        self.store.get_installation(tenant_id, install_id)
        sync = queues.job_id("health", provider, tenant_id, install_id)
        jid = queues.slot_job_id(sync, int(time.time() // 60))
        with contextlib.suppress(DuplicateJobError):  # one per installation and minute
            queues.queue(queues.HEALTH, self.redis).enqueue_call(
                queues.JOB_HEALTH,
                kwargs={"provider": provider, "tenant_id": tenant_id, "install_id": install_id},
                job_id=jid, unique=True, on_failure=Callback(queues.ON_FAILURE),
                description=f"health {provider} {tenant_id}/{install_id}",
            )
        return jid

    def get_queue_stats(self) -> dict[str, Any]:
        """Per queue: queued/started/scheduled/deferred/finished/failed (dead-letter) counts
        and the workers listening on it; plus per-tenant backfill rate-limit usage."""
        from nexus_core.queues import queue_stats

        return queue_stats(self.redis, self.settings.worker_concurrency)

    def get_sync_stats(self) -> dict[str, Any]:
        """Installations by status and the latest sync runs by status (from the store)."""
        runs = self.store.list_runs(limit=1000)
        return {
            "installations": self.store.count_installations(),
            "recent_runs": dict(Counter(r.status for r in runs)),
            "records_synced_recent": sum(r.records for r in runs),
        }

    def get_tenant_stats(self, tenant_id: str, *, limit: int = 1000) -> dict[str, Any]:
        """One tenant's installations and, per installation and operation (backfill, delta),
        over its latest ``limit`` sync runs: runs, success rate (succeeded / finished),
        p50/p95 duration of the finished runs, records, and the last error with when it
        happened. Only this tenant's rows are read."""
        from nexus_core.stats import tenant_stats

        return tenant_stats(self.store, tenant_id, limit=limit)

    # -- webhooks and health ---------------------------------------------------------------

    def process_webhook(
        self, provider: str, tenant_id: str, install_id: str, headers: dict[str, str],
        body: bytes, *, url: str | None = None,
    ) -> str | None:
        """Verify, dedupe and enqueue one delivery for an installation, exactly as
        ``POST /webhooks/{provider}/{key}`` does; returns the job id (the existing one for a
        replay), or None when the installation is disabled or waiting for its authorization
        (answered, not enqueued). ``url``: the URI the provider called, when its signature
        covers it (HubSpot v2/v3); default: the installation's webhook URL. Raises
        :class:`~nexus_core.errors.WebhookRejected` (unknown installation: 404) when nothing
        was enqueued."""
        from nexus_core.webhooks import ingest_webhook

        result = ingest_webhook(
            provider, headers, body, tenant_id=tenant_id, install_id=install_id, url=url,
            settings=self.settings, registry=self.registry, redis=self.redis, store=self.store,
        )
        found = result.jobs or result.duplicate_jobs
        return found[0] if found else None

    def health_check_immediate(self, provider: str, tenant_id: str, install_id: str) -> Health:
        """Check an installation now, in this process (the seed's healthCheckImmediate): a
        :class:`~nexus_core.models.Health`, unhealthy rather than raising when the provider is
        unreachable or the grant is revoked. The answer is stored as the installation's last
        check (``nexus installs list/show``); turning unhealthy is logged once at WARNING."""
        from nexus_core.errors import AuthError
        from nexus_core.health import check_health, record
        from nexus_core.runtime import build_context, close_context

        self.registry.provider(provider)
        try:
            ctx = build_context(self.store, self.registry, tenant_id, install_id,
                                provider=provider, redis=self.redis, settings=self.settings,
                                metadata={"kind": "health"})
        except AuthError as exc:  # the proactive refresh was refused: only the tenant can fix it
            health = Health(healthy=False, auth_valid=False, error_count=1,
                            details={"error": exc.message, "needs_reauth": exc.needs_reauth})
        else:
            try:
                health = check_health(self.registry, ctx)
            finally:
                close_context(ctx)
        return record(self.store, provider, tenant_id, install_id, health)


def _set_path(config: dict[str, Any], key: str, value: Any) -> None:
    """``config[a][b] = value`` for ``a.b`` (None removes the key)."""
    from nexus_core.errors import ConfigError

    *parents, last = key.split(".")
    if not last or any(not p for p in parents):
        raise ConfigError(f"config key {key!r} is malformed (empty part)")
    node = config
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"config key {key!r}: {part!r} is not an object")
        node = child
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
