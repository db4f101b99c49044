"""The data model: frozen attrs classes shared by the core, plugins, jobs and the store.

Every model round-trips through JSON with the one converter in :mod:`nexus_core.converters`.
Secrets (tokens, API keys) are excluded from ``repr`` so that a model printed in a log line or a
traceback never shows them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import attrs

AuthType = Literal["oauth2", "api_key", "basic", "none"]
InstallStatus = Literal["active", "pending_authorization", "needs_reauth", "disabled"]
Operation = Literal["backfill", "delta", "webhook", "auth", "refresh", "health"]
WebhookScheme = Literal[
    "hubspot-v1", "hubspot-v2", "hubspot-v3", "slack-v0", "standard-webhooks", "stripe", "custom"
]

INSTALL_STATUSES: tuple[str, ...] = ("active", "pending_authorization", "needs_reauth",
                                     "disabled")
AUTH_TYPES: tuple[str, ...] = ("oauth2", "api_key", "basic", "none")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


@attrs.frozen
class RateLimits:
    """The provider's request budget, shared by every worker (per provider account)."""

    requests_per_second: float = attrs.field(default=5.0, converter=float)
    burst_size: int = 10


@attrs.frozen
class Timeouts:
    """Seconds; both are always set on every request."""

    connect: float = attrs.field(default=10.0, converter=float)
    read: float = attrs.field(default=30.0, converter=float)


@attrs.frozen
class RetryConfig:
    max_retries: int = 3
    backoff_multiplier: float = attrs.field(default=2.0, converter=float)
    max_backoff: float = attrs.field(default=60.0, converter=float)


@attrs.frozen
class OAuthConfig:
    """Where and how the OAuth2 authorization-code flow runs for a provider."""

    authorize_url: str
    token_url: str
    pkce: bool = False
    scope_separator: str = " "
    #: Lifetime assumed when the token response carries no ``expires_in`` (Salesforce).
    default_token_lifetime: float | None = None
    #: ``"form"``: client id/secret in the body; ``"basic"``: HTTP Basic auth (Slack).
    client_auth: Literal["form", "basic"] = "form"
    client_id_env: str | None = None
    client_secret_env: str | None = None
    redirect_uri_env: str | None = None


@attrs.frozen
class WebhookConfig:
    """How a provider signs its webhooks and how a delivery finds its installation."""

    scheme: WebhookScheme
    #: Environment variables holding the secret(s), first match wins; comma-separated values
    #: are several secrets (rotation).
    secret_envs: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: JSON field of an event that names the provider account (HubSpot ``portalId``).
    account_id_field: str | None = None
    #: Header or field that uniquely identifies a delivery, for replay protection.
    delivery_id_field: str | None = None
    #: Seconds a delivery id is remembered (covers the provider's retry window).
    dedupe_ttl: float = attrs.field(default=3 * 24 * 3600, converter=float)


@attrs.frozen
class Provider:
    """A provider's metadata, returned by the ``nexus_provider`` hook.

    The seed's PROVIDER_CONFIGS entries become these.
    """

    id: str
    name: str
    version: str
    auth_type: AuthType = "oauth2"
    base_url: str = ""
    rate_limits: RateLimits = attrs.Factory(RateLimits)
    timeouts: Timeouts = attrs.Factory(Timeouts)
    retry: RetryConfig = attrs.Factory(RetryConfig)
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    streams: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    webhook: WebhookConfig | None = None
    oauth: OAuthConfig | None = None
    description: str = ""
    #: Environment variable that overrides ``base_url`` (simulators, sandboxes).
    base_url_env: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"provider id must be a non-empty slug, got {self.id!r}")
        if self.auth_type not in AUTH_TYPES:
            raise ValueError(
                f"provider {self.id!r}: auth_type must be one of {', '.join(AUTH_TYPES)}, "
                f"got {self.auth_type!r}"
            )

    @property
    def supports_webhooks(self) -> bool:
        return self.webhook is not None


@attrs.frozen
class Credentials:
    """What authenticates an installation with its provider. Encrypted at rest by the store."""

    access_token: str | None = attrs.field(default=None, repr=False)
    refresh_token: str | None = attrs.field(default=None, repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    api_key: str | None = attrs.field(default=None, repr=False)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    #: Provider-specific non-secret extras (Salesforce ``instance_url``, Slack ``bot_user_id``).
    extra: dict[str, Any] = attrs.Factory(dict)

    def expires_within(self, seconds: float, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        now = now or utcnow()
        return (self.expires_at - now).total_seconds() <= seconds


@attrs.frozen
class Installation:
    """One tenant's connection to one provider account.

    ``status``: ``active`` (syncs run), ``pending_authorization`` (an OAuth2 installation whose
    tenant has not completed the consent flow yet), ``needs_reauth`` (the provider revoked or
    refused the grant: the tenant must reconnect), ``disabled`` (by an operator).
    ``webhook_key`` routes the per-installation webhook URL ``/webhooks/<provider>/<key>``."""

    tenant_id: str
    install_id: str
    provider: str
    account_id: str | None = None
    status: InstallStatus = "active"
    config: dict[str, Any] = attrs.Factory(dict)
    created_at: datetime = attrs.Factory(utcnow)
    updated_at: datetime = attrs.Factory(utcnow)
    webhook_key: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ConnectorContext:
    """Everything a hook needs to work for one installation.

    ``http`` (the installation's resilient session) and ``log`` (a logger bound to the
    tenant/install/provider) are attached by the core at run time and never serialized.
    """

    tenant_id: str
    install_id: str
    provider: str
    credentials: Credentials | None = attrs.field(default=None, repr=False)
    config: dict[str, Any] = attrs.Factory(dict)
    metadata: dict[str, Any] = attrs.Factory(dict)
    account_id: str | None = None
    http: Any = attrs.field(default=None, repr=False, eq=False)
    log: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class Record:
    """One object read from a provider stream."""

    id: str
    stream: str
    data: dict[str, Any] = attrs.Factory(dict)
    updated_at: datetime | None = None
    deleted: bool = False


@attrs.frozen
class SyncPage:
    """What one ``backfill``/``delta`` call returns: a page of records and where to go next.

    ``done`` ends the run. For a delta, ``next_cursor`` on the last page is the cursor the next
    delta starts from; for a backfill, it becomes the first delta cursor.
    """

    records: list[Record] = attrs.Factory(list)
    next_cursor: str | None = None
    done: bool = False


@attrs.frozen
class WebhookRequest:
    """A webhook delivery exactly as it arrived: the raw body is what signatures are over."""

    method: str
    url: str
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b""
    received_at: datetime = attrs.Factory(utcnow)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return None


@attrs.frozen
class WebhookEvent:
    """A normalized provider event handed to the ``process_events`` sink."""

    id: str
    type: str
    provider: str
    object_id: str | None = None
    account_id: str | None = None
    occurred_at: datetime | None = None
    payload: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class Health:
    """The seed's health-check answer."""

    healthy: bool
    auth_valid: bool = False
    api_accessible: bool = False
    rate_limit_status: str | None = None
    error_count: int = 0
    checked_at: datetime = attrs.Factory(utcnow)
    details: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class IntegrationMetrics:
    """One operation's outcome (the seed's IntegrationMetrics)."""

    connector_id: str
    tenant_id: str
    operation: Operation
    duration: float = attrs.field(converter=float)
    success: bool
    timestamp: datetime = attrs.Factory(utcnow)
    records_processed: int | None = None
    error_code: str | None = None
    retry_count: int | None = None
