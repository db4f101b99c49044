"""The standard OAuth2 token exchanges, for the core and for a plugin's own hooks.

The core runs these when a provider leaves the ``authorize``/``refresh`` hooks unimplemented (or
they return None). A plugin whose provider needs one extra step calls them from its hook instead
of rewriting the exchange — e.g. a provider that signs its token response::

    from nexus_core import auth, hookimpl

    @hookimpl
    def refresh(ctx):
        data = auth.token_request(PROVIDER, {"grant_type": "refresh_token",
                                             "refresh_token": ctx.credentials.refresh_token})
        check_signature(data)  # the plugin's own rule
        return auth.parse_token_response(PROVIDER, data, previous=ctx.credentials)

How a provider's token endpoint answers is declared on :class:`~nexus_core.models.OAuthConfig`
(where the error code is, whether an ``"ok": false`` in an HTTP 200 is an error, which codes mean
the grant is dead, where the account id and extra fields are); the defaults are plain RFC 6749.
Nothing here names a provider.

The settings used (client id/secret, endpoint overrides) are, unless passed, those of the OAuth
operation in progress — the callback or refresh that called the hook — else the process's.

Hand-written on ``requests`` for the reasons given in :mod:`nexus_core.oauth` (oauthlib refuses
``http://`` token endpoints, such as local simulators, without a process-wide flag, and cannot
read errors inside an HTTP 200).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from nexus_core.errors import AuthError, ConfigError, ProviderError
from nexus_core.log import redact
from nexus_core.models import ConnectorContext, Credentials, Provider, utcnow

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.models import OAuthConfig

__all__ = [
    "auth_base_url",
    "auth_base_url_problems",
    "client_credentials",
    "endpoint",
    "env_prefix",
    "exchange_code",
    "lookup",
    "oauth_config",
    "parse_token_response",
    "refresh_grant",
    "token_request",
    "token_url",
]

#: Longest token lifetime believed (10 years); a larger ``expires_in`` is an unreadable answer.
_MAX_LIFETIME = 10 * 365 * 86400


@attrs.frozen
class _Operation:
    provider: Provider
    settings: Settings
    where: dict[str, Any]
    #: The installation's config (its own authorization server, ``auth_base_url_config``).
    config: dict[str, Any] | None = None


_current: ContextVar[_Operation | None] = ContextVar("nexus_oauth_operation", default=None)


@contextmanager
def operation(provider: Provider, settings: Settings, where: dict[str, Any],
              config: dict[str, Any] | None = None) -> Iterator[None]:
    """Mark an OAuth operation (callback, refresh) in progress: helpers called inside, e.g. from
    the provider's hook, use its settings and installation ``config`` and name its
    tenant/installation in errors."""
    token = _current.set(_Operation(provider, settings, dict(where), config))
    try:
        yield
    finally:
        _current.reset(token)


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    current = _current.get()
    if current is not None:
        return current.settings
    from nexus_core.config import get_settings

    return get_settings()


def _config(provider: Provider) -> dict[str, Any] | None:
    """The installation config of the OAuth operation in progress for ``provider``."""
    current = _current.get()
    if current is not None and current.provider.id == provider.id:
        return current.config
    return None


def _where(provider: Provider, ctx: ConnectorContext | None = None) -> dict[str, Any]:
    if ctx is not None:
        return {"provider": ctx.provider, "tenant_id": ctx.tenant_id, "install_id": ctx.install_id}
    current = _current.get()
    if current is not None and current.provider.id == provider.id:
        return dict(current.where)
    return {"provider": provider.id}


def _provider_of(ctx: ConnectorContext) -> Provider:
    current = _current.get()
    if current is not None and current.provider.id == ctx.provider:
        return current.provider
    from nexus_core.plugins import load_plugins

    return load_plugins().provider(ctx.provider)


# -- dotted paths into a JSON answer --------------------------------------------------------


def lookup(data: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``"team.id"``; a number indexes a list: ``"0.code"``)
    in decoded JSON, or None when any step is missing or of another type."""
    value = data
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _text(value: Any) -> str | None:
    """A scalar as text (error codes, ids); None for missing, empty or structured values."""
    if value is None or isinstance(value, dict | list) or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- client settings and endpoints ----------------------------------------------------------


def oauth_config(provider: Provider) -> OAuthConfig:
    """``provider.oauth``; :class:`ConfigError` for a provider without OAuth."""
    if provider.oauth is None:
        raise ConfigError(
            f"provider {provider.id!r} does not use the OAuth2 authorization-code flow "
            f"(auth type {provider.auth_type})",
            provider=provider.id,
            hint="add credentials with `nexus installs add --credentials-file` instead",
        )
    return provider.oauth


