"""A local simulator of the Example API — what the connector is tested, demoed and
benchmarked against (``nexus simulate example --port 8090``).

The API (every data endpoint takes ``Authorization: Bearer <access token>``):

=======================================  ====================================================
``GET  /oauth/authorize``                consent (approved at once here): 302 back with code
``POST /oauth/token``                    authorization_code / refresh_token grants (form
                                         client credentials); refresh tokens rotate
``GET  /v1/{stream}?limit&cursor``       ``{"data": [...], "next_cursor": str|null,
                                         "server_time": iso}``, oldest id first
``GET  /v1/{stream}/changes?since&...``  records with ``updated_at >= since`` (inclusive),
                                         ordered by ``(updated_at, id)``, same paging
``GET  /v1/me``                          ``{"account_id": ..., "name": ...}``
=======================================  ====================================================

Errors: 401 ``{"error": "invalid_token"}``; 429 with ``Retry-After``; a limit of 100 requests per
10 s per account. Webhooks are Standard Webhooks deliveries of ``[{"id", "type", "account_id",
"object_id", "occurred_at"}]``.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from nexus_core.testing.provider_sim import ProviderSimulator
from nexus_core.testing.sim_app import SimRateLimit, SimRequest, SimResponse
from nexus_core.testing.sim_data import iso, parse_iso
from nexus_core.webhook_schemes import sign_standard_webhooks

STREAMS = ("widgets", "gadgets")
WEBHOOK_KEY = b"example simulator webhook key, 32+ bytes"
MAX_LIMIT = 100


def _encode(index: int) -> str:
    return base64.urlsafe_b64encode(f"i:{index}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> int | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(raw.removeprefix("i:")) if raw.startswith("i:") else None
    except (ValueError, UnicodeDecodeError):
        return None


class ExampleSimulator(ProviderSimulator):
    provider_id = "example"
    streams = {"widgets": 250, "gadgets": 180}
    oauth_options = {"client_id": "example-client", "client_secret": "example-secret",
                     "token_lifetime": 3600, "rotate_refresh": True}
    webhook_secret = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()

    def make_record(self, stream: str, index: int, version: int, account: str
                    ) -> dict[str, Any]:
        return {"id": f"{stream[:3]}_{account}_{index:06d}", "name": f"{stream[:-1]} {index}",
                "color": ("red", "green", "blue")[index % 3], "version": version}

    def build(self) -> None:
        assert self.oauth is not None
        self.oauth.mount(self.app, default_account=lambda: self.default_account)
        self.app.rate_limit = SimRateLimit(100, 10.0)

        @self.app.route("GET", "/v1/me")
        def me(req: SimRequest) -> SimResponse:
            account = self.oauth.authenticate(req) if self.oauth else None
            return SimResponse.json({"account_id": account, "name": f"Account {account}"})

        @self.app.route("GET", "/v1/{stream}")
        def listing(req: SimRequest) -> SimResponse:
            return self._page(req, changes=False)

        @self.app.route("GET", "/v1/{stream}/changes")
        def changes(req: SimRequest) -> SimResponse:
            return self._page(req, changes=True)

    def _page(self, req: SimRequest, *, changes: bool) -> SimResponse:
        stream = req.params["stream"]
        if stream not in self.streams:
            return SimResponse.json({"error": "not_found", "message": f"no stream {stream}"},
                                    404)
        account = self.oauth.authenticate(req) if self.oauth else self.default_account
        assert account is not None
        try:
            limit = min(int(req.query.get("limit") or MAX_LIMIT), MAX_LIMIT)
        except ValueError:
            return SimResponse.json({"error": "bad_request", "message": "limit"}, 400)
        start = 0
        if req.query.get("cursor"):
            decoded = _decode(req.query["cursor"])
            if decoded is None:
                return SimResponse.json({"error": "bad_request", "message": "cursor"}, 400)
            start = decoded
        if changes:
            try:
                since = parse_iso(req.query["since"])
            except (KeyError, ValueError):
                return SimResponse.json({"error": "bad_request", "message": "since"}, 400)
            order = self.data.changed_since(account, stream, since)
        else:
            order = list(self.data.indexes(account, stream))
        chunk = order[start:start + limit]
        nxt = _encode(start + limit) if start + limit < len(order) else None
        return SimResponse.json({
            "data": [self.data.row(account, stream, i) for i in chunk],
            "next_cursor": nxt, "server_time": iso(self.data.now),
        })

    def env(self) -> dict[str, str]:
        return {"EXAMPLE_BASE_URL": self.url, **self.oauth_env("EXAMPLE"),
                "EXAMPLE_WEBHOOK_SECRET": self.webhook_secret}

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_events(self, account: str, n: int = 1) -> list[dict[str, Any]]:
        indexes = self.data.mutate(account, "widgets", n)
        return [{"id": "evt_" + secrets.token_hex(6), "type": "widget.updated",
                 "account_id": account,
                 "object_id": self.data.row(account, "widgets", i)["id"],
                 "occurred_at": iso(self.data.now)} for i in indexes]

    def sign_webhook(self, body: bytes, url: str, *, timestamp: float | None = None
                     ) -> dict[str, str]:
        msg_id = "msg_" + secrets.token_hex(8)
        ts = str(int(time.time() if timestamp is None else timestamp))
        return {"webhook-id": msg_id, "webhook-timestamp": ts, "content-type": "application/json",
                "webhook-signature": sign_standard_webhooks(self.webhook_secret, msg_id, ts,
                                                            body)}

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        return json.dumps(events, separators=(",", ":")).encode()
