"""The Salesforce connector: any sObject through SOQL over OAuth 2.0 (web-server flow with
PKCE), deltas on SystemModstamp, deletions from the recycle bin, Outbound Messages, the daily
API quota — in the class style (``BaseConnector``: every method named after a hook is that
hook).

Salesforce is not shaped like HubSpot, and each difference is declared on the
:class:`~nexus_core.Provider` below rather than worked around:

* no fixed API host: each installation's requests go to its own ``instance_url`` (kept in
  ``Credentials.extra`` from the token response), and its login host may be its own
  (``login_url``: a sandbox's ``https://test.salesforce.com`` or the org's My Domain —
  ``OAuthConfig.auth_base_url_config``);
* no ``expires_in``: the session lasts the org's timeout (``session_timeout``, default 2 h) and
  is refreshed ahead of it; a session that ends earlier without notice is a
  ``401 INVALID_SESSION_ID``, refreshed and retried; a revoked grant is ``invalid_grant``;
* no 429 for the daily quota but ``403 REQUEST_LIMIT_EXCEEDED``, which pauses the org; every
  answer reports the quota's use (``Sforce-Limit-Info``), and a share of it is kept free for
  the org's other integrations (``Provider.quota``, per installation ``quota.reserve``);
* no HMAC-signed webhooks: Outbound Messages are SOAP, unsigned, checked against the
  installation's org and answered with one exact SOAP ack.
"""

from __future__ import annotations

from typing import Any

from nexus_core import (
    BaseConnector,
    ConnectorContext,
    Credentials,
    EnvVar,
    Health,
    OAuthConfig,
    Provider,
    Quota,
    RateLimits,
    RateLimitWait,
    Stream,
    StreamPattern,
    SyncPage,
    WebhookConfig,
    WebhookEvent,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)
from nexus_salesforce import events, limits, outbound, session, soql, sync

__version__ = "0.1.0"
LOGIN = "https://login.salesforce.com"
#: Login hosts an installation's ``login_url`` may name (more: SALESFORCE_AUTH_BASE_URLS).
LOGIN_HOSTS = ("https://login.salesforce.com", "https://test.salesforce.com",
               "https://*.my.salesforce.com", "https://login.salesforce.mil",
               "https://*.my.salesforce.mil")


def _stream(name: str, description: str) -> Stream:
    return Stream(name, primary_key="Id", cursor_field="SystemModstamp",
                  description=description)


PROVIDER = Provider(
    id="salesforce",
    name="Salesforce",
    version=__version__,
    auth_type="oauth2",
    description="Salesforce: Account, Contact, Opportunity and any other sObject through SOQL; "
    "deltas on SystemModstamp, deletions from the recycle bin, Outbound Messages, the daily "
    "API quota with a share kept free.",
    # Only the OAuth endpoints live here: API requests go to each installation's instance_url.
    base_url=LOGIN,
    base_url_env="SALESFORCE_BASE_URL",
    # Salesforce limits a day's requests (the quota below) and concurrent long requests, not
    # a rate; this keeps one installation from flooding its org.
    rate_limits=RateLimits(requests_per_second=20, burst_size=20),
    quota=Quota(reserve=0.2, pause=3600),
    scopes=("api", "refresh_token"),
    streams=(
        _stream("Account", "Accounts; changes by SystemModstamp"),
        _stream("Contact", "Contacts; changes by SystemModstamp"),
        _stream("Opportunity", "Opportunities; changes by SystemModstamp"),
    ),
    # Any other sObject an installation names: Lead, Case, Invoice__c, ns__Thing__c, ...
    stream_pattern=StreamPattern(soql.NAME.pattern, primary_key="Id",
                                 cursor_field="SystemModstamp",
                                 description="another sObject; changes by SystemModstamp"),
    oauth=OAuthConfig(
        authorize_url=f"{LOGIN}/services/oauth2/authorize",
        token_url=f"{LOGIN}/services/oauth2/token",
        pkce=True,
        client_id_env="SALESFORCE_CLIENT_ID",
        client_secret_env="SALESFORCE_CLIENT_SECRET",  # noqa: S106 - a variable name
        redirect_uri_env="SALESFORCE_REDIRECT_URI",
        # No expires_in: the org's session timeout (the hooks apply the installation's own).
        default_token_lifetime=session.DEFAULT_SESSION,
        # "id": "https://login.salesforce.com/id/<org id>/<user id>"
        account_id_field="id",
        account_id_pattern=r"/id/([^/]+)/",
        extra_fields={"instance_url": "instance_url", "identity_url": "id"},
        reauth_errors=("invalid_grant",),
        token_type="Bearer",  # noqa: S106 - a scheme name
        auth_base_url_config="login_url",
        auth_base_urls=LOGIN_HOSTS,
    ),
    webhook=WebhookConfig(
        scheme="custom",  # nothing is signed: see verify_webhook
        body_format="custom",  # SOAP XML, read by parse_webhook_body
        account_id_field="OrganizationId",
        delivery_id_field="Id",  # the notification ids: what a redelivery keeps
        dedupe_ttl=2 * 24 * 3600,  # Salesforce redelivers for 24 hours
        accept_body=outbound.ACK,
        accept_content_type=outbound.ACK_CONTENT_TYPE,
        account_check=True,
    ),
    env=(
        EnvVar("SALESFORCE_CLIENT_SECRET", "the connected app's consumer secret: it also "
               "verifies every token response's signature", secret=True, required=True),
        EnvVar("SALESFORCE_AUTH_BASE_URLS",
               "more login hosts (an installation's login_url) and instance URLs to accept, "
               "comma-separated fnmatch patterns of scheme://host[:port] (a private cloud; "
               "the simulator: http://127.0.0.1:*)"),
        EnvVar("SALESFORCE_WEBHOOK_VERIFIED_HEADER",
               "`Name: value` a proxy in front of `nexus serve` sets on Outbound Messages it "
               "has verified (mutual TLS with Salesforce's client certificate, or its IP "
               "ranges); deliveries without it are refused"),
    ),
)

