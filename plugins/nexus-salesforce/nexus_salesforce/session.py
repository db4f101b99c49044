"""Salesforce's OAuth answers: the web-server flow's token response (providers.md 2,
addendum 3.2) checked and turned into credentials.

* ``signature`` = base64(HMAC-SHA256(key=client secret, message=``id`` + ``issued_at``)):
  verified on every code exchange and refresh, compared in constant time — an answer that
  fails it is refused;
* no ``expires_in``: the session lasts the org's session timeout (``session_timeout`` in the
  installation config, default 2 hours, counted from ``issued_at``), refreshed ahead of it;
* ``instance_url`` is where every API request of the installation goes: it must be a
  Salesforce host (or one the operator allows with ``SALESFORCE_AUTH_BASE_URLS``), since the
  access token is sent there;
* the org id (from the ``id`` URL ``https://login.salesforce.com/id/<org>/<user>``) is the
  installation's account id; a refresh that names another org is refused;
* a refresh answer carries no refresh token unless the connected app rotates them: the stored
  one is kept, or replaced by the new one.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from nexus_core import AuthError, ConnectorContext, Credentials, Provider, auth

DEFAULT_SESSION = 7200
MIN_SESSION, MAX_SESSION = 900, 86400
#: Hosts an instance URL may be on (the access token goes there).
INSTANCE_HOSTS = ("https://*.salesforce.com", "https://*.force.com", "https://*.salesforce.mil",
                  "https://*.cloudforce.com", "https://*.sfcrmproducts.cn")
_URL = re.compile(r"(https?)://([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
                  r"(:[0-9]{1,5})?/?", re.ASCII)


def session_lifetime(config: dict[str, Any]) -> int:
    value = config.get("session_timeout", DEFAULT_SESSION)
    if isinstance(value, bool) or not isinstance(value, int) or \
            not MIN_SESSION <= value <= MAX_SESSION:
        return DEFAULT_SESSION
    return value


def signature(secret: str, identity: str, issued_at: str) -> str:
    digest = hmac.new(secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_signature(data: dict[str, Any], secret: str | None, where: dict[str, Any]) -> None:
    """Raise :class:`AuthError` unless the answer's ``signature`` is the HMAC of its ``id``
    and ``issued_at`` under the client secret."""
    identity, issued, sent = data.get("id"), data.get("issued_at"), data.get("signature")
    if not secret:
        raise AuthError("SALESFORCE_CLIENT_SECRET is not set: the token response's signature "
                        "cannot be verified", hint="set the connected app's consumer secret",
                        **where)
    if not all(isinstance(v, str) and v for v in (identity, issued, sent)):
        raise AuthError("Salesforce's token response is not signed (no id, issued_at or "
                        "signature); refused", **where)
    expected = signature(secret, identity, issued)
    if not hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace")):
        raise AuthError("Salesforce's token response signature does not match (HMAC-SHA256 "
                        "of id + issued_at with the client secret); refused",
                        hint="check SALESFORCE_CLIENT_SECRET; a mismatch may also mean the "
                        "answer was tampered with", **where)


def allowed_instance(url: Any, extra_patterns: str | None = None) -> bool:
    """Whether ``url`` is a base URL on a Salesforce host (``https://acme.my.salesforce.com``)
    or one the operator allows (``SALESFORCE_AUTH_BASE_URLS``)."""
    match = _URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        return False
    candidate = f"{match.group(1)}://{match.group(2).lower()}{match.group(3) or ''}"
    patterns = [*INSTANCE_HOSTS, *(p.strip().lower() for p in (extra_patterns or "").split(",")
                                   if p.strip())]
    return any(fnmatch.fnmatchcase(candidate, p) for p in patterns)


def issued(data: dict[str, Any], now: datetime) -> datetime:
    """When the session began: ``issued_at`` (epoch ms, as text) when it is within a day of
    this machine's clock and not after it, else now."""
    raw = data.get("issued_at")
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if text.isascii() and text.isdigit() and len(text) <= 15:
        at = datetime.fromtimestamp(int(text) / 1000, UTC)
        if now - timedelta(days=1) <= at <= now:
            return at
    return now


def credentials(provider: Provider, ctx: ConnectorContext, data: dict[str, Any],
                previous: Credentials | None) -> Credentials:
    """Checked credentials from a token answer (see the module docstring)."""
    from nexus_core.config import provider_setting

    where = {"provider": ctx.provider, "tenant_id": ctx.tenant_id,
             "install_id": ctx.install_id}
    _, secret = auth.client_credentials(provider)
    verify_signature(data, secret, where)
    creds = auth.parse_token_response(provider, data, previous=previous)
    instance = creds.extra.get("instance_url")
    if not allowed_instance(instance, provider_setting("SALESFORCE_AUTH_BASE_URLS")):
        raise AuthError(f"Salesforce's token response names instance_url {str(instance)[:80]!r}, "
                        "not a Salesforce host; refused (the access token would go there)",
                        hint="allow it with SALESFORCE_AUTH_BASE_URLS if it is yours", **where)
    org = creds.extra.get("account_id")
    if not org:
        raise AuthError("Salesforce's token response has no org id in its id URL", **where)
    known = ctx.account_id or (previous.extra.get("account_id") if previous else None)
    if previous is not None and known and org != known:
        raise AuthError(f"a refresh answered for org {org}, not this installation's {known}",
                        **where)
    now = datetime.now(UTC)
    expires = issued(data, now) + timedelta(seconds=session_lifetime(ctx.config))
    extra = {**creds.extra, "instance_url": str(instance).rstrip("/")}
    return attrs.evolve(creds, expires_at=expires, extra=extra)


def exchange(provider: Provider, ctx: ConnectorContext, code: str, redirect_uri: str,
             code_verifier: str | None) -> Credentials:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        form["code_verifier"] = code_verifier
    return credentials(provider, ctx, auth.token_request(provider, form), None)


def refresh(provider: Provider, ctx: ConnectorContext) -> Credentials:
    previous = ctx.credentials
    if previous is None or not previous.refresh_token:
        raise AuthError("no refresh token is stored for this installation", needs_reauth=True,
                        provider=ctx.provider, tenant_id=ctx.tenant_id,
                        install_id=ctx.install_id)
    form = {"grant_type": "refresh_token", "refresh_token": previous.refresh_token}
    return credentials(provider, ctx, auth.token_request(provider, form), previous)
