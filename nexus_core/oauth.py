"""The OAuth2 authorization-code flow and rotation-safe token refresh.

Written by hand on ``requests`` rather than requests-oauthlib: oauthlib refuses plain-HTTP token
endpoints unless a process-wide ``OAUTHLIB_INSECURE_TRANSPORT`` flag is set (our simulators and
tests run on 127.0.0.1), it cannot read Slack's ``200 {"ok": false}`` errors without compliance
hooks, and it would hide the three things this module exists for: the one-time stored ``state``,
the error classification (``invalid_grant`` → ``needs_reauth``), and the single-flight refresh.
The flow itself (RFC 6749 §4.1 + RFC 7636 S256) is ~40 lines here.

Refresh is single-flight across processes: a Redis lock per installation. Whoever wins refreshes
and commits the new credentials (rotated refresh token included) *before* releasing the lock;
whoever waited re-reads the store and uses the new token instead of spending the (single-use)
refresh token again.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
from loguru import logger

from nexus_core import ids
from nexus_core.errors import AuthError, ConfigError, NotFound, ProviderError
from nexus_core.log import redact
from nexus_core.models import ConnectorContext, Credentials, Installation, Provider, utcnow

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.models import OAuthConfig
    from nexus_core.plugins import PluginRegistry
    from nexus_core.store import Store


#: Token-endpoint answers meaning "this grant is dead, only the tenant can fix it".
REAUTH_ERRORS = frozenset(
    e.lower()
    for e in (
        "invalid_grant", "BAD_REFRESH_TOKEN", "invalid_refresh_token", "token_revoked",
        "token_expired", "refresh_token_expired", "account_inactive",
    )
)


def _settings(settings: Settings | None) -> Settings:
    if settings is None:
        from nexus_core.config import get_settings

        return get_settings()
    return settings


# -- provider endpoints and client settings ------------------------------------------------


def oauth_config(provider: Provider) -> OAuthConfig:
    if provider.oauth is None:
        raise ConfigError(
            f"provider {provider.id!r} does not use the OAuth2 authorization-code flow "
            f"(auth type {provider.auth_type})",
            provider=provider.id,
            hint="add credentials with `nexus installs add --credentials-file` instead",
        )
    return provider.oauth


def _env_prefix(provider: Provider) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", provider.id).upper()


def endpoint(provider: Provider, which: str, settings: Settings | None = None) -> str:
    """The ``authorize`` or ``token`` URL, with overrides for simulators and sandboxes:

    1. ``<PROVIDER>_AUTHORIZE_URL`` / ``<PROVIDER>_TOKEN_URL`` (e.g. ``HUBSPOT_TOKEN_URL``);
    2. ``Provider.base_url_env``: a URL under ``base_url`` (or on its host) is moved to the
       override, keeping the rest of the path;
    3. ``Provider.oauth``.
    """
    settings = _settings(settings)
    oauth = oauth_config(provider)
    url = oauth.authorize_url if which == "authorize" else oauth.token_url
    explicit = settings.get(f"{_env_prefix(provider)}_{which.upper()}_URL")
    if explicit:
        return explicit
    override = settings.get(provider.base_url_env) if provider.base_url_env else None
    if override and provider.base_url:
        base = provider.base_url.rstrip("/")
        if url.startswith(base):
            return override.rstrip("/") + url[len(base):]
        src, dst = urlsplit(base), urlsplit(override)
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) == (src.scheme, src.netloc):
            return urlunsplit((dst.scheme, dst.netloc, parts.path, parts.query, parts.fragment))
    return url


def _client(provider: Provider, settings: Settings) -> tuple[str, str | None]:
    oauth = oauth_config(provider)
    env = oauth.client_id_env or f"{_env_prefix(provider)}_CLIENT_ID"
    client_id = settings.get(env)
    if not client_id:
        raise ConfigError(
            f"{env} is not set: the OAuth client id of provider {provider.id!r}",
            provider=provider.id,
            hint=f"create an app with {provider.name} and set {env} (and its client secret)",
        )
    secret_env = oauth.client_secret_env or f"{_env_prefix(provider)}_CLIENT_SECRET"
    return client_id, settings.get(secret_env)


def _redirect_uri(provider: Provider, settings: Settings, given: str | None) -> str:
    if given:
        return given
    env = oauth_config(provider).redirect_uri_env or f"{_env_prefix(provider)}_REDIRECT_URI"
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
    _check_target(store, provider, tenant_id, install_id)
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
    base = endpoint(provider, "authorize", settings)
    return base + ("&" if "?" in base else "?") + urlencode(params)


def _check_target(store: Store, provider: Provider, tenant_id: str, install_id: str) -> None:
    """An existing installation must belong to ``provider``."""
    try:
        existing = store.get_installation(tenant_id, install_id)
    except NotFound:
        return
    if existing.provider != provider.id:
        from nexus_core.store import Conflict

        raise Conflict(
            f"installation {install_id!r} of tenant {tenant_id!r} belongs to provider "
            f"{existing.provider!r}, not {provider.id!r}",
            tenant_id=tenant_id, install_id=install_id,
            hint="choose another --install id for the new connection",
        )


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
    where = {"provider": provider_id, "tenant_id": link.tenant_id, "install_id": link.install_id}
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
    where = {"provider": provider_id, "tenant_id": stored.tenant_id,
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
    creds = registry.hook("authorize", provider_id)(
        ctx=ctx, code=code, redirect_uri=stored.redirect_uri, code_verifier=stored.code_verifier
    )
    if creds is None:
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": stored.redirect_uri}
        if stored.code_verifier:
            form["code_verifier"] = stored.code_verifier
        data = _token_request(provider, form, settings, purpose="authorization", where=where)
        creds = parse_token_response(provider, data)
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


# -- token endpoint ------------------------------------------------------------------------


def _token_request(
    provider: Provider, form: dict[str, str], settings: Settings, *, purpose: str,
    where: dict[str, Any],
) -> dict[str, Any]:
    import requests

    oauth = oauth_config(provider)
    client_id, client_secret = _client(provider, settings)
    body = dict(form)
    auth = None
    if oauth.client_auth == "basic":
        auth = (client_id, client_secret or "")
    else:
        body["client_id"] = client_id
        if client_secret:
            body["client_secret"] = client_secret
    url = endpoint(provider, "token", settings)
    try:
        resp = requests.post(
            url, data=body, auth=auth, headers={"Accept": "application/json"},
            timeout=(provider.timeouts.connect, provider.timeouts.read),
        )
    except requests.RequestException as exc:
        raise ProviderError(
            f"{provider.name} token endpoint {url} is unreachable during {purpose}: "
            f"{type(exc).__name__}", retryable=True, **where,
        ) from None
    try:
        data: Any = resp.json()
    except ValueError:
        data = None
    code, description = _error_of(data)
    if resp.status_code >= 500 or resp.status_code == 429:
        raise ProviderError(
            f"{provider.name} token endpoint answered HTTP {resp.status_code} during {purpose}",
            retryable=True, status=resp.status_code, **where,
        )
    if code is None and resp.status_code < 400 and isinstance(data, dict):
        return data
    code = code or f"HTTP {resp.status_code}"
    text = redact(f"{code}: {description}" if description else code)
    if purpose == "refresh" and code.lower() in REAUTH_ERRORS:
        raise AuthError(
            f"{provider.name} rejected the refresh token ({text}); the tenant must reconnect",
            needs_reauth=True, hint="send the tenant a new link: `nexus auth url`", **where,
        )
    raise AuthError(f"{provider.name} token endpoint refused the {purpose}: {text}", **where)


def _error_of(data: Any) -> tuple[str | None, str | None]:
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Salesforce error list
        return data[0].get("errorCode"), data[0].get("message")
    if not isinstance(data, dict):
        return ("unreadable_response", None) if data is None else ("unexpected_response", None)
    if data.get("ok") is False:  # Slack: HTTP 200 {"ok": false, "error": ...}
        return str(data.get("error") or "unknown_error"), None
    if data.get("error"):
        return str(data["error"]), data.get("error_description")
    if data.get("status") and str(data["status"]).lower() != "ok" and "access_token" not in data:
        return str(data["status"]), data.get("message")  # HubSpot BAD_REFRESH_TOKEN
    if "access_token" not in data and "authed_user" not in data:
        return "no_access_token", None
    return None, None


def parse_token_response(
    provider: Provider,
    data: dict[str, Any],
    *,
    previous: Credentials | None = None,
    now: datetime | None = None,
) -> Credentials:
    """Credentials from a token response (HubSpot, Slack, Salesforce and RFC 6749 shapes).

    ``expires_at`` comes from ``expires_in``, else ``OAuthConfig.default_token_lifetime``.
    A refresh answer without a new refresh token keeps ``previous``'s (Salesforce without
    rotation). The provider account id goes to ``extra["account_id"]``.
    """
    oauth = oauth_config(provider)
    now = now or utcnow()
    access = data.get("access_token") or (data.get("authed_user") or {}).get("access_token")
    if not access:
        raise ProviderError(f"{provider.name} token response holds no access_token",
                            provider=provider.id)
    lifetime = data.get("expires_in")
    if lifetime in (None, "") and oauth.default_token_lifetime is not None:
        lifetime = oauth.default_token_lifetime
    expires_at = now + timedelta(seconds=float(lifetime)) if lifetime not in (None, "") else None
    raw_scopes = data.get("scope", data.get("scopes"))
    if isinstance(raw_scopes, str):
        scopes: tuple[str, ...] = tuple(s for s in re.split(r"[\s,]+", raw_scopes) if s)
    elif isinstance(raw_scopes, list | tuple):
        scopes = tuple(map(str, raw_scopes))
    else:
        scopes = previous.scopes if previous else ()
    extra: dict[str, Any] = dict(previous.extra) if previous else {}
    team = data.get("team") if isinstance(data.get("team"), dict) else {}
    account = data.get("hub_id") or team.get("id") or data.get("account_id")
    if not account and isinstance(data.get("id"), str) and "/id/" in data["id"]:
        account = data["id"].split("/id/", 1)[1].split("/")[0]  # Salesforce org id
    if account:
        extra["account_id"] = str(account)
    for key in ("instance_url", "bot_user_id", "app_id", "user_id", "token_use"):
        if data.get(key) is not None:
            extra[key] = data[key]
    if team.get("name"):
        extra["team_name"] = team["name"]
    token_type = str(data.get("token_type") or "Bearer")
    if token_type.lower() in ("bearer", "bot", "user"):
        token_type = "Bearer"  # noqa: S105 - a scheme name, not a secret
    return Credentials(
        access_token=access,
        refresh_token=data.get("refresh_token") or (previous.refresh_token if previous else None),
        token_type=token_type,
        expires_at=expires_at,
        scopes=scopes,
        extra=extra,
    )


# -- refresh -------------------------------------------------------------------------------


def lock_name(provider: str, tenant_id: str, install_id: str) -> str:
    return "nexus:lock:refresh:" + ids.join_key(provider, tenant_id, install_id)


def _mark_needs_reauth(store: Store, inst: Installation, exc: AuthError) -> None:
    store.set_status(inst.tenant_id, inst.install_id, "needs_reauth")
    logger.bind(provider=inst.provider, tenant_id=inst.tenant_id,
                install_id=inst.install_id).error(
        "installation marked needs_reauth: {} — not retrying; the tenant must reconnect "
        "(`nexus auth url {} --tenant {} --install {}`)",
        exc.message, inst.provider, inst.tenant_id, inst.install_id,
    )


def refresh_credentials(
    store: Store,
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
    where = {"provider": inst.provider, "tenant_id": tenant_id, "install_id": install_id}
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
            fresh = registry.hook("refresh", inst.provider)(ctx=ctx)
            if fresh is None:
                form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
                data = _token_request(provider, form, settings, purpose="refresh", where=where)
                fresh = parse_token_response(provider, data, previous=current)
            elif fresh.refresh_token is None:
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
    store: Store,
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