def env_prefix(provider: Provider) -> str:
    """The prefix of a provider's conventional variables: ``my-crm`` → ``MY_CRM``
    (``MY_CRM_CLIENT_ID``, ``MY_CRM_TOKEN_URL``, ...)."""
    return provider.env_prefix


def client_credentials(provider: Provider, settings: Settings | None = None
                       ) -> tuple[str, str | None]:
    """(client id, client secret) from ``OAuthConfig.client_id_env``/``client_secret_env``,
    by default ``<ID>_CLIENT_ID``/``<ID>_CLIENT_SECRET``; :class:`ConfigError` without an id."""
    settings = _settings(settings)
    oauth = oauth_config(provider)
    env = oauth.client_id_env or f"{provider.env_prefix}_CLIENT_ID"
    client_id = settings.get(env)
    if not client_id:
        raise ConfigError(
            f"{env} is not set: the OAuth client id of provider {provider.id!r}",
            provider=provider.id,
            hint=f"create an app with {provider.name} and set {env} (and its client secret)",
        )
    secret_env = oauth.client_secret_env or f"{provider.env_prefix}_CLIENT_SECRET"
    return client_id, settings.get(secret_env)


#: An auth base URL as an installation config may give it: scheme and host (and port), nothing
#: else — no user info, path, query or fragment that could smuggle another host in.
_BASE_URL = re.compile(r"(https?)://([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
                       r"(:[0-9]{1,5})?/?", re.ASCII)


def _base_url_patterns(provider: Provider, settings: Settings) -> list[str]:
    oauth = oauth_config(provider)
    extra = settings.get(f"{provider.env_prefix}_AUTH_BASE_URLS") or ""
    return [p.strip().lower() for p in (*oauth.auth_base_urls, *extra.split(","))
            if p.strip()]


def auth_base_url_problems(provider: Provider, value: Any,
                           settings: Settings | None = None) -> list[str]:
    """What is wrong with an installation's auth base URL ``value`` (an empty list: nothing;
    None or "" is no value: the provider's own host); see
    ``OAuthConfig.auth_base_url_config``."""
    oauth = provider.oauth
    if oauth is None or not oauth.auth_base_url_config or value is None or value == "":
        return []
    key = oauth.auth_base_url_config
    match = _BASE_URL.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return [f"{key} must be a base URL such as https://host (scheme and host only), "
                f"got {str(value)[:80]!r}"]
    candidate = f"{match.group(1)}://{match.group(2).lower()}{match.group(3) or ''}"
    patterns = _base_url_patterns(provider, _settings(settings))
    if not any(fnmatch.fnmatchcase(candidate, p) for p in patterns):
        return [f"{key} {candidate} is not a {provider.name} login host; allowed: "
                f"{', '.join(patterns)} (more with {provider.env_prefix}_AUTH_BASE_URLS)"]
    return []


def auth_base_url(provider: Provider, config: dict[str, Any] | None,
                  settings: Settings | None = None) -> str | None:
    """The base URL of the installation's own authorization server, from its ``config``
    (``OAuthConfig.auth_base_url_config``); None when the provider has no such key or the
    config names none. :class:`ConfigError` for a value that is not an allowed base URL —
    nothing is sent there."""
    oauth = provider.oauth
    if oauth is None or not oauth.auth_base_url_config or not isinstance(config, dict):
        return None
    value = config.get(oauth.auth_base_url_config)
    if value is None or value == "":
        return None
    problems = auth_base_url_problems(provider, value, settings)
    if problems:
        raise ConfigError(problems[0], provider=provider.id,
                          hint="fix the installation's config (`nexus installs update`)")
    return str(value).rstrip("/")


def endpoint(provider: Provider, which: str, settings: Settings | None = None,
             config: dict[str, Any] | None = None) -> str:
    """The ``authorize`` or ``token`` URL, with overrides for simulators and sandboxes:

    1. the installation's own authorization server (``config``, see
       ``OAuthConfig.auth_base_url_config``): its scheme and host replace the declared URL's;
    2. ``<ID>_AUTHORIZE_URL`` / ``<ID>_TOKEN_URL`` (e.g. ``ACME_TOKEN_URL``);
    3. for ``authorize``, ``OAuthConfig.authorize_base_url_env``: its scheme and host (and
       path prefix) replace ``authorize_url``'s, the path is kept;
    4. ``Provider.base_url_env``: a URL under ``base_url`` (or on its host) is moved to the
       override, keeping the rest of the path;
    5. ``Provider.oauth``.
    """
    settings = _settings(settings)
    oauth = oauth_config(provider)
    url = oauth.authorize_url if which == "authorize" else oauth.token_url
    own = auth_base_url(provider, config, settings)
    if own:
        parts = urlsplit(url)
        return own + urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    explicit = settings.get(f"{provider.env_prefix}_{which.upper()}_URL")
    if explicit:
        return explicit
    host = settings.get(oauth.authorize_base_url_env) \
        if which == "authorize" and oauth.authorize_base_url_env else None
    if host:
        parts = urlsplit(url)
        return host.rstrip("/") + urlunsplit(("", "", parts.path, parts.query, parts.fragment))
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