#: Installation config keys this connector reads (besides the core's streams, rate_limits,
#: timeouts, quota and login_url).
CONFIG_KEYS = ("fields", "batch_size", "api_version", "session_timeout", "deletions",
               "fetch_records_on_webhook")


class SalesforceConnector(BaseConnector):
    provider = PROVIDER

    # -- OAuth --------------------------------------------------------------------------------

    def authorize(self, ctx: ConnectorContext, code: str, redirect_uri: str,
                  code_verifier: str | None) -> Credentials:
        """The standard code exchange (at the installation's login host), then the
        signature check, the instance URL check and the session lifetime."""
        return session.exchange(PROVIDER, ctx, code, redirect_uri, code_verifier)

    def refresh(self, ctx: ConnectorContext) -> Credentials:
        return session.refresh(PROVIDER, ctx)

    # -- sync ---------------------------------------------------------------------------------

    def backfill(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """Every record of the sObject by Id (:mod:`nexus_salesforce.sync`)."""
        return sync.backfill_page(ctx, stream, cursor)

    def delta(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """The window's deletions, then its changes by SystemModstamp."""
        return sync.delta_page(ctx, stream, cursor)

    # -- webhooks: Outbound Messages -------------------------------------------------------------

    def verify_webhook(self, provider: Provider, request: WebhookRequest, secrets: list[str]
                       ) -> bool:
        return events.verify(request)

    def parse_webhook_body(self, provider: Provider, request: WebhookRequest
                           ) -> list[dict[str, Any]]:
        try:
            return outbound.routing(outbound.parse(request.body))
        except outbound.BadMessage as exc:
            raise WebhookRejected(f"not an Outbound Message: {exc}", status=400) from None

    def handle_webhook(self, ctx: ConnectorContext, request: WebhookRequest
                       ) -> list[WebhookEvent] | WebhookResult:
        return events.handle(ctx, request, PROVIDER.stream_names)

    # -- health -------------------------------------------------------------------------------

    def health_check(self, ctx: ConnectorContext) -> Health:
        """``GET /limits``: the session works, the instance answers, and the org's daily API
        requests left (the core adds the last ``Sforce-Limit-Info`` as the rate-limit
        status)."""
        body = sync.answer(ctx, ctx.http.get(sync.data_path(ctx.config, "limits")), "limits")
        details: dict[str, Any] = {"org_id": ctx.account_id}
        if ctx.credentials is not None:
            details["instance_url"] = ctx.credentials.extra.get("instance_url")
        daily = body.get("DailyApiRequests")
        healthy = True
        if isinstance(daily, dict):
            cap, left = daily.get("Max"), daily.get("Remaining")
            if all(isinstance(v, int) and not isinstance(v, bool) for v in (cap, left)):
                details["daily_api_requests"] = {"max": cap, "remaining": left,
                                                 "used": cap - left}
                healthy = left > 0
        return Health(healthy=healthy, auth_valid=True, api_accessible=True, details=details)

    # -- Salesforce's answers -------------------------------------------------------------------

    def is_token_expired(self, provider: Provider, status: int, headers: Any, body: bytes
                         ) -> bool:
        return limits.is_session_expired(status, body)

    def rate_limit_wait(self, provider: Provider, status: int, headers: Any, body: bytes
                        ) -> RateLimitWait | None:
        pause = provider.quota.pause if provider.quota is not None else None
        return limits.rate_limit_wait(status, body, pause)

    def parse_rate_limit(self, provider: Provider, headers: Any) -> dict[str, Any] | None:
        return limits.parse_limit_info(headers)

    # -- config -------------------------------------------------------------------------------

    def validate_config(self, provider: Provider, config: dict[str, Any]) -> list[str]:
        return config_problems(config)


def config_problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with the keys of an installation config this connector reads."""
    problems = []
    fields = config.get("fields")
    if fields is not None:
        if not isinstance(fields, dict):
            problems.append('fields must be an object: sObject -> list of field names, e.g. '
                            '{"Account": ["Name", "Industry"]}')
        else:
            for obj, names in fields.items():
                if not PROVIDER.accepts_stream(obj):
                    problems.append(f"fields: {str(obj)[:60]!r} is not an sObject name")
                elif not isinstance(names, list) or not names or not all(
                        isinstance(n, str) and soql.FIELD.fullmatch(n) for n in names):
                    problems.append(f"fields.{obj} must be a list of field API names "
                                    "(Name, Invoice__c, Owner.Name)")
    batch = config.get("batch_size")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)
                              or not sync.MIN_BATCH <= batch <= sync.MAX_BATCH):
        problems.append(f"batch_size must be an integer from {sync.MIN_BATCH} to "
                        f"{sync.MAX_BATCH} (Sforce-Query-Options batchSize)")
    version = config.get("api_version")
    if version is not None and not (isinstance(version, str) and sync._is_version(version)):
        problems.append("api_version must look like v61.0")
    timeout = config.get("session_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or not session.MIN_SESSION <= timeout <= session.MAX_SESSION):
        problems.append(f"session_timeout must be the org's session timeout in seconds, from "
                        f"{session.MIN_SESSION} to {session.MAX_SESSION}")
    for flag in ("deletions", "fetch_records_on_webhook"):
        if flag in config and not isinstance(config[flag], bool):
            problems.append(f"{flag} must be true or false")
    return problems
