"""The Slack connector: OAuth v2 with token rotation, channels, users and messages over the Web
API in per-method rate-limit tiers, Events API webhooks — in the class style (``BaseConnector``:
every method named after a hook is that hook).

What is Slack's own is declared on the :class:`~nexus_core.Provider` below: how
``oauth.v2.access`` answers (HTTP Basic client auth, ``ok: false`` errors, ``team.id`` as the
account), what the errors inside HTTP 200 mean (``body_errors``: ``invalid_auth`` and
``token_expired`` refresh the rotating token, ``token_revoked`` and ``account_inactive`` need
a reconnect, ``internal_error``-like codes are retried), the tiers as rate-limit buckets, and
the v0-signed Events API routed by ``team_id`` then ``enterprise_id``. The reads are in
:mod:`nexus_slack.sync`, the events in :mod:`nexus_slack.events`.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from nexus_core import (
    BaseConnector,
    BodyErrors,
    ConnectorContext,
    Credentials,
    EnvVar,
    Health,
    OAuthConfig,
    Provider,
    Stream,
    SyncPage,
    UrlVerification,
    WebhookConfig,
    WebhookEvent,
    WebhookRequest,
    auth,
)
from nexus_slack import events, sync, tiers

__version__ = "0.1.0"
API = "https://slack.com/api"

PROVIDER = Provider(
    id="slack",
    name="Slack",
    version=__version__,
    auth_type="oauth2",
    description="Slack workspaces: channels, users and channel messages (threads optional) "
    "with rotating tokens and per-method rate-limit tiers; Events API webhooks.",
    base_url=API,
    base_url_env="SLACK_BASE_URL",
    rate_limits=tiers.budgets(),
    scopes=("channels:read", "channels:history", "groups:read", "groups:history", "users:read"),
    streams=(
        Stream("channels", primary_key="id", cursor_field="updated",
               description="Conversations (conversations.list); changes by updated (ms)"),
        Stream("users", primary_key="id", cursor_field="updated",
               description="Members (users.list); changes by updated (s)"),
        Stream("messages", primary_key="id", cursor_field="ts",
               description="Messages of every channel the bot is in, id <channel>:<ts> "
               "(conversations.history; replies with the threads config)"),
    ),
    body_errors=BodyErrors(
        ok_field="ok", error_field="error",
        expired=("invalid_auth", "token_expired"),
        reauth=("token_revoked", "account_inactive"),
        transient=("internal_error", "fatal_error", "request_timeout", "service_unavailable"),
        returned=sync.SKIP_CHANNEL,
    ),
    oauth=OAuthConfig(
        authorize_url="https://slack.com/oauth/v2/authorize",
        token_url=f"{API}/oauth.v2.access",
        scope_separator=",",
        client_auth="basic",
        authorize_base_url_env="SLACK_AUTH_URL",
        ok_field="ok",
        error_field=("error",),
        reauth_errors=("invalid_refresh_token", "invalid_grant", "token_revoked",
                       "account_inactive"),
        account_id_field="team.id",
        extra_fields={"team_name": "team.name", "enterprise_id": "enterprise.id",
                      "bot_user_id": "bot_user_id", "app_id": "app_id",
                      "is_enterprise_install": "is_enterprise_install"},
        token_type="Bearer",  # noqa: S106 - a scheme name; Slack answers "bot"
    ),
    webhook=WebhookConfig(
        scheme="slack-v0",
        url_verification=UrlVerification(),  # {"type": "url_verification", "challenge": ...}
        secret_envs=("SLACK_SIGNING_SECRET",),
        account_id_field="team_id",
        fallback_account_fields=("enterprise_id",),
        delivery_id_field="event_id",
        dedupe_ttl=3 * 24 * 3600,
    ),
    env=(EnvVar("SLACK_HISTORY_LIMITED", "true for a commercially distributed app outside "
                "the Marketplace created on or after 2025-05-29: conversations.history and "
                "replies at 1 request per minute, 15 messages per page"),),
)

#: Installation config keys this connector reads (besides the core's streams, rate_limits,
#: timeouts).
CONFIG_KEYS = ("page_size", "threads", "channel_types", "team_id")
TEAM_ID = re.compile(r"T[A-Z0-9]{2,20}")
CHANNEL_TYPES = ("public_channel", "private_channel", "mpim", "im")


def _account(creds: Credentials) -> Credentials:
    """An organization-wide (Enterprise Grid) installation has no ``team``: its account is the
    enterprise."""
    extra = creds.extra or {}
    if not extra.get("account_id") and extra.get("enterprise_id"):
        return attrs.evolve(creds, extra={**extra, "account_id": str(extra["enterprise_id"])})
    return creds


class SlackConnector(BaseConnector):
    provider = PROVIDER

    # -- auth ---------------------------------------------------------------------------------

    def authorize(self, ctx: ConnectorContext, code: str, redirect_uri: str,
                  code_verifier: str | None) -> Credentials:
        """``oauth.v2.access`` with the code: a bot token, its rotating refresh token, the
        workspace (``team.id``) — or the enterprise of an organization-wide install — as the
        account."""
        return _account(auth.exchange_code(ctx, code, redirect_uri, code_verifier))

    def refresh(self, ctx: ConnectorContext) -> Credentials:
        """``oauth.v2.access`` with ``grant_type=refresh_token``: a new access token AND a new
        refresh token; the old one is dead from now on (the core commits the new one under
        its single-flight lock before anyone else may refresh)."""
        return _account(auth.refresh_grant(ctx))

    # -- sync ---------------------------------------------------------------------------------

    def backfill(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        if stream == "messages":
            return sync.messages_page(ctx, cursor)
        return sync.list_page(ctx, stream, cursor)

    def delta(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """The same walks from the backfill's marks: channels and users changed since the
        last walk, each channel's messages newer than the newest seen there."""
        return self.backfill(ctx, stream, cursor)

    # -- webhooks -----------------------------------------------------------------------------

    def handle_webhook(self, ctx: ConnectorContext, request: WebhookRequest
                       ) -> list[WebhookEvent]:
        return events.handle(request)

    # -- health -------------------------------------------------------------------------------

    def health_check(self, ctx: ConnectorContext) -> Health:
        """``auth.test``: the token works and the workspace answers."""
        data = sync.call(ctx, "auth.test", {})
        return Health(healthy=True, auth_valid=True, api_accessible=True,
                      details={k: data[k] for k in ("team", "team_id", "user_id", "bot_id",
                                                    "enterprise_id", "url") if data.get(k)})

    # -- config -------------------------------------------------------------------------------

    def validate_config(self, provider: Provider, config: dict[str, Any]) -> list[str]:
        return config_problems(config)


def config_problems(config: dict[str, Any]) -> list[str]:
    """What is wrong with the keys of an installation config this connector reads."""
    problems = []
    size = config.get("page_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                             or not 1 <= size <= sync.MAX_PAGE_SIZE):
        problems.append(f"page_size must be an integer from 1 to {sync.MAX_PAGE_SIZE}")
    if "threads" in config and not isinstance(config["threads"], bool):
        problems.append("threads must be true or false")
    types = config.get("channel_types")
    if types is not None and (not isinstance(types, list) or not types
                              or not all(t in CHANNEL_TYPES for t in types)):
        problems.append("channel_types must be a non-empty list of "
                        + ", ".join(CHANNEL_TYPES))
    team = config.get("team_id")
    if team is not None and (not isinstance(team, str) or not TEAM_ID.fullmatch(team)):
        problems.append("team_id must be a Slack workspace id (T followed by letters and "
                        "digits), the workspace an organization-wide installation reads")
    return problems
