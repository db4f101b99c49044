"""The hook specifications: the contract between the core and every plugin.

Each docstring here is the reference documentation for its hook (``docs/hooks.md`` is generated
from this module). Two kinds of hooks exist:

* **Operation hooks** (``authorize``, ``refresh``, ``backfill``, ``delta``, ``handle_webhook``,
  ``verify_webhook``, ``parse_webhook_body``, ``health_check``, ``is_token_expired``,
  ``should_retry``, ``parse_rate_limit``, ``rate_limit_wait``, ``validate_config``) are
  ``firstresult`` and are dispatched *only* to the plugin that provides the context's provider.
  Cross-cutting plugins may wrap them with ``@hookimpl(wrapper=True)`` (metrics, audit) — wrappers
  are called for every provider.
* **Sink hooks** (``process_records``, ``process_events``) are called on every plugin that
  implements them: that is where records and events leave the SDK.

Hook implementations must not give their arguments default values (pluggy never passes them),
and may accept any subset of the arguments, by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from nexus_core.models import (
        ConnectorContext,
        Credentials,
        Health,
        Provider,
        RateLimitWait,
        Record,
        SyncPage,
        WebhookEvent,
        WebhookRequest,
        WebhookResult,
    )

PROJECT = "nexus"

#: Bump the major number when a hook changes incompatibly. A plugin declares the version it was
#: built for as ``nexus_api_version`` (module attribute or class attribute); a plugin declaring a
#: different major version is skipped with the reason.
CORE_API_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Hooks dispatched only to the plugin that provides ``ctx.provider``.
OPERATION_HOOKS: tuple[str, ...] = (
    "authorize",
    "refresh",
    "backfill",
    "delta",
    "handle_webhook",
    "verify_webhook",
    "parse_webhook_body",
    "health_check",
    "is_token_expired",
    "should_retry",
    "parse_rate_limit",
    "rate_limit_wait",
    "validate_config",
)
#: Hooks every provider plugin must implement; a provider plugin lacking one is skipped.
REQUIRED_PROVIDER_HOOKS: tuple[str, ...] = ("nexus_provider", "backfill")


@hookspec
def nexus_provider() -> Provider:
    """Describe the provider this plugin connects to.

    Called once per plugin when plugins load. Return a :class:`~nexus_core.models.Provider`
    (id, name, version, auth type, base URL, rate limits, timeouts, retry config, scopes,
    webhook scheme, streams). A plugin that implements this hook is a *provider plugin*; its id
    must be unique among loaded plugins (a second plugin claiming a taken id is skipped).

    Not ``firstresult``: the core calls each plugin's implementation separately.
    """
    raise NotImplementedError  # a specification: pluggy never calls this body


@hookspec(firstresult=True)
def authorize(
    ctx: ConnectorContext, code: str, redirect_uri: str, code_verifier: str | None
) -> Credentials | None:
    """Exchange an OAuth2 authorization code for credentials.

    Called by the OAuth callback (web app or ``IntegrationService``) after the ``state`` was
    verified. ``ctx`` carries the tenant, installation and provider; ``ctx.credentials`` is None;
    ``ctx.http`` is a session with the provider that sends no credentials (closed after the
    hook). ``code_verifier`` is the PKCE verifier when the provider uses PKCE, else None.

    Return the new :class:`~nexus_core.models.Credentials` (the account id, when the token
    response names it, goes in ``Credentials.extra["account_id"]``), or None to let the core run
    the standard exchange against ``Provider.oauth.token_url``. A hook that only adds a step
    calls the standard exchange itself: ``nexus_core.auth.exchange_code(ctx, code,
    redirect_uri, code_verifier)``, or ``auth.token_request`` + ``auth.parse_token_response``.
    Raise ``AuthError`` when the provider refuses the code.

    ``firstresult``: only the provider's own plugin is called; the first non-None result wins.
    """


@hookspec(firstresult=True)
def refresh(ctx: ConnectorContext) -> Credentials | None:
    """Obtain fresh credentials with ``ctx.credentials.refresh_token``.

    Called by the core under a per-installation lock shared by every worker process, ahead of
    expiry or after the provider answered with an expired-token error. Return the new
    credentials — including the rotated refresh token if the provider rotates them — and the
    core commits them before releasing the lock. Return None to use the standard
    ``grant_type=refresh_token`` exchange (``nexus_core.auth.refresh_grant(ctx)`` runs it from
    the hook). ``ctx.http`` sends no credentials and is closed after the hook. Raise
    ``AuthError(needs_reauth=True)`` on an ``invalid_grant``-style answer: the installation is
    marked ``needs_reauth``.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def backfill(ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage | None:
    """Read one page of a stream's full history.

    Called by the backfill job once per page: first with ``cursor=None``, then with the
    ``next_cursor`` of the previous page, until a page says ``done``. The page's records go to
    the sink hooks and only then is ``next_cursor`` committed, so a crashed worker resumes at the
    last committed page. ``stream`` is the name of one of ``Provider.streams``
    (``Provider.stream(stream)`` has its primary key and cursor field). Use ``ctx.http`` for
    requests (rate limiting, retries and auth are applied there).

    Return a :class:`~nexus_core.models.SyncPage`. On the last page, ``next_cursor`` may carry
    the cursor the first ``delta`` should start from.

    ``firstresult``: only the provider's own plugin is called. Required for provider plugins.
    """


@hookspec(firstresult=True)
def delta(ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage | None:
    """Read one page of changes since ``cursor``.

    Called by the delta job (periodically or on demand) starting from the stored delta cursor,
    page by page until ``done``. The cursor is committed only after the page's records reached
    the sinks. Return a :class:`~nexus_core.models.SyncPage`; the last page's ``next_cursor`` is
    where the next delta starts.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def handle_webhook(
    ctx: ConnectorContext, request: WebhookRequest
) -> list[WebhookEvent] | WebhookResult | None:
    """Turn a verified webhook delivery into normalized events.

    Called by the webhook job, after the ingress verified the signature and routed the delivery
    to this installation. ``request`` holds the raw body and headers. Return the list of
    :class:`~nexus_core.models.WebhookEvent` for this installation (a batch may hold events of
    several accounts; return only those of ``ctx.account_id``). They go to ``process_events``.

    A provider whose events only name what changed may read the changed objects with
    ``ctx.http`` and return a :class:`~nexus_core.models.WebhookResult` (events and records):
    the records go to ``process_records`` (one call per stream, deletions as
    ``Record(deleted=True)``) before the events go to ``process_events``. A rate limit or an
    open breaker during that fetch defers the job like a sync's.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def verify_webhook(
    provider: Provider, request: WebhookRequest, secrets: list[str]
) -> bool | None:
    """Verify a webhook signature for a provider with a custom scheme.

    Called by the ingress before anything else, only for providers whose
    ``Provider.webhook.scheme`` is ``"custom"``. ``secrets`` are the configured secrets (several
    during rotation). Return True to accept, False to reject (401). Use
    ``hmac.compare_digest`` — never ``==`` — to compare signatures.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def parse_webhook_body(provider: Provider, request: WebhookRequest
                       ) -> list[dict[str, Any]] | None:
    """Read a delivery whose body is not JSON into the events the ingress routes and dedupes.

    Called by the ingress after the body cap and ``verify_webhook``, only for providers whose
    ``WebhookConfig.body_format`` is ``"custom"`` (SOAP/XML, form-encoded bodies). Return one
    dict per event holding at least what ``WebhookConfig.account_id_field`` and
    ``delivery_id_field`` name (dotted paths), as a JSON body's events would: the ingress routes
    by the first and dedupes by the second. The raw body is what the webhook job later hands to
    ``handle_webhook``.

    The body is untrusted: raise :class:`~nexus_core.errors.WebhookRejected` with a 4xx status
    for one that cannot be read, and parse XML without entity expansion or DTDs
    (``defusedxml``). Any other exception is answered 400 and logged as the plugin's bug.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def health_check(ctx: ConnectorContext) -> Health | None:
    """Check that an installation can reach its provider with valid credentials.

    Called by the health job and ``IntegrationService.health_check_immediate``. Make one cheap
    authenticated request. Return a :class:`~nexus_core.models.Health`; the core fills
    ``rate_limit_status`` from the shared limiter when the plugin leaves it None.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def is_token_expired(
    provider: Provider, status: int, headers: dict[str, str], body: bytes
) -> bool | None:
    """Tell whether a provider's answer means "the access token expired".

    Called by the HTTP client on every error answer, and on the 2xx answers that
    ``Provider.body_errors`` marks as errors (``{"ok": false, ...}``). Return True to
    refresh the token and retry the request once, False or None otherwise (the core treats a
    bare 401 as expired only when the provider leaves this hook unimplemented).

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def should_retry(
    provider: Provider, status: int, headers: dict[str, str], body: bytes
) -> bool | None:
    """Tell whether a provider's answer is a transient failure that its status does not show
    (an error inside an HTTP 200, such as ``{"ok": false, "error": "internal_error"}``).

    Called by the HTTP client on every answer that is not a 429, not an expired token and not
    one of ``RetryConfig.retry_statuses`` (those are retried anyway); ``body`` is empty for a
    streamed request. Return True to retry it like a 5xx: with backoff, up to
    ``RetryConfig.max_retries`` times, for idempotent requests (or any with an idempotency
    key); once retries are spent the request raises a retryable ``ProviderError`` and counts
    as a circuit-breaker failure. False or None: the answer goes back to the connector.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def parse_rate_limit(provider: Provider, headers: dict[str, str]) -> dict[str, Any] | None:
    """Read the provider's rate-limit headers (``X-HubSpot-RateLimit-Remaining``,
    ``Sforce-Limit-Info``, ...) into a dict such as ``{"remaining": 90, "max": 110}``.

    Called by the HTTP client after each response; the latest value is kept per provider account
    and shown as ``rate_limit_status`` in health checks. Return None when the headers are absent.
    Keys the core reads: ``interval_seconds`` (the window a 429 without ``Retry-After`` waits
    for), and ``quota_used`` with ``quota_max`` — the use of a long-window quota: with
    ``Provider.quota`` declared, reaching its reserve pauses the account
    (:class:`~nexus_core.models.Quota`).

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def rate_limit_wait(
    provider: Provider, status: int, headers: dict[str, str], body: bytes
) -> float | RateLimitWait | None:
    """Tell whether an error answer means "too many requests", and how long to wait.

    Called by the HTTP client on every answer with a status >= 400 (``body`` is empty for a
    streamed request). Return the seconds to wait, or a
    :class:`~nexus_core.models.RateLimitWait` to say more: ``scope="account"`` for a limit
    that covers every rate-limit bucket of the provider account (a daily quota), a
    ``reason`` for logs. Return None for an answer that is not a rate limit: a 429 then waits
    for its ``Retry-After`` (else the parsed rate-limit headers' ``interval_seconds``, else the
    budget's refill time), any other status goes back to the connector.

    The wait becomes a shared cool-down in Redis, so no process of any worker sends for that
    account (or bucket) meanwhile. A wait within NEXUS_RATE_LIMIT_MAX_WAIT is slept and the
    request sent again; a longer one — a daily quota that resets at midnight — raises
    ``RateLimited(retry_after=...)`` and the job is deferred until then without consuming a
    retry, instead of retrying into the limit. This is how a provider whose limit answer is
    not a 429 (a ``403 REQUEST_LIMIT_EXCEEDED``) is handled too.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec(firstresult=True)
def validate_config(provider: Provider, config: dict[str, Any]) -> list[str] | None:
    """Check the keys of an installation config that the provider plugin itself reads.

    Called by ``IntegrationService.validate_connector_config`` — so before an installation is
    added, updated or bound to a connect link — after the core checked its own keys
    (``streams``, ``rate_limits``, ``timeouts``, ``quota`` and the key named by
    ``OAuthConfig.auth_base_url_config``). Return a list of problems, each a sentence
    naming the key and what it accepts (empty or None: the config is fine); the config is then
    refused with them. Must not make network calls.

    ``firstresult``: only the provider's own plugin is called.
    """


@hookspec
def process_records(ctx: ConnectorContext, stream: str, records: list[Record]) -> None:
    """Receive a page of records read by a backfill or delta.

    Called once per page on *every* plugin implementing it (built-in sinks are selected by
    ``NEXUS_SINK``). Raise to fail the page: the cursor does not advance and the job is retried,
    so a sink must tolerate seeing a page again (upsert by ``Record.id``).
    """


@hookspec
def process_events(ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
    """Receive the normalized events of one webhook delivery for one installation.

    Called on *every* plugin implementing it, after ``handle_webhook``. Raise to fail the job
    (it is retried). Events carry a stable ``id``: deduplicate on it.
    """
