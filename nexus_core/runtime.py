"""Run-time wiring shared by jobs and the service: the per-process store, Redis and plugins, and
the :class:`~nexus_core.models.ConnectorContext` a hook gets for one installation.

A forked RQ work-horse inherits the worker's objects; a SQLAlchemy pool must never be shared
across ``fork``, so :func:`get_store` hands each process its own connections (``dispose(close=
False)`` in the child, as SQLAlchemy documents) while keeping the engine and key ring.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from loguru import logger

from nexus_core.errors import AuthError, NexusError, PluginError

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.models import ConnectorContext, Credentials, Installation
    from nexus_core.plugins import PluginRegistry
    from nexus_core.seams import RedisClient, SyncStore
    from nexus_core.store import Store, SyncState

_lock = threading.Lock()
_store: tuple[int, str, Any] | None = None  # (pid, url, Store)
_redis: tuple[int, Any, Any] | None = None  # (pid, where, client)


def get_settings() -> Settings:
    from nexus_core.config import get_settings as _get

    return _get()


def check_startup(settings: Settings | None = None) -> None:
    """What a long-running process (``serve``, ``run-worker``, ``scheduler``) and
    ``IntegrationService.initialize()`` check before they start, so a misconfiguration stops
    them at once instead of failing every job: the credential key ring loads — in production
    NEXUS_ENCRYPTION_KEYS must be set (no generated key file), and configured keys must be
    well-formed. Raises :class:`~nexus_core.errors.ConfigError`."""
    settings = settings or get_settings()
    if settings.production or settings.encryption_keys:
        from nexus_core.crypto import keyring_from_settings

        keyring_from_settings(settings)


def get_store(settings: Settings | None = None) -> Store:
    """The process's store for NEXUS_DATABASE_URL (created once, re-pooled after ``fork``)."""
    global _store
    settings = settings or get_settings()
    pid = os.getpid()
    with _lock:
        if _store is not None and _store[1] == settings.database_url:
            if _store[0] != pid:
                _store[2].engine.dispose(close=False)  # the parent's connections stay the parent's
                _store = (pid, _store[1], _store[2])
            return _store[2]
        from nexus_core.store import Store

        store = Store.from_settings(settings)
        _store = (pid, settings.database_url, store)
        return store


def get_redis(settings: Settings | None = None) -> Any:
    """The process's Redis client for REDIS_URL or the Sentinel master (a new pool after
    ``fork``; :func:`nexus_core.queues.redis_connection` builds it)."""
    global _redis
    settings = settings or get_settings()
    pid = os.getpid()
    where = (settings.redis_url, settings.redis_sentinels, settings.redis_sentinel_master)
    with _lock:
        if _redis is not None and _redis[0] == pid and _redis[1] == where:
            return _redis[2]
        from nexus_core.queues import redis_connection

        client = redis_connection(settings)
        _redis = (pid, where, client)
        return client


def reset() -> None:
    """Forget the cached store and Redis client (tests switch databases between cases)."""
    global _store, _redis
    with _lock:
        if _store is not None and _store[0] == os.getpid():
            _store[2].close()
        _store = _redis = None
    from nexus_core.sync import installations

    installations.reset()


def load_installation(
    store: SyncStore, tenant_id: str, install_id: str, provider: str | None
) -> Installation:
    return check_installation(store.get_installation(tenant_id, install_id), provider)


def check_installation(inst: Installation, provider: str | None) -> Installation:
    """``inst`` if it may sync: it belongs to ``provider`` and is active (not waiting for its
    first authorization or a re-authorization, not disabled)."""
    where = {"provider": inst.provider, "tenant_id": inst.tenant_id,
             "install_id": inst.install_id}
    if provider is not None and inst.provider != provider:
        raise PluginError(
            f"installation belongs to provider {inst.provider!r}, not {provider!r}", **where
        )
    if inst.status == "needs_reauth":
        raise AuthError("installation needs re-authorization; not syncing", needs_reauth=True,
                        hint="the tenant must reconnect it", **where)
    if inst.status == "disabled":
        raise NexusError("installation is disabled; not syncing", **where)
    if inst.status == "pending_authorization":
        raise NexusError(
            "installation is waiting for its OAuth authorization; not syncing",
            hint=f"send the tenant a connect link: `nexus auth link {inst.provider} --tenant "
            f"{inst.tenant_id} --install {inst.install_id}`", **where)
    return inst


