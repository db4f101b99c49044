"""The OAuth2 authorization-code flow and rotation-safe token refresh.

Written by hand on ``requests`` rather than requests-oauthlib: oauthlib refuses plain-HTTP token
endpoints unless a process-wide ``OAUTHLIB_INSECURE_TRANSPORT`` flag is set (our simulators and
tests run on 127.0.0.1), it cannot read errors inside an HTTP 200 (``{"ok": false}``) without
compliance hooks, and it would hide the three things this module exists for: the one-time
stored ``state``, the error classification (``invalid_grant`` → ``needs_reauth``), and the
single-flight refresh. The flow itself (RFC 6749 §4.1 + RFC 7636 S256) is ~40 lines here;
the token exchanges and the reading of token responses, declared per provider on
``OAuthConfig``, are in :mod:`nexus_core.auth`, where a plugin's own ``authorize``/``refresh``
hook can call them too.

Refresh is single-flight across processes: a Redis lock per installation. Whoever wins refreshes
and commits the new credentials (rotated refresh token included) *before* releasing the lock;
whoever waited re-reads the store and uses the new token instead of spending the (single-use)
refresh token again.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs
from loguru import logger

from nexus_core import auth, ids
from nexus_core.auth import endpoint, oauth_config, parse_token_response
from nexus_core.errors import AuthError, ConfigError, NotFound, ProviderError

__all__ = [
    "ConnectLinkInfo", "authorization_url", "complete_authorization", "create_connect_link",
    "endpoint", "ensure_fresh", "hook_context", "lock_name", "oauth_config",
    "parse_token_response", "pkce_pair", "refresh_credentials", "start_connect_link",
]
from nexus_core.models import ConnectorContext, Credentials, Installation, Provider, utcnow

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.plugins import PluginRegistry
    from nexus_core.seams import SyncStore
    from nexus_core.store import Store


def _settings(settings: Settings | None) -> Settings:
    if settings is None:
        from nexus_core.config import get_settings

        return get_settings()
    return settings


# -- provider endpoints and client settings ------------------------------------------------


def _client(provider: Provider, settings: Settings) -> tuple[str, str | None]:
    return auth.client_credentials(provider, settings)


def _redirect_uri(provider: Provider, settings: Settings, given: str | None) -> str:
    if given:
        return given
    env = oauth_config(provider).redirect_uri_env or f"{provider.env_prefix}_REDIRECT_URI"
    value = settings.get(env)
    if not value:
        raise ConfigError(
            f"no redirect URI for provider {provider.id!r}: pass one or set {env}",
            provider=provider.id,
            hint="it must match the redirect URL registered with the provider's app",
        )
    return value


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)  # 86 characters from the unreserved set
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


# -- the authorization-code flow -----------------------------------------------------------


def authorization_url(
    store: Store,
    registry: PluginRegistry,
    provider_id: str,
    tenant_id: str,
    install_id: str,
    *,
    redirect_uri: str | None = None,
    settings: Settings | None = None,
    scopes: list[str] | None = None,
    config: dict[str, Any] | None = None,
    intent: str = "connect",
) -> str:
    """The URL to send the tenant's user to. Stores a one-time ``state`` bound to the tenant,
    installation and provider, expiring after NEXUS_OAUTH_STATE_TTL seconds, with the PKCE
    verifier when the provider uses PKCE, the installation ``config`` to store when the flow
    completes (None: keep the stored one) and the ``intent`` (``reconnect`` may bind the
    installation to another provider account)."""
    settings = _settings(settings)
    provider = registry.provider(provider_id)
    oauth = oauth_config(provider)
    client_id, _ = _client(provider, settings)
    redirect = _redirect_uri(provider, settings, redirect_uri)
    existing = _check_target(store, provider, tenant_id, install_id)
    # The consent page of the installation's own authorization server, if it names one.
    effective = config if config is not None else (existing.config if existing else {})
    base = endpoint(provider, "authorize", settings, effective)
    state = secrets.token_urlsafe(32)
    params: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "state": state,
    }
    wanted = scopes if scopes is not None else list(provider.scopes)
    if wanted:
        params["scope"] = oauth.scope_separator.join(wanted)
    if oauth.optional_scopes:
        params[oauth.optional_scope_param] = oauth.scope_separator.join(oauth.optional_scopes)
    verifier = None
    if oauth.pkce:
        verifier, challenge = pkce_pair()
        params["code_challenge"] = challenge
        params["code_challenge_method"] = "S256"
    ttl = settings.oauth_state_ttl
    store.put_oauth_state(
        state, tenant_id, install_id, provider.id, redirect_uri=redirect,
        code_verifier=verifier, expires_at=utcnow() + timedelta(seconds=ttl),
        config=config, intent=intent,
    )
    return base + ("&" if "?" in base else "?") + urlencode(params)


def _check_target(store: Store, provider: Provider, tenant_id: str, install_id: str
                  ) -> Installation | None:
    """An existing installation must belong to ``provider``; it is returned (None: none)."""
    try:
        existing = store.get_installation(tenant_id, install_id)
    except NotFound:
        return None
    if existing.provider != provider.id:
        from nexus_core.store import Conflict

        raise Conflict(
            f"installation {install_id!r} of tenant {tenant_id!r} belongs to provider "
            f"{existing.provider!r}, not {provider.id!r}",
            tenant_id=tenant_id, install_id=install_id,
            hint="choose another --install id for the new connection",
        )
    return existing


# -- connect links: the only way the public app starts a flow -------------------------------


@attrs.frozen
class ConnectLinkInfo:
    """A connect link for the host product to hand to its user (email, button, redirect)."""

    url: str = attrs.field(repr=False)
    provider: str
    tenant_id: str
    install_id: str
    intent: str
    expires_at: datetime


def create_connect_link(
    store: Store,
    registry: PluginRegistry,
    provider_id: str,
    tenant_id: str,
    install_id: str,
    *,
    config: dict[str, Any] | None = None,
    intent: str = "connect",
    expires_in: float | None = None,
    base_url: str | None = None,
    redirect_uri: str | None = None,
    settings: Settings | None = None,
) -> ConnectLinkInfo:
    """A single-use, expiring link to ``/integrations/<provider>/authorize?token=…`` on the
    public app (NEXUS_PUBLIC_URL, or ``base_url``), bound to the provider, tenant, installation,
    intent and config. Created by trusted server code after it has authenticated its user as
    acting for ``tenant_id``; the public route starts no flow without one."""
    settings = _settings(settings)
    provider = registry.provider(provider_id)
    oauth_config(provider)
    _client(provider, settings)  # the client id must be configured before anyone clicks
    _check_target(store, provider, tenant_id, install_id)
    base = (base_url or settings.public_url or "").rstrip("/")
    if not base:
        raise ConfigError(
            "a connect link needs the public URL of `nexus serve`",
            provider=provider_id, tenant_id=tenant_id, install_id=install_id,
            hint="set NEXUS_PUBLIC_URL (e.g. https://hooks.example.com) or pass base_url",
        )
    ttl = settings.connect_link_ttl if expires_in is None else float(expires_in)
    if not 0 < ttl <= 30 * 86400:
        raise ConfigError(f"expires_in must be > 0 and <= 30 days, got {ttl:g} s",
                          provider=provider_id, tenant_id=tenant_id, install_id=install_id)
    token = secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(seconds=ttl)
    store.put_connect_link(token, provider.id, tenant_id, install_id, intent=intent,
                           expires_at=expires_at, config=config, redirect_uri=redirect_uri)
    logger.bind(provider=provider.id, tenant_id=tenant_id, install_id=install_id).info(
        "connect link created ({}, valid until {:%Y-%m-%d %H:%M:%S} UTC)", intent, expires_at)
    return ConnectLinkInfo(url=f"{base}/integrations/{provider.id}/authorize?token={token}",
                           provider=provider.id, tenant_id=tenant_id, install_id=install_id,
                           intent=intent, expires_at=expires_at)


def start_connect_link(
    store: Store,
    registry: PluginRegistry,
    provider_id: str,
    token: str,
    *,
    redirect_uri: str | None = None,
    settings: Settings | None = None,
) -> str:
    """The public authorize route: spend the connect link ``token`` (once) and return the
    provider's consent URL for the flow it is bound to. :class:`AuthError` for an unknown,
    used, expired or other provider's link — nothing is stored then."""
    settings = _settings(settings)
    registry.provider(provider_id)
    link = store.consume_connect_link(token, provider_id) if token else None
    if link is None:
        raise AuthError("unknown or already used connect link: a link works once",
                        provider=provider_id,
                        hint="ask the application for a new connect link")
    where: dict[str, Any] = {"provider": provider_id, "tenant_id": link.tenant_id,
                             "install_id": link.install_id}
    if link.expires_at <= utcnow():
        raise AuthError("connect link expired", hint="ask the application for a new one",
                        **where)
    return authorization_url(
        store, registry, provider_id, link.tenant_id, link.install_id,
        redirect_uri=link.redirect_uri or redirect_uri, settings=settings, config=link.config,
        intent=link.intent,
    )


