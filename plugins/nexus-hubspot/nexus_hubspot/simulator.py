"""A local simulator of the HubSpot APIs the connector uses, built to the shapes of
``reference/providers.md`` and ``providers-addendum.md`` (``nexus simulate hubspot``).

==============================================  ==============================================
``GET  /oauth/authorize``                       consent, approved at once: 302 with code+state
                                                (the consent host: ``HUBSPOT_AUTH_URL``)
``POST /oauth/v1/token``                        authorization_code / refresh_token (form); the
                                                answer carries ``hub_id``; refresh tokens do
                                                not rotate; ``BAD_AUTH_CODE`` /
                                                ``BAD_REFRESH_TOKEN`` / ``BAD_CLIENT_ID``
``GET  /oauth/v1/access-tokens/{token}``        token info (hub_id, scopes, expires_in)
``GET  /crm/v3/objects/{object}``               list: ``limit`` (default 10, max 100), opaque
                                                ``after`` (the next id, base64, URL-encoded, as
                                                HubSpot's), ``properties``, ``archived``
``GET  /crm/v3/objects/{object}/{id}``          one object (404 when archived or unknown)
``POST /crm/v3/objects/{object}/batch/read``    ``{"inputs": [{"id"}], "properties"}``; 207
                                                with ``errors`` for ids not found
``POST /crm/v3/objects/{object}/search``        filter groups (OR) of filters (AND): EQ, NEQ,
                                                GT, GTE, LT, LTE, BETWEEN, IN, NOT_IN,
                                                HAS_PROPERTY, NOT_HAS_PROPERTY on the object's
                                                last-modified property, ``hs_object_id`` and
                                                ``createdate`` (others: 400); one sort; numeric
                                                ``after``; ``total``; a 400 past 10,000 results;
                                                archived records never appear; index lag
``GET  /account-info/v3/details``               the portal (health checks)
==============================================  ==============================================

Every answer carries a ``Date`` header on the simulated clock (the connector bounds its delta
windows by the provider's clock). Object types are ``streams`` plus any an account was seeded
with (``--size tickets=40``); the last-modified property is ``lastmodifieddate`` for contacts
and ``hs_lastmodifieddate`` for every other type (addendum 1.1), and a search filtering on the
other one is a 400, as on a property that does not exist.

Rate limits per portal: 110 requests per 10 s (``TEN_SECONDLY_ROLLING``; non-search answers
carry ``X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds``), the search API 5 per
second in its own bucket (a 429 without rate-limit headers, as recorded), an optional daily
limit (``DAILY``, with ``-Daily``/``-Daily-Remaining`` headers), and per-portal tiers
(:meth:`HubSpotSimulator.set_tier`). An expired token is ``401 EXPIRED_AUTHENTICATION``, an
unknown one ``401 INVALID_AUTHENTICATION``. Webhooks are JSON arrays of events signed v3
(v1/v2 on request).
"""

from __future__ import annotations

import base64
import email.utils
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from nexus_core.testing.provider_sim import ProviderSimulator
from nexus_core.testing.sim_app import SimRateLimit, SimRequest, SimResponse
from nexus_core.testing.sim_data import SIM_EPOCH
from nexus_core.webhook_schemes import (
    hubspot_uri,
    sign_hubspot_v1,
    sign_hubspot_v2,
    sign_hubspot_v3,
)

#: The last-modified property of each object type (providers-addendum.md 1.1).
MODIFIED = {"contacts": "lastmodifieddate"}
DEFAULT_MODIFIED = "hs_lastmodifieddate"
SEARCH_CAP = 10_000
MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 6, 18
EPOCH_MS = int(SIM_EPOCH.timestamp() * 1000)
CLIENT_ID = "hubspot-sim-client"
CLIENT_SECRET = "hubspot-sim-client-secret"
#: Object ids of different types never collide (the standard suite checks ids across streams).
ID_BASES = {"contacts": 100_000_001, "companies": 200_000_001, "deals": 300_000_001,
            "tickets": 400_000_001, "products": 500_000_001, "line_items": 600_000_001}
#: The singular names of webhook subscription types.
SINGULAR = {"contacts": "contact", "companies": "company", "deals": "deal",
            "tickets": "ticket", "products": "product", "line_items": "line_item"}


def modified_property(obj: str) -> str:
    return MODIFIED.get(obj, DEFAULT_MODIFIED)