def reads_credentials(provider: Any) -> bool:
    """Whether :func:`build_context` takes the credentials from a preloaded state: every auth
    type but ``none`` and ``oauth2`` (whose credentials go through the single-flight refresh,
    :func:`nexus_core.oauth.ensure_fresh`)."""
    return provider.auth_type not in ("none", "oauth2")


def build_context(
    store: SyncStore,
    registry: PluginRegistry,
    tenant_id: str,
    install_id: str,
    *,
    provider: str | None = None,
    redis: RedisClient | None = None,
    settings: Settings | None = None,
    metadata: dict[str, Any] | None = None,
    refresh: bool = True,
    state: SyncState | None = None,
) -> ConnectorContext:
    """The context for one installation: stored config and credentials (refreshed ahead of
    expiry when ``refresh``), ``ctx.http`` = the installation's resilient session and
    ``ctx.log`` = a logger bound to provider/tenant/installation. Close ``ctx.http`` when done.

    ``state`` is what the caller already read in one transaction
    (:meth:`~nexus_core.store.Store.load_sync_state`, with credentials when
    :func:`reads_credentials` says the provider needs them): nothing is read again."""
    from nexus_core.models import ConnectorContext

    settings = settings or get_settings()
    if state is not None:
        inst = check_installation(state.installation, provider)
    else:
        inst = load_installation(store, tenant_id, install_id, provider)
    prov = registry.provider(inst.provider)
    creds: Credentials | None
    if prov.auth_type == "none":
        creds = None
    elif refresh and redis is not None and prov.auth_type == "oauth2":
        from nexus_core import oauth

        creds = oauth.ensure_fresh(store, redis, registry, tenant_id, install_id, settings=settings)
    elif state is not None and reads_credentials(prov):
        creds = state.credentials
    else:
        creds = store.get_credentials(tenant_id, install_id)
    current = {"creds": creds}

    def credentials() -> Credentials | None:
        return current["creds"]

    refresher = None
    if redis is not None and prov.auth_type == "oauth2":
        def refresher(stale: Credentials | None = None) -> Credentials:
            from nexus_core import oauth

            fresh = oauth.refresh_credentials(
                store, redis, registry, tenant_id, install_id, stale=stale, settings=settings
            )
            current["creds"] = fresh
            return fresh

    def session() -> Any:
        from nexus_core.http import ProviderSession

        return ProviderSession(
            prov, tenant_id=tenant_id, install_id=install_id, account_id=inst.account_id,
            redis=redis, registry=registry, credentials=credentials, refresh=refresher,
            config=inst.config, settings=settings,
        )

    http = LazySession(session)
    log = logger.bind(provider=inst.provider, tenant_id=tenant_id, install_id=install_id)
    return ConnectorContext(
        tenant_id=tenant_id, install_id=install_id, provider=inst.provider, credentials=creds,
        config=dict(inst.config), metadata=dict(metadata or {}), account_id=inst.account_id,
        http=http, log=log,
    )


class LazySession:
    """``ctx.http``: the installation's :class:`~nexus_core.http.ProviderSession`, built at its
    first use. Most webhook jobs never call the provider; building a session (requests' session
    and adapters, the shared limiter and breaker, settings) and importing the HTTP stack would be
    a large part of such a job. Attribute access and ``with`` are the session's own."""

    __slots__ = ("_factory", "_session")

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._session: Any = None

    @property
    def session_built(self) -> bool:
        return self._session is not None

    def _get(self) -> Any:
        if self._session is None:
            self._session = self._factory()
        return self._session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __enter__(self) -> Any:
        return self._get().__enter__()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session if it was built (nothing to do otherwise)."""
        if self._session is not None:
            self._session.close()

    def __repr__(self) -> str:
        return f"<ctx.http: {self._session!r}>" if self._session is not None else \
            "<ctx.http: not used yet>"


def close_context(ctx: ConnectorContext) -> None:
    close = getattr(ctx.http, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:  # closing must never fail a job that did its work
            logger.debug("closing the HTTP session failed: {}", exc)