def token_url(provider: Provider, settings: Settings | None = None,
              config: dict[str, Any] | None = None) -> str:
    """The token endpoint for an installation's ``config`` (None: that of the OAuth operation
    in progress), with the overrides of :func:`endpoint`."""
    return endpoint(provider, "token", settings, config if config is not None
                    else _config(provider))


# -- the exchanges ---------------------------------------------------------------------------


def exchange_code(
    ctx: ConnectorContext, code: str, redirect_uri: str, code_verifier: str | None = None
) -> Credentials:
    """The standard authorization-code exchange (RFC 6749 §4.1.3, with the PKCE verifier) for
    ``ctx.provider``: the credentials, the account id in ``extra["account_id"]``."""
    provider = _provider_of(ctx)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    data = _token_request(provider, form, _settings(None), _where(provider, ctx), ctx.config)
    return parse_token_response(provider, data)


def refresh_grant(ctx: ConnectorContext) -> Credentials:
    """The standard ``grant_type=refresh_token`` exchange with ``ctx.credentials``; a provider
    that does not rotate keeps the previous refresh token. Raises
    ``AuthError(needs_reauth=True)`` on one of ``OAuthConfig.reauth_errors``."""
    provider = _provider_of(ctx)
    where = _where(provider, ctx)
    previous = ctx.credentials
    if previous is None or not previous.refresh_token:
        raise AuthError("no refresh token is stored for this installation", needs_reauth=True,
                        **where)
    form = {"grant_type": "refresh_token", "refresh_token": previous.refresh_token}
    data = _token_request(provider, form, _settings(None), where, ctx.config)
    return parse_token_response(provider, data, previous=previous)


