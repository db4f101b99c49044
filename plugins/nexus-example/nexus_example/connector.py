"""The Example Widgets connector: OAuth2 with rotating refresh tokens, cursor paging, inclusive
``updated_at`` deltas, Standard Webhooks — the shape most SaaS APIs have, in the class style
(``BaseConnector``: every method named after a hook is that hook).

Everything network-shaped goes through ``ctx.http``: the core applies the shared rate limit,
retries, the circuit breaker, the access token and its refresh. The connector only knows the
API's paths and shapes (see :mod:`nexus_example.simulator` for the API it talks to).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from nexus_core import (
    BaseConnector,
    ConnectorContext,
    Health,
    OAuthConfig,
    Provider,
    ProviderError,
    RateLimits,
    Record,
    Stream,
    SyncPage,
    WebhookConfig,
    WebhookEvent,
    WebhookRequest,
)

API = "https://api.example-widgets.test"
PAGE = 100


def _body(ctx: ConnectorContext, resp: Any, what: str) -> dict[str, Any]:
    """The JSON of a successful answer; any other 4xx is a permanent error naming the call
    (``ctx.http`` already raised for 401-after-refresh, 429 and 5xx)."""
    if resp.status_code >= 400:
        raise ProviderError(f"Example API answered {resp.status_code} for {what}: "
                            f"{resp.text[:200]}", status=resp.status_code, provider=ctx.provider,
                            tenant_id=ctx.tenant_id, install_id=ctx.install_id)
    return resp.json()


def _record(stream: str, item: dict[str, Any]) -> Record:
    updated = datetime.fromisoformat(item["updated_at"].replace("Z", "+00:00"))
    return Record(id=str(item["id"]), stream=stream, data=item, updated_at=updated)


class ExampleConnector(BaseConnector):
    provider = Provider(
        id="example",
        name="Example Widgets",
        version="0.2.0",
        auth_type="oauth2",
        description="A template connector for plugin authors, with its own local simulator.",
        base_url=API,
        base_url_env="EXAMPLE_BASE_URL",
        rate_limits=RateLimits(requests_per_second=8, burst_size=10),
        scopes=("widgets.read",),
        streams=(Stream("widgets", primary_key="id", cursor_field="updated_at"),
                 Stream("gadgets", primary_key="id", cursor_field="updated_at")),
        oauth=OAuthConfig(
            authorize_url=f"{API}/oauth/authorize",
            token_url=f"{API}/oauth/token",
            pkce=True,
            client_id_env="EXAMPLE_CLIENT_ID",
            client_secret_env="EXAMPLE_CLIENT_SECRET",  # noqa: S106 - a variable name
            redirect_uri_env="EXAMPLE_REDIRECT_URI",
            account_id_field="account_id",  # the token answer names the account
        ),
        webhook=WebhookConfig(
            scheme="standard-webhooks",
            secret_envs=("EXAMPLE_WEBHOOK_SECRET",),
            account_id_field="account_id",
            delivery_id_field="webhook-id",
        ),
    )

    # -- sync ---------------------------------------------------------------------------------

    def backfill(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """Every record, oldest id first. The cursor carries the provider's page cursor and the
        server time of the first page: the first delta starts there, so nothing changed during
        the backfill is missed."""
        state = json.loads(cursor) if cursor else {}
        params: dict[str, Any] = {"limit": PAGE}
        if state.get("c"):
            params["cursor"] = state["c"]
        data = _body(ctx, ctx.http.get(f"/v1/{stream}", params=params), f"{stream} page")
        started = state.get("t") or data["server_time"]
        records = [_record(stream, item) for item in data["data"]]
        if data.get("next_cursor"):
            return SyncPage(records=records, next_cursor=json.dumps({"c": data["next_cursor"],
                                                                     "t": started}))
        return SyncPage(records=records, done=True,
                        next_cursor=json.dumps({"since": started, "seen": []}))

    def delta(self, ctx: ConnectorContext, stream: str, cursor: str | None) -> SyncPage:
        """Changes with ``updated_at >= since``. ``>=`` re-reads the records at ``since``:
        those already delivered (``seen``) are dropped, others sharing the timestamp are not
        lost (``>`` would lose them)."""
        state = json.loads(cursor) if cursor else {"since": "1970-01-01T00:00:00.000Z",
                                                    "seen": []}
        params: dict[str, Any] = {"since": state["since"], "limit": PAGE}
        if state.get("c"):
            params["cursor"] = state["c"]
        data = _body(ctx, ctx.http.get(f"/v1/{stream}/changes", params=params),
                     f"{stream} changes")
        seen = set(state["seen"])
        records = [_record(stream, item) for item in data["data"]]
        fresh = [r for r in records
                 if not (r.data["updated_at"] == state["since"] and r.id in seen)]
        top, top_ids = state.get("max"), list(state.get("max_ids", []))
        for r in records:
            at = r.data["updated_at"]
            if top is None or at > top:
                top, top_ids = at, [r.id]
            elif at == top and r.id not in top_ids:
                top_ids.append(r.id)
        if data.get("next_cursor"):
            return SyncPage(records=fresh, next_cursor=json.dumps(
                {**state, "c": data["next_cursor"], "max": top, "max_ids": top_ids}))
        if top is None:  # nothing new: the cursor stays where it was
            return SyncPage(records=fresh, done=True,
                            next_cursor=json.dumps({"since": state["since"],
                                                    "seen": state["seen"]}))
        if top == state["since"]:
            top_ids = sorted(seen | set(top_ids))
        return SyncPage(records=fresh, done=True,
                        next_cursor=json.dumps({"since": top, "seen": sorted(top_ids)}))

    # -- webhooks -----------------------------------------------------------------------------

    def handle_webhook(self, ctx: ConnectorContext, request: WebhookRequest
                       ) -> list[WebhookEvent]:
        payload = json.loads(request.body)
        items = payload if isinstance(payload, list) else [payload]
        return [
            WebhookEvent(
                id=str(item["id"]),
                type=str(item.get("type", "unknown")),
                provider="example",
                object_id=str(item["object_id"]) if item.get("object_id") is not None else None,
                account_id=str(item.get("account_id")) if item.get("account_id") else None,
                occurred_at=datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00"))
                if item.get("occurred_at") else None,
                payload=item,
            )
            for item in items
            if isinstance(item, dict) and item.get("id")
            and (ctx.account_id is None or str(item.get("account_id")) == ctx.account_id)
        ]

    # -- health -------------------------------------------------------------------------------

    def health_check(self, ctx: ConnectorContext) -> Health:
        me = _body(ctx, ctx.http.get("/v1/me"), "the account")
        return Health(healthy=True, auth_valid=True, api_accessible=True,
                      details={"account": me.get("account_id")})