def complete_authorization(
    store: Store,
    registry: PluginRegistry,
    provider_id: str,
    code: str,
    state: str,
    *,
    settings: Settings | None = None,
    tenant_id: str | None = None,
    install_id: str | None = None,
) -> Installation:
    """The OAuth callback: consume the one-time ``state``, exchange ``code`` (the provider's
    ``authorize`` hook first, the standard exchange if it returns None), then store the
    installation as active with its credentials and provider account id, in one transaction.

    A reused, unknown, expired or foreign state (another provider, or another tenant /
    installation than ``tenant_id``/``install_id`` when the caller knows them) is an
    :class:`AuthError` and nothing is stored.
    """
    settings = _settings(settings)
    provider = registry.provider(provider_id)
    if not state or not code:
        raise AuthError("the OAuth callback lacks `code` or `state`", provider=provider_id)
    stored = store.consume_oauth_state(state)
    if stored is None:
        raise AuthError(
            "unknown or already used OAuth state: the authorization link works once",
            provider=provider_id,
            hint="start the connection again (`nexus auth url`)",
        )
    where: dict[str, Any] = {"provider": provider_id, "tenant_id": stored.tenant_id,
             "install_id": stored.install_id}
    if stored.provider != provider_id or (
        tenant_id is not None and tenant_id != stored.tenant_id
    ) or (install_id is not None and install_id != stored.install_id):
        logger.warning("rejected a foreign OAuth state for provider {}", provider_id)
        raise AuthError(
            "OAuth state was issued for another provider or installation", provider=provider_id,
            tenant_id=tenant_id, install_id=install_id,
        )
    if stored.expires_at <= utcnow():
        raise AuthError("OAuth state expired", hint="start the connection again", **where)
    try:
        existing: Installation | None = store.get_installation(stored.tenant_id,
                                                               stored.install_id)
    except NotFound:  # a first connection has no installation yet
        existing = None
    account = existing.account_id if existing is not None else None
    config = stored.config if stored.config is not None else (
        existing.config if existing is not None else {})
    ctx = ConnectorContext(
        tenant_id=stored.tenant_id, install_id=stored.install_id, provider=provider_id,
        config=config, account_id=account,
    )
    from nexus_core import metrics

    with metrics.Operation(provider_id, "auth", stored.tenant_id), \
            auth.operation(provider, settings, where, config):
        with hook_context(registry, provider, "authorize", ctx, settings) as hook_ctx:
            creds = registry.hook("authorize", provider_id)(
                ctx=hook_ctx, code=code, redirect_uri=stored.redirect_uri,
                code_verifier=stored.code_verifier,
            )
        if creds is None:
            creds = auth.exchange_code(ctx, code, stored.redirect_uri, stored.code_verifier)
    new_account = creds.extra.get("account_id")
    if account and new_account and str(new_account) != account:
        if stored.intent != "reconnect":
            logger.bind(**where).warning(
                "refused to bind installation to {} account {} (it is connected to {}) "
                "without a reconnect link", provider_id, new_account, account)
            raise AuthError(
                f"this installation is connected to {provider.name} account {account}; the "
                f"authorization was for account {new_account}. Nothing was changed",
                hint="to move it to another account, the application must create a reconnect "
                "link (`nexus auth link --reconnect`)", **where,
            )
        logger.bind(**where).warning("installation reconnected from {} account {} to {}",
                                     provider_id, account, new_account)
    installation = store.connect_installation(
        stored.tenant_id, stored.install_id, provider_id, creds, config=stored.config,
    )
    logger.info(
        "connected {} installation {}/{} (account {})",
        provider_id, stored.tenant_id, stored.install_id, installation.account_id,
    )
    return installation