def ms(second: int) -> int:
    """A simulated second as epoch milliseconds."""
    return EPOCH_MS + second * 1000


def iso_ms(millis: int) -> str:
    at = datetime.fromtimestamp(millis / 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def http_date(second: int) -> str:
    return email.utils.format_datetime(SIM_EPOCH + timedelta(seconds=second), usegmt=True)


def error(status: int, message: str, category: str, **extra: Any) -> SimResponse:
    """HubSpot's generic error body."""
    return SimResponse.json({"status": "error", "message": message,
                             "correlationId": str(uuid.uuid4()), "category": category, **extra},
                            status)


def _token_body(issued: dict[str, Any]) -> dict[str, Any]:
    account = issued["account"]
    return {"access_token": issued["access_token"], "refresh_token": issued["refresh_token"],
            "expires_in": int(issued["expires_in"]), "token_type": "bearer",
            "hub_id": int(account) if account.isdigit() else account, "user_id": 9001,
            "scopes": list(issued["scopes"])}


def _token_error(code: str, description: str) -> SimResponse:
    """The OAuth v1 error statuses (addendum 1.6) for the harness's RFC codes."""
    text = description.lower()
    if code == "invalid_client":
        status = "BAD_CLIENT_ID"
    elif "redirect_uri" in text:
        status = "BAD_REDIRECT_URI"
    elif "authorization code" in text or "pkce" in text:
        status = "BAD_AUTH_CODE"
    elif "refresh token" in text:
        status = "BAD_REFRESH_TOKEN"
    else:
        status = "BAD_REQUEST"
    return SimResponse.json({"status": status, "message": description,
                             "correlationId": str(uuid.uuid4())}, 400)


def encode_after(object_id: int) -> str:
    """A list page token as HubSpot writes it: base64 of the next id, URL-encoded."""
    return quote(base64.b64encode(f"{object_id}\n".encode()).decode(), safe="")


def decode_after(token: str) -> int | None:
    try:
        return int(base64.b64decode(unquote(token), validate=True).decode().strip())
    except (ValueError, UnicodeDecodeError):
        return None


class HubSpotSimulator(ProviderSimulator):
    provider_id = "hubspot"
    streams = {"contacts": 250, "companies": 120, "deals": 90, "tickets": 40}
    oauth_options = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "token_lifetime": 1800, "rotate_refresh": False,
                     "token_body": _token_body, "error": _token_error}
    webhook_secret = CLIENT_SECRET  # HubSpot signs with the app's client secret
    demo_account = "62515"

    #: Search results changed less than this many simulated seconds ago are not visible yet
    #: (the search index lags behind writes); 0 = none.
    search_lag = 0
    #: Requests per portal per day (``None``: no daily limit, as for OAuth apps).
    daily_limit: int | None = None

    # -- accounts and records ---------------------------------------------------------------

    def add_account(self, account: str | None = None) -> str:
        return super().add_account(account or str(62515 + len(self.accounts)))

    def id_base(self, obj: str) -> int:
        if obj in ID_BASES:
            return ID_BASES[obj]
        others = sorted(o for o in self.data.sizes if o not in ID_BASES)
        return 700_000_001 + 100_000_000 * others.index(obj)

    def object_id(self, obj: str, index: int) -> int:
        return self.id_base(obj) + index

    def make_record(self, stream: str, index: int, version: int, account: str
                    ) -> dict[str, Any]:
        first = ("Ada", "Alan", "Grace", "Edsger")[index % 4]
        props = {
            "contacts": {"email": f"{first.lower()}.{index}@example.com", "firstname": first,
                         "lastname": f"Test{index}"},
            "companies": {"name": f"Company {index}", "domain": f"c{index}.example.com"},
            "deals": {"dealname": f"Deal {index}", "amount": str(1000 + index * 10),
                      "dealstage": ("appointmentscheduled", "closedwon")[version % 2],
                      "pipeline": "default"},
            "tickets": {"subject": f"Ticket {index}", "content": "It does not work",
                        "hs_pipeline": "0", "hs_pipeline_stage": "1"},
        }.get(stream, {"name": f"{stream} {index}"})
        if version:
            props["nexus_version"] = str(version)
        oid = str(self.object_id(stream, index))
        return {"id": oid, "hs_object_id": oid, "props": props, "version": version}

    def _numbers(self, account: str, obj: str, index: int) -> dict[str, int]:
        """The filterable properties of an object, as numbers (dates in epoch ms)."""
        return {"hs_object_id": self.object_id(obj, index), "createdate": ms(index),
                modified_property(obj): ms(self.data.version(account, obj, index)[1])}

    def _values(self, account: str, obj: str, index: int) -> dict[str, Any]:
        """Every property of an object (dates and ids as numbers)."""
        raw = self.data.make(obj, index, self.data.version(account, obj, index)[0], account)
        return {**raw["props"], **self._numbers(account, obj, index)}

    def _object(self, account: str, obj: str, index: int, props: list[str] | None,
                *, archived_at: int | None = None) -> dict[str, Any]:
        values = self._values(account, obj, index)
        modified = iso_ms(values[modified_property(obj)])
        created = iso_ms(values["createdate"])
        shown_values = {**values, "hs_object_id": str(values["hs_object_id"]),
                        "createdate": created, modified_property(obj): modified}
        wanted = props or [k for k in values if k != "nexus_version"]
        shown = {k: shown_values[k] for k in wanted if k in shown_values}
        shown.update({"hs_object_id": shown_values["hs_object_id"], "createdate": created,
                      modified_property(obj): modified})
        out = {"id": str(values["hs_object_id"]), "properties": shown, "createdAt": created,
               "updatedAt": modified, "archived": archived_at is not None}
        if archived_at is not None:
            out["archivedAt"] = iso_ms(ms(archived_at))
        return out

    def expected_ids(self, stream: str, account: str) -> set[str]:
        return {str(self.object_id(stream, i)) for i in self.data.indexes(account, stream)}

    def mutate(self, stream: str, account: str, n: int, **kw: Any) -> set[str]:
        return {str(self.object_id(stream, i))
                for i in self.data.mutate(account, stream, n, **kw)}

    def delete(self, stream: str, account: str, n: int) -> set[str]:
        """Archive ``n`` records (HubSpot's deletion); their ids."""
        return {str(self.object_id(stream, i)) for i in self.data.delete(account, stream, n)}

    archive = delete

    def set_tier(self, account: str, *, per_ten_seconds: int, search_per_second: int = 5
                 ) -> None:
        """Put a portal on another API tier (HubSpot's API limit increase add-on)."""
        assert self.app.rate_limit is not None
        self.app.rate_limit.set_limit(account, per_ten_seconds, 10.0)
        self.app.rate_limit.set_limit(account, search_per_second, 1.0, bucket="search")

    # -- the API ----------------------------------------------------------------------------

    def build(self) -> None:
        assert self.oauth is not None
        self.oauth.mount(self.app, authorize_path="/oauth/authorize",
                         token_path="/oauth/v1/token",
                         default_account=lambda: self.default_account)
        self.app.unauthorized = self._unauthorized
        self.app.rate_limit = SimRateLimit(
            110, 10.0, buckets={"search": (5, 1.0)}, bucket_of=self._bucket,
            too_many=self._too_many)
        self.app.after = self._headers
        self._daily: dict[str, int] = {}
        self._daily_lock = threading.Lock()
        self._event_id = 0

        @self.app.route("GET", "/oauth/v1/access-tokens/{token}", auth=False)
        def token_info(req: SimRequest) -> SimResponse:
            assert self.oauth is not None
            account = self.oauth.validate(req.params["token"])
            if account is None:
                return error(404, "The access token is expired or not found",
                             "EXPIRED_AUTHENTICATION")
            return SimResponse.json({
                "token": req.params["token"], "user": "user@example.com",
                "hub_domain": f"portal-{account}.example.com", "scopes": [],
                "hub_id": int(account) if account.isdigit() else account, "app_id": 54321,
                "expires_in": 1800, "user_id": 9001, "token_type": "access"})

        @self.app.route("GET", "/account-info/v3/details")
        def details(req: SimRequest) -> SimResponse:
            account = self.authenticated_account(req)
            return self._daily_check(req) or SimResponse.json({
                "portalId": int(account) if account.isdigit() else account,
                "timeZone": "Europe/Berlin", "companyCurrency": "EUR", "utcOffset": "+01:00",
                "accountType": "STANDARD", "dataHostingLocation": "eu1",
                "uiDomain": "app-eu1.hubspot.com"})

        @self.app.route("GET", "/crm/v3/objects/{object}")
        def listing(req: SimRequest) -> SimResponse:
            return self._daily_check(req) or self._list(req)

        @self.app.route("GET", "/crm/v3/objects/{object}/{id}")
        def one(req: SimRequest) -> SimResponse:
            return self._daily_check(req) or self._one(req)

        @self.app.route("POST", "/crm/v3/objects/{object}/batch/read")
        def batch_read(req: SimRequest) -> SimResponse:
            return self._daily_check(req) or self._batch_read(req)

        @self.app.route("POST", "/crm/v3/objects/{object}/search")
        def search(req: SimRequest) -> SimResponse:
            return self._daily_check(req) or self._search(req)

    def _unauthorized(self, req: SimRequest) -> SimResponse:
        assert self.oauth is not None
        if self.oauth.token_status(req.bearer) == "expired":
            return error(401, "The OAuth token used to make this call expired 5 minute(s) ago.",
                         "EXPIRED_AUTHENTICATION")
        return error(401, "Authentication credentials not found. This API supports OAuth 2.0 "
                     "authentication.", "INVALID_AUTHENTICATION")

    @staticmethod
    def _bucket(req: SimRequest) -> str:
        return "search" if req.path.endswith("/search") else "default"

    @staticmethod
    def _too_many(retry_after: float, bucket: str) -> SimResponse:
        if bucket == "search":  # recorded: no rate-limit headers, no Retry-After
            return error(429, "You have reached your secondly limit.", "RATE_LIMITS")
        return SimResponse.json({"status": "error",
                                 "message": "You have reached your ten_secondly_rolling limit.",
                                 "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                                 "policyName": "TEN_SECONDLY_ROLLING"}, 429)

    def _headers(self, req: SimRequest, resp: SimResponse, account: str) -> SimResponse:
        resp.headers["Date"] = http_date(self.data.now)
        if self._bucket(req) == "default" and self.app.rate_limit is not None:
            limit, remaining, window = self.app.rate_limit.remaining(account)
            resp.headers.update({"X-HubSpot-RateLimit-Max": str(limit),
                                 "X-HubSpot-RateLimit-Remaining": str(remaining),
                                 "X-HubSpot-RateLimit-Interval-Milliseconds":
                                     str(int(window * 1000))})
            if self.daily_limit is not None:  # OAuth apps have none, private apps do
                with self._daily_lock:
                    used = self._daily.get(account, 0)
                resp.headers.update({
                    "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
                    "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - used))})
        return resp

    def _daily_check(self, req: SimRequest) -> SimResponse | None:
        if self.daily_limit is None:
            return None
        account = self.authenticated_account(req)
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
        """Midnight in the portal's time zone: the daily budget starts again."""
        with self._daily_lock:
            self._daily.clear()

    def _object_type(self, req: SimRequest) -> str | SimResponse:
        obj = req.params["object"]
        if obj not in self.data.sizes:
            return error(404, f"Unable to infer object type from: {obj}", "OBJECT_NOT_FOUND")
        return obj

    def _list(self, req: SimRequest) -> SimResponse:
        account, obj = self.authenticated_account(req), self._object_type(req)
        if isinstance(obj, SimResponse):
            return obj
        try:
            limit = int(req.query.get("limit") or 10)
        except ValueError:
            return error(400, "Invalid input JSON : limit", "VALIDATION_ERROR")
        if not 1 <= limit <= 100:
            return error(400, "limit must be between 1 and 100", "VALIDATION_ERROR")
        start_id = 0
        if req.query.get("after"):
            decoded = decode_after(req.query["after"])
            if decoded is None:
                return error(400, "Invalid after", "VALIDATION_ERROR")
            start_id = decoded
        props = [p for p in (req.query.get("properties") or "").split(",") if p] or None
        archived = req.query.get("archived", "false").lower() == "true"
        base = self.id_base(obj)
        first = max(0, start_id - base)
        if archived:
            gone = self.data.deleted(account, obj)
            order = [i for i in sorted(gone) if i >= first]
            rows = [self._object(account, obj, i, props, archived_at=gone[i])
                    for i in order[:limit]]
        else:
            order = []
            for i in range(first, self.data.count(account, obj)):  # keyset: from the token
                if not self.data.is_deleted(account, obj, i):
                    order.append(i)
                    if len(order) > limit:
                        break
            rows = [self._object(account, obj, i, props) for i in order[:limit]]
        body: dict[str, Any] = {"results": rows}
        if len(order) > limit:
            after = encode_after(base + order[limit])
            body["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return SimResponse.json(body)

    def _one(self, req: SimRequest) -> SimResponse:
        account, obj = self.authenticated_account(req), self._object_type(req)
        if isinstance(obj, SimResponse):
            return obj
        index = self._live_index(account, obj, req.params["id"])
        if index is None:
            return error(404, "Object not found.  objectId are usually numeric.",
                         "OBJECT_NOT_FOUND")
        props = [p for p in (req.query.get("properties") or "").split(",") if p] or None
        return SimResponse.json(self._object(account, obj, index, props))

    def _live_index(self, account: str, obj: str, object_id: Any) -> int | None:
        try:
            index = int(str(object_id)) - self.id_base(obj)
        except ValueError:
            return None
        if not 0 <= index < self.data.count(account, obj) or \
                self.data.is_deleted(account, obj, index):
            return None
        return index

    def _batch_read(self, req: SimRequest) -> SimResponse:
        account, obj = self.authenticated_account(req), self._object_type(req)
        if isinstance(obj, SimResponse):
            return obj
        query = req.json()
        inputs = query.get("inputs") if isinstance(query, dict) else None
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100 or \
                not all(isinstance(i, dict) and "id" in i for i in inputs):
            return error(400, "inputs must be 1 to 100 objects with an id", "VALIDATION_ERROR")
        props = query.get("properties") or None
        results, missing = [], []
        for item in inputs:
            index = self._live_index(account, obj, item["id"])
            if index is None:
                missing.append(str(item["id"]))
            else:
                results.append(self._object(account, obj, index, props))
        now = iso_ms(ms(self.data.now))
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": now,
                                "completedAt": now}
        if missing:
            body.update(numErrors=1, errors=[{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some objects, they may be deleted or not exist.",
                "context": {"ids": missing}}])
            return SimResponse.json(body, 207)
        return SimResponse.json(body)

    # -- search ---------------------------------------------------------------------------

    def _search(self, req: SimRequest) -> SimResponse:
        account, obj = self.authenticated_account(req), self._object_type(req)
        if isinstance(obj, SimResponse):
            return obj
        query = req.json()
        if not isinstance(query, dict):
            return error(400, "Invalid input JSON on line 1", "VALIDATION_ERROR")
        try:
            limit = int(query.get("limit") or 10)
            offset = int(query.get("after") or 0)
        except (TypeError, ValueError):
            return error(400, "limit and after must be integers", "VALIDATION_ERROR")
        if not 1 <= limit <= 200:
            return error(400, "limit must be between 1 and 200", "VALIDATION_ERROR")
        if offset < 0 or offset + limit > SEARCH_CAP:
            return error(400, "Search results are limited to 10,000 total results for any "
                         "given query.", "VALIDATION_ERROR")
        groups = query.get("filterGroups") or []
        problem = self._check_filters(obj, groups)
        if problem:
            return error(400, problem, "VALIDATION_ERROR")
        sorts = query.get("sorts") or [{"propertyName": "hs_object_id",
                                        "direction": "ASCENDING"}]
        sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": str(sorts[0])}
        prop = sort.get("propertyName", "hs_object_id")
        if prop not in self._filterable(obj):
            return error(400, f"Property {prop} cannot be sorted on", "VALIDATION_ERROR")
        visible_until = self.data.now - self.search_lag
        rows = []
        for index in self.data.indexes(account, obj):
            if self.data.version(account, obj, index)[1] > visible_until:
                continue  # changed too recently: not in the search index yet
            values = self._numbers(account, obj, index)
            if not groups or any(all(self._matches(values, f) for f in g.get("filters") or [])
                                 for g in groups):
                rows.append((values, index))
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
    def _filterable(obj: str) -> set[str]:
        return {modified_property(obj), "hs_object_id", "createdate"}

    def _check_filters(self, obj: str, groups: Any) -> str | None:
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            return f"filterGroups must be a list of at most {MAX_GROUPS} groups"
        total = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or len(filters) > MAX_FILTERS_PER_GROUP:
                return f"a filter group holds at most {MAX_FILTERS_PER_GROUP} filters"
            total += len(filters)
            for f in filters:
                if not isinstance(f, dict):
                    return "a filter must be an object"
                if f.get("propertyName") not in self._filterable(obj):
                    return (f"There was a problem with the request: property "
                            f"{f.get('propertyName')!r} does not exist on {obj} (or cannot be "
                            "filtered here)")
                if f.get("operator") not in _OPERATORS:
                    return f"Unknown operator {f.get('operator')!r}"
        if total > MAX_FILTERS:
            return f"at most {MAX_FILTERS} filters in all"
        return None

    @staticmethod
    def _matches(values: dict[str, Any], f: dict[str, Any]) -> bool:
        have = values.get(f["propertyName"])
        op = f["operator"]
        if op == "HAS_PROPERTY":
            return have is not None
        if op == "NOT_HAS_PROPERTY":
            return have is None
        if op in ("IN", "NOT_IN"):
            wanted = {_number(v) for v in f.get("values") or []}
            return (have in wanted) == (op == "IN")
        value = _number(f.get("value"))
        if value is None or have is None:
            return False
        if op == "BETWEEN":
            high = _number(f.get("highValue"))
            return high is not None and value <= have <= high
        return _OPERATORS[op](have, value)

    # -- pointing the connector here -------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {"HUBSPOT_BASE_URL": self.url, "HUBSPOT_AUTH_URL": self.url,
                "HUBSPOT_CLIENT_ID": CLIENT_ID, "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET}

    # -- webhooks ---------------------------------------------------------------------------

    def webhook_events(self, account: str, n: int = 1, *, kind: str = "propertyChange",
                       stream: str = "contacts", attempt: int = 0) -> list[dict[str, Any]]:
        """``n`` events of ``<object>.<kind>`` (creation, propertyChange, deletion, merge,
        restore) about ``stream`` records of ``account``; the records change (or are
        archived, for deletion) as the events say."""
        if kind == "deletion":
            ids = sorted(self.delete(stream, account, n))
            indexes = [int(i) - self.id_base(stream) for i in ids]
        else:
            indexes = self.data.mutate(account, stream, n)
        events = []
        for index in indexes:
            self._event_id += 1
            object_id = self.object_id(stream, index)
            event: dict[str, Any] = {
                "eventId": 1_000_000 + self._event_id, "subscriptionId": 12345,
                "portalId": int(account) if account.isdigit() else account, "appId": 54321,
                "occurredAt": ms(self.data.now), "subscriptionType":
                    f"{SINGULAR.get(stream, 'object')}.{kind}",
                "attemptNumber": attempt, "objectId": object_id, "changeSource": "CRM",
            }
            if kind == "propertyChange":
                event.update(propertyName="firstname", propertyValue="Changed")
            elif kind == "creation":
                event["changeFlag"] = "NEW"
            elif kind == "merge":
                event.update(primaryObjectId=object_id, mergedObjectIds=[object_id + 1])
            events.append(event)
        return events

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        return json.dumps(events, separators=(",", ":")).encode()

    def sign_webhook(self, body: bytes, url: str, *, timestamp: float | None = None,
                     version: str = "v3") -> dict[str, str]:
        """HubSpot's headers for ``body`` posted to ``url``: v3 (HMAC over method, URI, body
        and a millisecond timestamp), or the older v1/v2 (``version``)."""
        headers = {"Content-Type": "application/json"}
        if version == "v1":
            return {**headers, "X-HubSpot-Signature-Version": "v1",
                    "X-HubSpot-Signature": sign_hubspot_v1(self.webhook_secret, body)}
        if version == "v2":
            return {**headers, "X-HubSpot-Signature-Version": "v2",
                    "X-HubSpot-Signature": sign_hubspot_v2(self.webhook_secret, "POST", url,
                                                           body)}
        ts = str(int((time.time() if timestamp is None else timestamp) * 1000))
        return {**headers, "X-HubSpot-Request-Timestamp": ts,
                "X-HubSpot-Signature-v3": sign_hubspot_v3(self.webhook_secret, "POST",
                                                          hubspot_uri(url), body, ts)}


def _number(value: Any) -> int | None:
    """A filter value: epoch milliseconds or an id as a number or text, or ISO-8601."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip() if value is not None else ""
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000)


_OPERATORS = {
    "EQ": lambda have, value: have == value, "NEQ": lambda have, value: have != value,
    "GT": lambda have, value: have > value, "GTE": lambda have, value: have >= value,
    "LT": lambda have, value: have < value, "LTE": lambda have, value: have <= value,
    "BETWEEN": None, "IN": None, "NOT_IN": None, "HAS_PROPERTY": None, "NOT_HAS_PROPERTY": None,
}
