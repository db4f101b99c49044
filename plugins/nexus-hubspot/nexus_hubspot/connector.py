"""The HubSpot connector: CRM objects over OAuth 2.0, incremental through the search API,
deletions from the archive, v3-signed webhooks — in the class style (``BaseConnector``: every
method named after a hook is that hook).

Everything network-shaped goes through ``ctx.http``, which applies the shared rate limits
(HubSpot's 110 requests per 10 s per portal, and the search API's own 5 per second as the
``search`` bucket), retries, the circuit breaker, the access token and its refresh. What is
HubSpot's own is declared on the :class:`~nexus_core.Provider` below or read by the small
hooks at the end (expired tokens, 429 bodies, rate-limit headers); the sync itself is in
:mod:`nexus_hubspot.incremental`, webhooks in :mod:`nexus_hubspot.events`.
"""

from __future__ import annotations

from typing import Any

from nexus_core import (
    BaseConnector,
    ConnectorContext,
    Health,
    OAuthConfig,
    Provider,
    RateLimits,
    RateLimitWait,
    Stream,
    StreamPattern,
    SyncPage,
    WebhookConfig,
    WebhookEvent,
    WebhookRequest,
    WebhookResult,
)
from nexus_hubspot import crm, events, incremental, limits

__version__ = "0.1.0"
API = "https://api.hubapi.com"
APP = "https://app.hubspot.com"

PROVIDER = Provider(
    id="hubspot",
    name="HubSpot",
    version=__version__,
    auth_type="oauth2",
    description="HubSpot CRM: contacts, companies, deals and any other CRM object type; "
    "deltas through the search API, deletions from the archive, v3-signed webhooks.",
    base_url=API,
    base_url_env="HUBSPOT_BASE_URL",
    # 110 requests per rolling 10 s per portal: burst + rate x 10 s <= 110 keeps any 10 s
    # window under it (11/s with a burst of 110 would allow 219). The search API is exempt
    # from that limit and has its own, 5 per second: 4/s without a burst stays under it.
    rate_limits=RateLimits(requests_per_second=10, burst_size=10,
                           buckets={"search": RateLimits(requests_per_second=4, burst_size=1)}),
    scopes=("oauth", "crm.objects.contacts.read", "crm.objects.companies.read",
            "crm.objects.deals.read"),
    streams=(
        Stream("contacts", primary_key="id", cursor_field="lastmodifieddate",
               description="People; changes by lastmodifieddate"),
        Stream("companies", primary_key="id", cursor_field="hs_lastmodifieddate",
               description="Companies; changes by hs_lastmodifieddate"),
        Stream("deals", primary_key="id", cursor_field="hs_lastmodifieddate",
               description="Deals; changes by hs_lastmodifieddate"),
    ),
    # Any other CRM object type an installation names: tickets, products, line_items, calls,
    # notes, ..., custom objects by id (2-1234567) or name (p_cars).
    stream_pattern=StreamPattern(r"[a-z][a-z0-9_]{0,62}|[0-9]{1,4}-[0-9]{1,12}|p_[a-z0-9_]{1,60}",
                                 primary_key="id", cursor_field="hs_lastmodifieddate",
                                 description="another CRM object type; changes by "
                                 "hs_lastmodifieddate"),
    oauth=OAuthConfig(
        authorize_url=f"{APP}/oauth/authorize",
        token_url=f"{API}/oauth/v1/token",
        pkce=True,
        optional_scopes=("tickets", "e-commerce"),  # tickets; products and line items
        client_id_env="HUBSPOT_CLIENT_ID",
        client_secret_env="HUBSPOT_CLIENT_SECRET",  # noqa: S106 - a variable name
        redirect_uri_env="HUBSPOT_REDIRECT_URI",
        authorize_base_url_env="HUBSPOT_AUTH_URL",
        # {"status": "BAD_REFRESH_TOKEN", "message": ...}, or the RFC fields (addendum 1.6)
        error_field=("status", "error"),
        error_description_field=("message", "error_description"),
        reauth_errors=("BAD_REFRESH_TOKEN", "invalid_grant"),
        account_id_field="hub_id",
        token_type="Bearer",  # noqa: S106 - a scheme name; HubSpot answers "bearer"
    ),
    webhook=WebhookConfig(
        scheme="hubspot-v3",
        fallback_schemes=("hubspot-v2", "hubspot-v1"),
        # HubSpot signs with the app's client secret: HUBSPOT_WEBHOOK_SECRET only overrides it
        secret_envs=("HUBSPOT_WEBHOOK_SECRET", "HUBSPOT_CLIENT_SECRET"),
        account_id_field="portalId",
        delivery_id_field="eventId",  # a retry re-sends the same event ids
        dedupe_ttl=3 * 24 * 3600,  # HubSpot retries for 24 h
    ),
)