# -- custom hooks ----------------------------------------------------------------------------


@contextmanager
def hook_context(
    registry: PluginRegistry,
    provider: Provider,
    hook: str,
    ctx: ConnectorContext,
    settings: Settings,
    redis: Any = None,
) -> Iterator[ConnectorContext]:
    """``ctx`` for the provider's own ``authorize``/``refresh`` hook: with ``ctx.http``, a
    :class:`~nexus_core.http.ProviderSession` that sends no credentials (the token being
    obtained is not there yet), and ``ctx.log``; the session is closed after the hook."""
    if not registry.implements(hook, provider.id):
        yield ctx
        return
    from nexus_core.http import ProviderSession

    session = ProviderSession(
        provider, tenant_id=ctx.tenant_id, install_id=ctx.install_id,
        account_id=ctx.account_id, redis=redis, registry=registry, config=ctx.config,
        settings=settings,
    )
    log = logger.bind(provider=provider.id, tenant_id=ctx.tenant_id, install_id=ctx.install_id)
    try:
        yield attrs.evolve(ctx, http=session, log=log)
    finally:
        session.close()


# -- refresh -------------------------------------------------------------------------------


def lock_name(provider: str, tenant_id: str, install_id: str) -> str:
    return "nexus:lock:refresh:" + ids.join_key(provider, tenant_id, install_id)


