"""A local simulator of the HubSpot APIs the connector uses, to the shapes of
``reference/providers.md`` and ``providers-addendum.md`` (``nexus simulate hubspot``).

==========================================  ==================================================
``GET  /oauth/authorize``                   consent, approved at once: 302 with code + state
``POST /oauth/v1/token``                    authorization_code / refresh_token (form); the
                                            answer carries ``hub_id``; refresh tokens do not
                                            rotate; ``BAD_AUTH_CODE`` / ``BAD_REFRESH_TOKEN``
``GET  /crm/v3/objects/{object}``           list: ``limit`` (default 10, max 100), opaque
                                            ``after``, ``properties``, ``archived``
``POST /crm/v3/objects/{object}/search``    filters (GTE/LTE/GT/LT/EQ on the last-modified
                                            property and ``hs_object_id``), one sort, ``limit``
                                            <= 200, numeric ``after``, ``total``; past 10,000
                                            results a 400; archived records never appear
``GET  /account-info/v3/details``           the portal (health checks)
==========================================  ==================================================

Rate limits per portal: 110 requests per 10 s (``TEN_SECONDLY_ROLLING``), the search API 5 per
second in its own bucket (a 429 without rate-limit headers), and an optional daily limit
(``DAILY``). Non-search answers carry ``X-HubSpot-RateLimit-Max/-Remaining/-Interval-
Milliseconds``. An expired token is ``401 EXPIRED_AUTHENTICATION``. Webhooks are v3-signed
arrays of events.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from nexus_core.testing.provider_sim import ProviderSimulator
from nexus_core.testing.sim_app import SimRateLimit, SimRequest, SimResponse
from nexus_core.testing.sim_data import SIM_EPOCH
from nexus_core.webhook_schemes import hubspot_uri, sign_hubspot_v3

#: The last-modified property of each object type (providers-addendum.md 1.1).
MODIFIED = {"contacts": "lastmodifieddate"}
DEFAULT_MODIFIED = "hs_lastmodifieddate"
SEARCH_CAP = 10_000
EPOCH_MS = int(SIM_EPOCH.timestamp() * 1000)
CLIENT_SECRET = "hubspot-sim-client-secret"


def modified_property(obj: str) -> str:
    return MODIFIED.get(obj, DEFAULT_MODIFIED)


def _ms(second: int) -> int:
    return EPOCH_MS + second * 1000


def _iso_ms(ms: int) -> str:
    at = time.gmtime(ms / 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", at) + f".{ms % 1000:03d}Z"


def _error(status: int, message: str, category: str, **extra: Any) -> SimResponse:
    return SimResponse.json({"status": "error", "message": message,
                             "correlationId": str(uuid.uuid4()), "category": category, **extra},
                            status)


def _token_body(issued: dict[str, Any]) -> dict[str, Any]:
    return {"access_token": issued["access_token"], "refresh_token": issued["refresh_token"],
            "expires_in": int(issued["expires_in"]), "token_type": "bearer",
            "hub_id": int(issued["account"]) if issued["account"].isdigit()
            else issued["account"], "user_id": 9001, "scopes": list(issued["scopes"])}


def _token_error(code: str, description: str) -> SimResponse:
    status = {"invalid_grant": "BAD_REFRESH_TOKEN", "invalid_client": "BAD_CLIENT_ID"}.get(
        code, "BAD_REQUEST")
    if "authorization code" in description:
        status = "BAD_AUTH_CODE"
    return SimResponse.json({"status": status, "message": description,
                             "correlationId": str(uuid.uuid4())}, 400)


class HubSpotSimulator(ProviderSimulator):
    provider_id = "hubspot"
    streams = {"contacts": 250, "companies": 120, "deals": 90, "tickets": 40}
    oauth_options = {"client_id": "hubspot-sim-client", "client_secret": CLIENT_SECRET,
                     "token_lifetime": 1800, "rotate_refresh": False,
                     "token_body": _token_body, "error": _token_error}
    webhook_secret = CLIENT_SECRET  # HubSpot signs with the app's client secret

    #: Search results newer than this many simulated seconds are not visible yet (the search
    #: index lags behind writes); 0 = none.
    search_lag = 0
    #: Requests per portal per day (``None``: no daily limit, as for OAuth apps).
    daily_limit: int | None = None

    def add_account(self, account: str | None = None) -> str:
        # Portal ids are numbers.
        return super().add_account(account or str(62515 + len(self.accounts)))

    def make_record(self, stream: str, index: int, version: int, account: str
                    ) -> dict[str, Any]:
        oid = str(1001 + index)
        first, last = ("Ada", "Alan", "Grace", "Edsger")[index % 4], f"Test{index}"
        props = {
            "contacts": {"email": f"{first.lower()}.{index}@example.com", "firstname": first,
                         "lastname": last},
            "companies": {"name": f"Company {index}", "domain": f"c{index}.example.com"},
            "deals": {"dealname": f"Deal {index}", "amount": str(1000 + index * 10),
                      "dealstage": ("appointmentscheduled", "closedwon")[version % 2],
                      "pipeline": "default"},
        }.get(stream, {"name": f"{stream} {index}"})
        return {"id": oid, "hs_object_id": oid, "props": props, "version": version}

    # -- records in HubSpot's shape -----------------------------------------------------------

    def _object(self, account: str, obj: str, index: int, props: list[str] | None,
                *, archived_at: int | None = None) -> dict[str, Any]:
        version, second = self.data.version(account, obj, index)
        raw = self.data.make(obj, index, version, account)
        modified = _iso_ms(_ms(second))
        created = _iso_ms(_ms(index))
        everything = {**raw["props"], "hs_object_id": raw["id"], "createdate": created,
                      modified_property(obj): modified}
        if version:
            everything["nexus_version"] = str(version)
        wanted = props or list(raw["props"])
        shown = {k: everything[k] for k in wanted if k in everything}
        shown.update({"hs_object_id": raw["id"], "createdate": created,
                      modified_property(obj): modified})
        out = {"id": raw["id"], "properties": shown, "createdAt": created, "updatedAt": modified,
               "archived": archived_at is not None}
        if archived_at is not None:
            out["archivedAt"] = _iso_ms(_ms(archived_at))
        return out

    def record_id(self, index: int) -> str:
        return str(1001 + index)

    def expected_ids(self, stream: str, account: str) -> set[str]:
        return {self.record_id(i) for i in self.data.indexes(account, stream)}

    def mutate(self, stream: str, account: str, n: int, **kw: Any) -> set[str]:
        return {self.record_id(i) for i in self.data.mutate(account, stream, n, **kw)}

    def archive(self, stream: str, account: str, n: int) -> set[str]:
        """Archive (delete) ``n`` records; their ids."""
        return {self.record_id(i) for i in self.data.delete(account, stream, n)}

    # -- the API --------------------------------------------------------------------------------

    def build(self) -> None:
        assert self.oauth is not None
        self.oauth.mount(self.app, authorize_path="/oauth/authorize",
                         token_path="/oauth/v1/token",
                         default_account=lambda: self.default_account)
        self.app.unauthorized = lambda req: _error(
            401, "The OAuth token used to make this call expired 5 minute(s) ago.",
            "EXPIRED_AUTHENTICATION")
        self.app.rate_limit = SimRateLimit(
            110, 10.0, buckets={"search": (5, 1.0)}, bucket_of=self._bucket,
            too_many=self._too_many)
        self.app.after = self._headers
        self._daily: dict[str, int] = {}
        self._daily_lock = threading.Lock()

        @self.app.route("GET", "/account-info/v3/details")
        def details(req: SimRequest) -> SimResponse:
            account = self._account(req)
            return SimResponse.json({"portalId": int(account) if account.isdigit() else account,
                                     "timeZone": "Europe/Berlin", "currency": "EUR",
                                     "accountType": "STANDARD"})

        @self.app.route("GET", "/crm/v3/objects/{object}")
        def listing(req: SimRequest) -> SimResponse:
            return self._daily_check(req) or self._list(req)

        @self.app.route("POST", "/crm/v3/objects/{object}/search")
        def search(req: SimRequest) -> SimResponse:
            return self._daily_check(req) or self._search(req)

    def _account(self, req: SimRequest) -> str:
        assert self.oauth is not None
        account = self.oauth.authenticate(req)
        assert account is not None
        return account

    @staticmethod
    def _bucket(req: SimRequest) -> str:
        return "search" if req.path.endswith("/search") else "default"

    @staticmethod
    def _too_many(retry_after: float, bucket: str) -> SimResponse:
        if bucket == "search":  # recorded: no rate-limit headers, no Retry-After
            return _error(429, "You have reached your secondly limit.", "RATE_LIMITS")
        return SimResponse.json({"status": "error",
                                 "message": "You have reached your ten_secondly_rolling limit.",
                                 "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                                 "policyName": "TEN_SECONDLY_ROLLING"}, 429)

    def _headers(self, req: SimRequest, resp: SimResponse, account: str) -> SimResponse:
        if self._bucket(req) == "default" and self.app.rate_limit is not None:
            limit, remaining, window = self.app.rate_limit.remaining(account)
            resp.headers.update({"X-HubSpot-RateLimit-Max": str(limit),
                                 "X-HubSpot-RateLimit-Remaining": str(remaining),
                                 "X-HubSpot-RateLimit-Interval-Milliseconds":
                                     str(int(window * 1000))})
        return resp

    def _daily_check(self, req: SimRequest) -> SimResponse | None:
        if self.daily_limit is None:
            return None
        account = self._account(req)
        with self._daily_lock:
            used = self._daily.get(account, 0)
            if used >= self.daily_limit:
                return SimResponse.json({"status": "error",
                                         "message": "You have reached your daily limit.",
                                         "errorType": "RATE_LIMIT",
                                         "correlationId": str(uuid.uuid4()),
                                         "policyName": "DAILY"}, 429)
            self._daily[account] = used + 1
        return None

    def reset_daily(self) -> None:
        with self._daily_lock:
            self._daily.clear()

    def _list(self, req: SimRequest) -> SimResponse:
        account, obj = self._account(req), req.params["object"]
        if obj not in self.data.sizes:
            return _error(404, f"Unable to infer object type from: {obj}", "OBJECT_NOT_FOUND")
        try:
            limit = int(req.query.get("limit") or 10)
        except ValueError:
            return _error(400, "Invalid input JSON : limit", "VALIDATION_ERROR")
        if not 1 <= limit <= 100:
            return _error(400, "limit must be between 1 and 100", "VALIDATION_ERROR")
        start = 0
        if req.query.get("after"):
            try:
                start = int(base64.b64decode(req.query["after"]).decode().strip())
            except (ValueError, UnicodeDecodeError):
                return _error(400, "Invalid after", "VALIDATION_ERROR")
        props = [p for p in (req.query.get("properties") or "").split(",") if p] or None
        archived = req.query.get("archived", "false").lower() == "true"
        if archived:
            gone = self.data.deleted(account, obj)
            order = sorted(gone)
            rows = [self._object(account, obj, i, props, archived_at=gone[i])
                    for i in order[start:start + limit]]
        else:
            order = list(self.data.indexes(account, obj))
            rows = [self._object(account, obj, i, props) for i in order[start:start + limit]]
        body: dict[str, Any] = {"results": rows}
        if start + limit < len(order):
            after = base64.b64encode(f"{start + limit}\n".encode()).decode()
            body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return SimResponse.json(body)

    def _search(self, req: SimRequest) -> SimResponse:
        account, obj = self._account(req), req.params["object"]
        if obj not in self.data.sizes:
            return _error(404, f"Unable to infer object type from: {obj}", "OBJECT_NOT_FOUND")
        query = req.json()
        if not isinstance(query, dict):
            return _error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        limit = int(query.get("limit") or 10)
        offset = int(query.get("after") or 0)
        if not 1 <= limit <= 200:
            return _error(400, "limit must be between 1 and 200", "VALIDATION_ERROR")
        if offset + limit > SEARCH_CAP:
            return _error(400, "Search results are limited to 10,000 total results for any "
                          "given query.", "VALIDATION_ERROR")
        key = modified_property(obj)
        visible_until = self.data.now - self.search_lag
        rows = []
        for index in self.data.indexes(account, obj):
            second = self.data.version(account, obj, index)[1]
            if second > visible_until:
                continue
            values = {key: _ms(second), "hs_object_id": 1001 + index,
                      "createdate": _ms(index)}
            if all(self._matches(values, f) for f in self._filters(query)):
                rows.append((values, index))
        sorts = query.get("sorts") or [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
        sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": str(sorts[0])}
        prop = sort.get("propertyName", "hs_object_id")
        rows.sort(key=lambda r: (r[0].get(prop, 0), r[0]["hs_object_id"]),
                  reverse=sort.get("direction") == "DESCENDING")
        props = query.get("properties") or None
        page = [self._object(account, obj, i, props) for _, i in rows[offset:offset + limit]]
        body: dict[str, Any] = {"total": len(rows), "results": page}
        if offset + limit < len(rows):
            body["paging"] = {"next": {"after": str(offset + limit),
                                       "link": f"?after={offset + limit}"}}
        return SimResponse.json(body)

    @staticmethod
    def _filters(query: dict[str, Any]) -> list[dict[str, Any]]:
        groups = query.get("filterGroups") or [{"filters": []}]
        # One group is what the connector sends; groups are OR'ed — keep the first.
        return list(groups[0].get("filters") or [])

    @staticmethod
    def _matches(values: dict[str, int], f: dict[str, Any]) -> bool:
        name, op = f.get("propertyName"), f.get("operator")
        if name not in values:
            return True
        raw = str(f.get("value"))
        try:  # epoch milliseconds, or ISO-8601 (both accepted by HubSpot)
            value = int(raw) if raw.isdigit() else int(
                datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return False
        have = values[name]
        return {"GTE": have >= value, "LTE": have <= value, "GT": have > value,
                "LT": have < value, "EQ": have == value, "NEQ": have != value}.get(op, False)

    # -- webhooks ----------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        assert self.oauth is not None
        return {"HUBSPOT_BASE_URL": self.url, "HUBSPOT_AUTH_URL": self.url,
                "HUBSPOT_CLIENT_ID": self.oauth.client_id,
                "HUBSPOT_CLIENT_SECRET": self.oauth.client_secret}

    _event_id = 0

    def webhook_events(self, account: str, n: int = 1, *, kind: str = "propertyChange",
                       stream: str = "contacts") -> list[dict[str, Any]]:
        obj = {"contacts": "contact", "companies": "company", "deals": "deal"}.get(stream,
                                                                                    "object")
        indexes = self.data.mutate(account, stream, n)
        events = []
        for index in indexes:
            type(self)._event_id += 1
            event: dict[str, Any] = {
                "eventId": 100 + type(self)._event_id, "subscriptionId": 12345,
                "portalId": int(account), "appId": 54321,
                "occurredAt": _ms(self.data.now), "subscriptionType": f"{obj}.{kind}",
                "attemptNumber": 0, "objectId": 1001 + index, "changeSource": "CRM",
            }
            if kind == "propertyChange":
                event.update(propertyName="firstname", propertyValue="Changed")
            elif kind == "creation":
                event["changeFlag"] = "NEW"
            elif kind == "merge":
                event.update(primaryObjectId=1001 + index, mergedObjectIds=[1001 + index + 1])
            events.append(event)
        return events

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        return json.dumps(events, separators=(",", ":")).encode()

    def sign_webhook(self, body: bytes, url: str, *, timestamp: float | None = None
                     ) -> dict[str, str]:
        ts = str(int((time.time() if timestamp is None else timestamp) * 1000))
        return {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": ts,
                "X-HubSpot-Signature-Version": "v3",
                "X-HubSpot-Signature-v3": sign_hubspot_v3(self.webhook_secret, "POST",
                                                          hubspot_uri(url), body, ts)}