def token_request(
    provider: Provider, form: dict[str, str], settings: Settings | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST ``form`` to the provider's token endpoint with the client's credentials (in the
    body or as HTTP Basic, per ``OAuthConfig.client_auth``) and return the decoded answer.
    The endpoint is the installation's (``config``; by default that of the OAuth operation in
    progress: the callback or refresh that called the hook).

    Raises :class:`ProviderError` (retryable) when the endpoint is unreachable or answers
    5xx/429, ``AuthError(needs_reauth=True)`` when a refresh grant gets one of
    ``OAuthConfig.reauth_errors``, :class:`AuthError` for any other refusal (an error field, a
    4xx, ``ok_field`` false, no access token).
    """
    return _token_request(provider, form, _settings(settings), _where(provider), config)


def _token_request(
    provider: Provider, form: dict[str, str], settings: Settings, where: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import requests

    oauth = oauth_config(provider)
    purpose = {"authorization_code": "authorization", "refresh_token": "refresh"}.get(
        form.get("grant_type", ""), str(form.get("grant_type") or "token request"))
    client_id, client_secret = client_credentials(provider, settings)
    body = dict(form)
    basic = None
    if oauth.client_auth == "basic":
        basic = (client_id, client_secret or "")
    else:
        body["client_id"] = client_id
        if client_secret:
            body["client_secret"] = client_secret
    url = token_url(provider, settings, config)
    try:
        resp = requests.post(
            url, data=body, auth=basic, headers={"Accept": "application/json"},
            timeout=(provider.timeouts.connect, provider.timeouts.read),
        )
    except requests.RequestException as exc:
        raise ProviderError(
            f"{provider.name} token endpoint {url} is unreachable during {purpose}: "
            f"{type(exc).__name__}", retryable=True, **where,
        ) from None
    if resp.status_code >= 500 or resp.status_code == 429:
        raise ProviderError(
            f"{provider.name} token endpoint answered HTTP {resp.status_code} during {purpose}",
            retryable=True, status=resp.status_code, **where,
        )
    try:
        data: Any = resp.json()
    except ValueError:
        data = None
    code, description = token_error(oauth, resp.status_code, data)
    if code is None:
        return data
    text = redact(f"{code}: {description}" if description else code)
    reauth = {e.lower() for e in oauth.reauth_errors}
    if purpose == "refresh" and code.lower() in reauth:
        raise AuthError(
            f"{provider.name} rejected the refresh token ({text}); the tenant must reconnect",
            needs_reauth=True, hint="send the tenant a new link: `nexus auth url`", **where,
        )
    raise AuthError(f"{provider.name} token endpoint refused the {purpose}: {text}", **where)


def token_error(oauth: OAuthConfig, status: int, data: Any) -> tuple[str | None, str | None]:
    """(error code, description) of a token-endpoint answer, (None, None) for a success: a 2xx
    JSON object holding the access token (at ``access_token_field``) whose ``ok_field``, if
    declared, is not false."""
    code = _first(data, oauth.error_field)
    description = _first(data, oauth.error_description_field)
    not_ok = oauth.ok_field is not None and lookup(data, oauth.ok_field) is False
    if status < 400 and not not_ok and isinstance(data, dict):
        token = lookup(data, oauth.access_token_field)
        if isinstance(token, str) and token:
            return None, None
    if code is None:
        if data is None:
            code = "unreadable_response"
        elif not isinstance(data, dict):
            code = "unexpected_response"
        elif not_ok:
            code = f"{oauth.ok_field}_false"
        elif status < 400:
            code = "no_access_token"
        else:
            code = f"HTTP {status}"
    return code, description


def _first(data: Any, paths: tuple[str, ...]) -> str | None:
    """The first of ``paths`` that holds a scalar in ``data``, as text."""
    for path in paths:
        value = _text(lookup(data, path))
        if value is not None:
            return value
    return None


def parse_token_response(
    provider: Provider,
    data: dict[str, Any],
    previous: Credentials | None = None,
    *,
    now: datetime | None = None,
) -> Credentials:
    """Credentials from a (successful) token response, as ``Provider.oauth`` declares it:

    * the access token at ``access_token_field``; the refresh token, else ``previous``'s
      (a provider that does not rotate);
    * ``expires_at`` from ``expires_in``, else ``default_token_lifetime``;
    * scopes from ``scope`` (space- or comma-separated) or a ``scopes`` list, else
      ``previous``'s;
    * the account id at ``account_id_field`` (through ``account_id_pattern``) in
      ``extra["account_id"]``, and each of ``extra_fields``;
    * the Authorization scheme: ``token_type`` when declared, else the response's (``bearer``
      normalized to ``Bearer``).

    :class:`ProviderError` for an answer that cannot be read (no access token, a nonsense
    ``expires_in``); never another exception, whatever ``data`` holds.
    """
    oauth = oauth_config(provider)
    where = _where(provider)
    if not isinstance(data, dict):
        raise ProviderError(f"{provider.name} token response is not a JSON object", **where)
    now = now or utcnow()
    access = lookup(data, oauth.access_token_field)
    if not isinstance(access, str) or not access:
        raise ProviderError(f"{provider.name} token response holds no access_token "
                            f"(at {oauth.access_token_field!r})", **where)
    refresh = data.get("refresh_token")
    if refresh is not None and not isinstance(refresh, str):
        raise ProviderError(f"{provider.name} token response: refresh_token is not a string",
                            **where)
    lifetime = _lifetime(provider, data.get("expires_in"), oauth.default_token_lifetime, where)
    raw_scopes = data.get("scope", data.get("scopes"))
    if isinstance(raw_scopes, str):
        scopes: tuple[str, ...] = tuple(s for s in re.split(r"[\s,]+", raw_scopes) if s)
    elif isinstance(raw_scopes, list):
        scopes = tuple(str(s) for s in raw_scopes if isinstance(s, str | int))
    else:
        scopes = previous.scopes if previous else ()
    extra: dict[str, Any] = dict(previous.extra) if previous else {}
    if oauth.account_id_field:
        account = _text(lookup(data, oauth.account_id_field))
        if account is not None and oauth.account_id_pattern:
            match = re.search(oauth.account_id_pattern, account)
            account = match.group(1) if match and match.group(1) else None
        if account is not None:
            extra["account_id"] = account
    for key, path in oauth.extra_fields.items():
        value = lookup(data, path)
        if value is not None:
            extra[key] = value
    token_type = oauth.token_type or _text(data.get("token_type")) or "Bearer"
    if token_type.lower() == "bearer":
        token_type = "Bearer"  # noqa: S105 - a scheme name, not a secret
    return Credentials(
        access_token=access,
        refresh_token=refresh or (previous.refresh_token if previous else None),
        token_type=token_type,
        expires_at=now + timedelta(seconds=lifetime) if lifetime is not None else None,
        scopes=scopes,
        extra=extra,
    )


def _lifetime(provider: Provider, raw: Any, default: float | None,
              where: dict[str, Any]) -> float | None:
    if raw is None or raw == "":
        return default
    # JSON numbers may be any size (float() of a 400-digit int overflows): compare first.
    numeric = isinstance(raw, int | float) and not isinstance(raw, bool)
    text = isinstance(raw, str) and re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,6})?", raw.strip())
    value = float(raw) if (numeric and 0 <= raw <= _MAX_LIFETIME) or text else None
    if value is None or not math.isfinite(value) or not 0 <= value <= _MAX_LIFETIME:
        raise ProviderError(
            f"{provider.name} token response: unreadable expires_in {str(raw)[:40]!r}", **where)
    return value