#: Installation config keys this connector reads (besides the core's streams, rate_limits,
#: timeouts).
CONFIG_KEYS = ("properties", "search_lag_seconds", "deletions", "fetch_records_on_webhook")


class HubSpotConnector(BaseConnector):
    provider = PROVIDER

    # -- sync ---------------------------------------------------------------------------------

    def backfill(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """Every live object of the type, 100 per page; the last page's cursor starts the
        first delta at the provider's clock when the backfill began."""
        return incremental.backfill_page(ctx, stream, cursor)

    def delta(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """One window of changes through the search API, then the window's deletions from
        the archive (see :mod:`nexus_hubspot.incremental`)."""
        return incremental.delta_page(ctx, stream, cursor)

    # -- webhooks -----------------------------------------------------------------------------

    def handle_webhook(self, ctx: ConnectorContext, request: WebhookRequest
                       ) -> list[WebhookEvent] | WebhookResult:
        return events.handle(ctx, request, PROVIDER.stream_names)

    # -- health -------------------------------------------------------------------------------

    def health_check(self, ctx: ConnectorContext) -> Health:
        """One authenticated call (the portal's details): the token works and the API
        answers; the core adds the rate-limit status its headers carried."""
        details = crm.answer(ctx, ctx.http.get("/account-info/v3/details"), "account details")
        return Health(healthy=True, auth_valid=True, api_accessible=True,
                      details={k: details.get(k) for k in ("portalId", "timeZone",
                                                           "accountType", "uiDomain")
                               if details.get(k) is not None})

    # -- HubSpot's answers --------------------------------------------------------------------

    def is_token_expired(self, provider: Provider, status: int, headers: Any, body: bytes
                         ) -> bool:
        return limits.is_token_expired(status, body)

    def rate_limit_wait(self, provider: Provider, status: int, headers: Any, body: bytes
                        ) -> RateLimitWait | None:
        return limits.rate_limit_wait(status, headers, body)

    def parse_rate_limit(self, provider: Provider, headers: Any) -> dict[str, Any] | None:
        return limits.parse_rate_limit(headers)

    # -- config -------------------------------------------------------------------------------

    def validate_config(self, provider: Provider, config: dict[str, Any]) -> list[str]:
        return config_problems(config)


def config_problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with the keys of an installation config this connector reads."""
    problems = []
    props = config.get("properties")
    if props is not None:
        if not isinstance(props, dict):
            problems.append("properties must be an object: object type -> list of property "
                            'names, e.g. {"contacts": ["email", "firstname"]}')
        else:
            for obj, names in props.items():
                if not PROVIDER.accepts_stream(obj):
                    problems.append(f"properties: {obj!r} is not a CRM object type")
                elif not isinstance(names, list) or not all(
                        isinstance(n, str) and crm.PROPERTY_NAME.fullmatch(n) for n in names):
                    problems.append(f"properties.{obj} must be a list of property names")
    lag = config.get("search_lag_seconds")
    if lag is not None and (isinstance(lag, bool) or not isinstance(lag, int | float)
                            or not 0 <= lag <= 86400):
        problems.append("search_lag_seconds must be a number of seconds from 0 to 86400")
    for flag in ("deletions", "fetch_records_on_webhook"):
        if flag in config and not isinstance(config[flag], bool):
            problems.append(f"{flag} must be true or false")
    return problems