def _mark_needs_reauth(store: SyncStore, inst: Installation, exc: AuthError) -> None:
    from nexus_core import metrics

    store.set_status(inst.tenant_id, inst.install_id, "needs_reauth")
    metrics.NEEDS_REAUTH.labels(inst.provider, "refresh").inc()
    logger.bind(provider=inst.provider, tenant_id=inst.tenant_id,
                install_id=inst.install_id).error(
        "installation marked needs_reauth: {} — not retrying; the tenant must reconnect "
        "(`nexus auth url {} --tenant {} --install {}`)",
        exc.message, inst.provider, inst.tenant_id, inst.install_id,
    )


def refresh_credentials(
    store: SyncStore,
    redis: Any,
    registry: PluginRegistry,
    tenant_id: str,
    install_id: str,
    *,
    stale: Credentials | None = None,
    settings: Settings | None = None,
) -> Credentials:
    """Refresh an installation's access token, once across every process.

    ``stale`` is the credentials the caller found expired; if the store already holds a
    different access token when the lock is ours, someone else refreshed and that token is
    returned without calling the provider. ``stale`` None forces a refresh.
    """
    settings = _settings(settings)
    inst = store.get_installation(tenant_id, install_id)
    provider = registry.provider(inst.provider)
    where: dict[str, Any] = {"provider": inst.provider, "tenant_id": tenant_id,
                             "install_id": install_id}
    # The lease outlives the slowest token request, so it never expires mid-refresh.
    lease = provider.timeouts.connect + provider.timeouts.read + 30
    lock = redis.lock(lock_name(inst.provider, tenant_id, install_id), timeout=lease,
                      sleep=0.02, blocking_timeout=lease + 10, thread_local=False)
    if not lock.acquire():
        raise ProviderError("timed out waiting for another process to refresh the token",
                            retryable=True, **where)
    try:
        inst = store.get_installation(tenant_id, install_id)
        if inst.status == "needs_reauth":
            raise AuthError("installation needs re-authorization", needs_reauth=True, **where)
        if inst.status == "disabled":
            raise AuthError("installation is disabled", **where)
        current = store.get_credentials(tenant_id, install_id)
        if current is not None and stale is not None and (
            current.access_token != stale.access_token
        ):
            return current
        try:
            if current is None or not current.refresh_token:
                raise AuthError("no refresh token is stored for this installation",
                                needs_reauth=True, **where)
            ctx = ConnectorContext(
                tenant_id=tenant_id, install_id=install_id, provider=inst.provider,
                credentials=current, config=inst.config, account_id=inst.account_id,
            )
            from nexus_core import metrics

            with metrics.Operation(inst.provider, "refresh", tenant_id), \
                    auth.operation(provider, settings, where, inst.config):
                with hook_context(registry, provider, "refresh", ctx, settings,
                                  redis) as hook_ctx:
                    fresh = registry.hook("refresh", inst.provider)(ctx=hook_ctx)
                if fresh is None:
                    fresh = auth.refresh_grant(ctx)
            if fresh.refresh_token is None:
                fresh = attrs.evolve(fresh, refresh_token=current.refresh_token)
        except AuthError as exc:
            if exc.needs_reauth:
                _mark_needs_reauth(store, inst, exc)
            raise
        store.save_credentials(tenant_id, install_id, fresh)
        logger.bind(**where).info("refreshed access token (expires {})", fresh.expires_at)
        return fresh
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - lease expired: the credentials are committed anyway
            logger.bind(**where).warning("refresh lock expired before release")


def ensure_fresh(
    store: SyncStore,
    redis: Any,
    registry: PluginRegistry,
    tenant_id: str,
    install_id: str,
    *,
    margin: float | None = None,
    settings: Settings | None = None,
) -> Credentials | None:
    """The installation's credentials, refreshed first when they expire within ``margin``
    seconds (NEXUS_REFRESH_MARGIN, default 300). None when it has no credentials."""
    settings = _settings(settings)
    if margin is None:
        margin = settings.refresh_margin
    creds = store.get_credentials(tenant_id, install_id)
    if creds is None or not creds.refresh_token or not creds.expires_within(margin):
        return creds
    return refresh_credentials(store, redis, registry, tenant_id, install_id, stale=creds,
                               settings=settings)
