"""A local simulator of the Salesforce APIs the connector uses, built to the shapes of
``reference/providers.md`` and ``providers-addendum.md`` (``nexus simulate salesforce``).

Salesforce has no single API host, and neither has the simulator: each host is a port of its
own on 127.0.0.1.

=====================  ===========================================================================
host                   what it is
=====================  ===========================================================================
``sim.url``            login.salesforce.com: production orgs log in here; the control API
``sim.sandbox_url``    test.salesforce.com: sandbox orgs log in here (and only here)
``org.instance_url``   one per org: its instance and My Domain — the REST API of that org only
                       (another org's session is ``INVALID_SESSION_ID`` there); OAuth too
=====================  ===========================================================================

===================================================  ==============================================
``GET  /services/oauth2/authorize``                  consent, approved at once for ``?account=``:
                                                     302 with code + state; an org on the wrong
                                                     login host is refused
``POST /services/oauth2/token``                      authorization_code (PKCE) / refresh_token:
                                                     ``access_token, refresh_token, signature,
                                                     scope, instance_url, id, token_type,
                                                     issued_at`` — no ``expires_in``; a refresh
                                                     returns no refresh token unless rotation is
                                                     on; codes and sandbox refresh tokens only at
                                                     the host that issued them; ``invalid_grant``
``GET  /services/data/vXX.X/query?q=``               SOQL: ``SELECT fields|FIELDS(STANDARD) FROM
                                                     S [WHERE c AND c ...] [ORDER BY f [ASC|DESC],
                                                     ...] [LIMIT n]`` with ``= != < <= > >=`` on
                                                     Id and the datetime fields, ``Id IN (...)``;
                                                     ``Sforce-Query-Options: batchSize=N``
                                                     (200-2000, default 2000); ``nextRecordsUrl``
                                                     until ``done``; INVALID_FIELD, INVALID_TYPE,
                                                     MALFORMED_QUERY
``GET  /services/data/vXX.X/query/{locator}-{n}``    the next page; a locator idle past
                                                     ``locator_ttl`` (or expired on demand) is
                                                     ``INVALID_QUERY_LOCATOR``
``GET  /services/data/vXX.X/sobjects/{S}/deleted/``  ``?start=&end=``: ``deletedRecords``,
                                                     ``earliestDateAvailable``,
                                                     ``latestDateCovered``; a start older than the
                                                     15-day recycle bin: INVALID_REPLICATION_DATE
``GET  /services/data/vXX.X/limits``                 ``DailyApiRequests`` (with the app's own
                                                     allocation), ``DailyBulkApiRequests``, ...
===================================================  ==============================================

Every API answer carries ``Sforce-Limit-Info: api-usage=used/max`` (with
``; per-app-api-usage=used/max(appName=...)`` when the org gives the app its own allocation)
and a ``Date`` on the simulated clock. Each org has a daily quota: past it, every request is
``403 [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]``
until :meth:`SalesforceSimulator.reset_daily`. Sessions end at the session timeout or whenever a
test says (``sim.oauth.expire_after(n)``, ``expire_access_tokens()``), without notice: the next
request is ``401 [{"message": "Session expired or invalid", "errorCode":
"INVALID_SESSION_ID"}]``. Outbound Messages are SOAP envelopes posted unsigned; the sender
counts a delivery as done only when answered with the exact ack, and keeps the others for
:meth:`SalesforceSimulator.redeliver`, as Salesforce retries for 24 hours.

The clock: seeded records were created a second apart, until a second before the simulator
started; every change after that moves the clock one millisecond (several changes may share
one, ``same_second=True``), so several changes share the seconds a ``Date`` header shows.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import attrs

from nexus_core.testing.provider_sim import ProviderSimulator
from nexus_core.testing.sim_app import SimRequest, SimResponse
from nexus_core.testing.simulator import SimulatorServer
from nexus_salesforce import outbound

API_VERSION = "v61.0"
CLIENT_ID = "3MVG9sim.nexus.salesforce.simulator"
CLIENT_SECRET = "salesforce-sim-consumer-secret"
USER_ID = "0055g000004SimUAAU"
APP_NAME = "nexus-sim"
PREFIXES = {"Account": "001", "Contact": "003", "Opportunity": "006", "Lead": "00Q",
            "Case": "500"}
#: The fields each sObject has here (beside the system fields every one has).
FIELDS: dict[str, tuple[str, ...]] = {
    "Account": ("Name", "Type", "Industry", "Website", "Phone", "BillingCity",
                "BillingCountry", "OwnerId", "AnnualRevenue", "NumberOfEmployees",
                "Description"),
    "Contact": ("FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "OwnerId",
                "Description"),
    "Opportunity": ("Name", "AccountId", "StageName", "Amount", "CloseDate", "Probability",
                    "IsClosed", "IsWon", "OwnerId", "Description"),
}
#: The fields of any other sObject here.
OTHER_FIELDS = ("Name", "Description")
SYSTEM = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
DATETIMES = ("CreatedDate", "LastModifiedDate", "SystemModstamp")
RECYCLE_BIN = timedelta(days=15)


def error(status: int, code: str, message: str) -> SimResponse:
    """Salesforce's REST error: a JSON array of ``{message, errorCode}``."""
    return SimResponse.json([{"message": message, "errorCode": code}], status)


def iso(at: datetime) -> str:
    """``2024-01-01T00:00:00.000+0000``: how Salesforce writes datetimes."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}+0000"


def parse_when(text: str) -> datetime | None:
    """A SOQL datetime literal or an ISO-8601 query parameter (``Z`` or an offset)."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                        r"(?:\.[0-9]{1,3})?(?:Z|[+-][0-9]{2}:?[0-9]{2})", text or ""):
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.astimezone(UTC)


@attrs.define
class Org:
    id: str
    number: int
    sandbox: bool
    server: SimulatorServer
    daily_limit: int
    per_app_limit: int | None = None
    used: int = 0
    per_app_used: int = 0

    @property
    def instance_url(self) -> str:
        return self.server.url


@attrs.define
class _Locator:
    org: str
    obj: str
    rows: list[int]
    fields: list[str]
    batch: int
    last: float


@attrs.define
class Pending:
    """An Outbound Message not acknowledged yet (Salesforce retries it for 24 hours)."""

    url: str
    body: bytes
    attempts: int = 1


_SELECT = re.compile(
    r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<obj>[A-Za-z][A-Za-z0-9_]*)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+ORDER\s+BY\s+(?P<order>.+?))?"
    r"(?:\s+LIMIT\s+(?P<limit>[0-9]+))?\s*", re.IGNORECASE | re.DOTALL)
_COND = re.compile(r"\s*(?P<field>[A-Za-z][A-Za-z0-9_]*)\s*(?P<op>!=|>=|<=|=|>|<)\s*"
                   r"(?P<value>'[^'\\]*'|[0-9][0-9TZ:.+-]*)\s*")
_IN = re.compile(r"\s*(?P<field>[A-Za-z][A-Za-z0-9_]*)\s+IN\s*\((?P<values>[^)]*)\)\s*",
                 re.IGNORECASE)
_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


class QueryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class SalesforceSimulator(ProviderSimulator):
    provider_id = "salesforce"
    streams = {"Account": 450, "Contact": 520, "Opportunity": 260}
    id_field = "Id"
    oauth_options = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "token_lifetime": 7200, "rotate_refresh": False}
    webhook_signed = False  # Outbound Messages carry no signature
    webhook_timestamped = False
    demo_account = "00D5g0000000001EAA"

    #: Requests an org may make per day (until :meth:`reset_daily`).
    daily_limit = 100_000
    #: Seconds a query locator lives without being used.
    locator_ttl = 900.0
    #: Sign token responses with this key instead of the client secret (a tampered answer).
    signature_key: str | None = None
    #: Answer token requests with this instance URL instead of the org's.
    instance_url_override: str | None = None

    # -- setup ------------------------------------------------------------------------------

    def build(self) -> None:
        assert self.oauth is not None
        self.orgs: dict[str, Org] = {}
        self._lock = threading.Lock()
        self._started = False
        self._sandbox = SimulatorServer(self.app)
        self._hosts = {self._host(self._server): "login", self._host(self._sandbox): "test"}
        self._codes: dict[str, str] = {}  # authorization code -> host that issued it
        self._refresh_orgs: dict[str, str] = {}  # refresh token -> org
        self._locators: dict[str, _Locator] = {}
        self._seq = 0
        self.epoch: datetime | None = None
        self.outbox: list[Pending] = []
        self.acknowledged = 0
        #: (host, org, method, path, status) of every API answer, in order.
        self.api_log: list[tuple[str, str | None, str, str, int]] = []
        #: The SOQL of every query asked for (first pages), in order.
        self.soql_log: list[str] = []
        #: (host, what, status) of every OAuth request: ``authorize`` or the grant type.
        self.oauth_log: list[tuple[str, str, int]] = []
        self.oauth.token_body = self._token_body
        self.oauth.error = self._token_error
        self.app.authenticate = self._authenticate
        self.app.unauthorized = self._unauthorized
        self.app.after = self._after
        seeded = self.data.now
        self.epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seeded + 1)
        self._seeded = seeded

        @self.app.route("GET", "/services/oauth2/authorize", auth=False)
        def authorize(req: SimRequest) -> SimResponse:
            return self._authorize(req)

        @self.app.route("POST", "/services/oauth2/token", auth=False)
        def token(req: SimRequest) -> SimResponse:
            return self._token(req)

        @self.app.route("GET", "/services/data/{version}/query")
        def query(req: SimRequest) -> SimResponse:
            return self._quota(req) or self._query(req)

        @self.app.route("GET", "/services/data/{version}/query/{locator}")
        def more(req: SimRequest) -> SimResponse:
            return self._quota(req) or self._more(req)

        @self.app.route("GET", "/services/data/{version}/sobjects/{sobject}/deleted/")
        def deleted(req: SimRequest) -> SimResponse:
            return self._quota(req) or self._deleted(req)

        @self.app.route("GET", "/services/data/{version}/sobjects/{sobject}/deleted")
        def deleted_no_slash(req: SimRequest) -> SimResponse:
            return self._quota(req) or self._deleted(req)

        @self.app.route("GET", "/services/data/{version}/limits")
        def limits(req: SimRequest) -> SimResponse:
            return self._quota(req) or self._limits(req)

        self._mount_salesforce_control()

    @staticmethod
    def _host(server: SimulatorServer) -> str:
        return f"{server.host}:{server.port}"

    @property
    def sandbox_url(self) -> str:
        """test.salesforce.com: where sandbox orgs log in."""
        return self._sandbox.url

    def start(self) -> SalesforceSimulator:
        super().start()
        self._start_others()
        return self

    def _start_others(self) -> None:
        with self._lock:
            self._started = True
            servers = [self._sandbox, *(o.server for o in self.orgs.values())]
        for server in servers:
            server.start()

    def serve_forever(self) -> None:
        self._start_others()
        super().serve_forever()

    def stop(self) -> None:
        with self._lock:
            started, self._started = self._started, False
        if started:  # a server that never served cannot be shut down
            for server in [self._sandbox, *(o.server for o in self.orgs.values())]:
                server.stop()
        super().stop()

    # -- orgs -------------------------------------------------------------------------------

    def add_account(self, account: str | None = None, *, sandbox: bool = False,
                    daily_limit: int | None = None, per_app_limit: int | None = None) -> str:
        """An org with its seeded records and its own instance (host); ``sandbox`` orgs log
        in at :attr:`sandbox_url`."""
        number = len(self.orgs) + 1
        org_id = account or f"00D5g{number:010d}EAA"
        server = SimulatorServer(self.app)
        org = Org(org_id, number, sandbox, server, daily_limit or self.daily_limit,
                  per_app_limit)
        with self._lock:
            self.orgs[org_id] = org
            self._hosts[self._host(server)] = f"org:{org_id}"
            started = self._started
        if started:
            server.start()
        return super().add_account(org_id)

    def org(self, account: str | None = None) -> Org:
        return self.orgs[account or self.default_account]

    def install_config(self, account: str) -> dict[str, Any]:
        """The smallest batches (more pages per test); a sandbox org's login host."""
        config: dict[str, Any] = {"batch_size": 200}
        if self.orgs[account].sandbox:
            config["login_url"] = self.sandbox_url
        return config

    def env(self) -> dict[str, str]:
        return {"SALESFORCE_CLIENT_ID": CLIENT_ID, "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
                "SALESFORCE_AUTHORIZE_URL": f"{self.url}/services/oauth2/authorize",
                "SALESFORCE_TOKEN_URL": f"{self.url}/services/oauth2/token",
                # the simulator's hosts as login hosts and instance URLs
                "SALESFORCE_AUTH_BASE_URLS": "http://127.0.0.1:*"}

    def credentials(self, account: str) -> Any:
        from nexus_core.models import Credentials, utcnow

        assert self.oauth is not None
        issued = self.oauth.issue_tokens(account)
        self._refresh_orgs[issued["refresh_token"]] = account
        return Credentials(access_token=issued["access_token"],
                           refresh_token=issued["refresh_token"],
                           expires_at=utcnow() + timedelta(seconds=issued["expires_in"]),
                           extra={"account_id": account,
                                  "instance_url": self.orgs[account].instance_url})

    def set_daily_limit(self, account: str, limit: int) -> None:
        with self._lock:
            self.orgs[account].daily_limit = limit

    def reset_daily(self, account: str | None = None) -> None:
        """A day later: the org's (every org's) count of requests starts again."""
        with self._lock:
            for org in self.orgs.values():
                if account is None or org.id == account:
                    org.used = org.per_app_used = 0

    def expire_locators(self) -> None:
        """Every open query locator is gone (idle too long, or the org's limit of open
        cursors reached)."""
        with self._lock:
            self._locators.clear()

    # -- records ----------------------------------------------------------------------------

    def stamp(self, tick: int) -> datetime:
        """The simulated time of a data-set tick: seeded records a second apart, every change
        after them a millisecond."""
        assert self.epoch is not None
        if tick <= self._seeded:
            return self.epoch + timedelta(seconds=tick)
        return self.epoch + timedelta(seconds=self._seeded, milliseconds=tick - self._seeded)

    @property
    def now(self) -> datetime:
        return self.stamp(self.data.now)

    def prefix(self, obj: str) -> str:
        if obj in PREFIXES:
            return PREFIXES[obj]
        others = sorted(o for o in self.data.sizes if o not in PREFIXES)
        return "a0" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[others.index(obj) % 26]

    def record_id(self, obj: str, org: str, index: int) -> str:
        return f"{self.prefix(obj)}{self.orgs[org].number % 100:02d}000{index:07d}AAA"

    def index_of(self, obj: str, org: str, record_id: str) -> int | None:
        expected = f"{self.prefix(obj)}{self.orgs[org].number % 100:02d}000"
        if not record_id.startswith(expected) or not record_id[8:15].isdigit():
            return None
        return int(record_id[8:15])

    def make_record(self, stream: str, index: int, version: int, account: str
                    ) -> dict[str, Any]:
        first = ("Ada", "Alan", "Grace", "Edsger")[index % 4]
        owner = USER_ID
        account_id = self.record_id("Account", account, index % self.data.sizes["Account"]) \
            if self.data.sizes.get("Account") else None
        values: dict[str, Any] = {
            "Account": {"Name": f"Account {index}", "Type": "Customer - Direct",
                        "Industry": ("Technology", "Energy", "Retail")[index % 3],
                        "Website": f"https://a{index}.example.com", "Phone": "555-0100",
                        "BillingCity": "Lyon", "BillingCountry": "France", "OwnerId": owner,
                        "AnnualRevenue": 1000000 + index, "NumberOfEmployees": 10 + index},
            "Contact": {"FirstName": first, "LastName": f"Test{index}",
                        "Email": f"{first.lower()}.{index}@example.com", "Phone": "555-0101",
                        "Title": "Engineer", "AccountId": account_id, "OwnerId": owner},
            "Opportunity": {"Name": f"Deal {index}", "AccountId": account_id,
                            "StageName": ("Prospecting", "Closed Won")[version % 2],
                            "Amount": 1000.0 + index * 10, "CloseDate": "2025-06-30",
                            "Probability": (10, 100)[version % 2],
                            "IsClosed": version % 2 == 1, "IsWon": version % 2 == 1,
                            "OwnerId": owner},
        }.get(stream, {"Name": f"{stream} {index}"})
        values["Description"] = f"version {version}" if version else None
        return {"Id": self.record_id(stream, account, index), **values}

    def fields_of(self, obj: str) -> list[str]:
        return [*SYSTEM, *FIELDS.get(obj, OTHER_FIELDS)]

    def _row(self, org: str, obj: str, index: int) -> dict[str, Any]:
        version, tick = self.data.version(org, obj, index)
        row = self.make_record(obj, index, version, org)
        changed, created = self.stamp(tick), self.stamp(index)
        row.update(IsDeleted=False, CreatedDate=iso(created), LastModifiedDate=iso(changed),
                   SystemModstamp=iso(changed))
        return row

    def _render(self, org: str, obj: str, index: int, fields: list[str]) -> dict[str, Any]:
        row = self._row(org, obj, index)
        out: dict[str, Any] = {"attributes": {
            "type": obj, "url": f"/services/data/{API_VERSION}/sobjects/{obj}/{row['Id']}"}}
        for name in fields:
            out[name] = row.get(name)
        return out

    def expected_ids(self, stream: str, account: str) -> set[str]:
        return {self.record_id(stream, account, i) for i in self.data.indexes(account, stream)}

    def mutate(self, stream: str, account: str, n: int, **kw: Any) -> set[str]:
        return {self.record_id(stream, account, i)
                for i in self.data.mutate(account, stream, n, **kw)}

    def create(self, stream: str, account: str, n: int) -> set[str]:
        return {self.record_id(stream, account, i) for i in self.data.create(account, stream, n)}

    def delete(self, stream: str, account: str, n: int) -> set[str]:
        return {self.record_id(stream, account, i) for i in self.data.delete(account, stream, n)}

    def commit_late(self, stream: str, account: str, like: str, n: int) -> set[str]:
        """Change ``n`` other records with the very ``SystemModstamp`` record ``like`` has — as
        a transaction that committed after a delta read ``like`` but got the same timestamp.
        Their ids."""
        index = self.index_of(stream, account, like)
        assert index is not None, like
        tick = self.data.version(account, stream, index)[1]
        others = [i for i in self.data.indexes(account, stream) if i != index][:n]
        return {self.record_id(stream, account, i)
                for i in self.data.change_at(account, stream, others, tick)}

    # -- who is asking ----------------------------------------------------------------------

    def _where(self, req: SimRequest) -> str:
        return self._hosts.get(req.header("host") or "", "unknown")

    def _authenticate(self, req: SimRequest) -> str | None:
        """The org of a live session, asked at a host that serves that org: its own instance,
        or a login host (a simulator reached through one base URL for every org)."""
        assert self.oauth is not None
        org = self.oauth.validate(req.bearer)
        host = self._where(req)
        if org is None or (host.startswith("org:") and host != f"org:{org}"):
            return None
        req.params["__org"] = org  # for the route (validating again would count again)
        return org

    def _unauthorized(self, req: SimRequest) -> SimResponse:
        self._note(req, None, 401)
        return error(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def _note(self, req: SimRequest, org: str | None, status: int) -> None:
        with self._lock:
            self.api_log.append((self._where(req), org, req.method, req.path, status))

    def _after(self, req: SimRequest, resp: SimResponse, org: str) -> SimResponse:
        self._note(req, org, resp.status)
        found = self.orgs.get(org)
        if found is not None:
            info = f"api-usage={found.used}/{found.daily_limit}"
            if found.per_app_limit is not None:
                info += f"; per-app-api-usage={found.per_app_used}/{found.per_app_limit}" \
                        f"(appName={APP_NAME})"
            resp.headers["Sforce-Limit-Info"] = info
        resp.headers["Date"] = email.utils.format_datetime(self.now, usegmt=True)
        return resp

    def _quota(self, req: SimRequest) -> SimResponse | None:
        org = self._org_of(req)
        with self._lock:
            found = self.orgs[org]
            if found.used >= found.daily_limit or (
                    found.per_app_limit is not None and found.per_app_used >= found.per_app_limit):
                return error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            found.used += 1
            found.per_app_used += 1
        return None

    @staticmethod
    def _org_of(req: SimRequest) -> str:
        """The org the request was authenticated for (routes with ``auth=True`` only)."""
        return req.params["__org"]

    # -- OAuth ------------------------------------------------------------------------------

    def _login_ok(self, host: str, org: Org) -> bool:
        """Production orgs log in at login.salesforce.com, sandboxes at test.salesforce.com;
        both at their own My Domain (their instance here)."""
        return host == f"org:{org.id}" or host == ("test" if org.sandbox else "login")

    def _authorize(self, req: SimRequest) -> SimResponse:
        resp = self._authorize_at(req)
        with self._lock:
            self.oauth_log.append((self._where(req), "authorize", resp.status))
        return resp

    def _authorize_at(self, req: SimRequest) -> SimResponse:
        assert self.oauth is not None
        host = self._where(req)
        org = self.orgs.get(req.query.get("account") or self.default_account)
        if org is None:
            return SimResponse.json({"error": "invalid_request", "error_description":
                                     "unknown org"}, 400)
        if not self._login_ok(host, org):
            return SimResponse.json({"error": "invalid_request", "error_description":
                                     f"org {org.id} does not log in at this host ({host})"},
                                    400)
        resp = self.oauth.authorize(req, org.id)
        location = resp.headers.get("Location")
        if resp.status == 302 and location:
            code = dict(parse_qsl(urlsplit(location).query)).get("code")
            if code:
                with self._lock:
                    self._codes[code] = host
        return resp

    def _token(self, req: SimRequest) -> SimResponse:
        resp = self._token_at(req)
        with self._lock:
            self.oauth_log.append((self._where(req), req.form().get("grant_type") or "",
                                   resp.status))
        return resp

    def _token_at(self, req: SimRequest) -> SimResponse:
        assert self.oauth is not None
        host = self._where(req)
        form = req.form()
        grant = form.get("grant_type")
        if grant == "authorization_code":
            with self._lock:
                issued_at = self._codes.get(form.get("code", ""))
            if issued_at is not None and issued_at != host:
                return self._token_error("invalid_grant", "authorization code was issued at "
                                         "another host")
        elif grant == "refresh_token":
            org = self.orgs.get(self._refresh_orgs.get(form.get("refresh_token", ""), ""))
            if org is not None and not self._login_ok(host, org):
                return self._token_error("invalid_grant", "expired access/refresh token")
        resp = self.oauth.token(req)
        if resp.status != 200:
            return resp
        body = json.loads(resp.body)
        if grant == "refresh_token" and not self.oauth.rotate_refresh:
            body.pop("refresh_token", None)  # no new refresh token without rotation
        elif body.get("refresh_token"):
            org_id = self._org_of_identity(body["id"])
            with self._lock:
                self._refresh_orgs[body["refresh_token"]] = org_id
        return SimResponse.json(body)

    @staticmethod
    def _org_of_identity(identity: str) -> str:
        return identity.rstrip("/").split("/")[-2]

    def _token_body(self, issued: dict[str, Any]) -> dict[str, Any]:
        org = self.orgs[issued["account"]]
        login = "https://test.salesforce.com" if org.sandbox else "https://login.salesforce.com"
        identity = f"{login}/id/{org.id}/{USER_ID}"
        issued_at = str(int(time.time() * 1000))
        key = self.signature_key or CLIENT_SECRET
        signature = base64.b64encode(hmac.new(key.encode(), (identity + issued_at).encode(),
                                              hashlib.sha256).digest()).decode()
        return {"access_token": issued["access_token"], "refresh_token": issued["refresh_token"],
                "signature": signature, "scope": "api refresh_token",
                "instance_url": self.instance_url_override or org.instance_url, "id": identity,
                "token_type": "Bearer", "issued_at": issued_at}

    @staticmethod
    def _token_error(code: str, description: str) -> SimResponse:
        if code == "invalid_grant" and "refresh token" in description:
            description = "expired access/refresh token"  # what Salesforce says (addendum 3.6)
        return SimResponse.json({"error": code, "error_description": description}, 400)

    # -- SOQL -------------------------------------------------------------------------------

    def _batch(self, req: SimRequest) -> int:
        found = re.search(r"batchSize\s*=\s*([0-9]{1,6})", req.header("sforce-query-options")
                          or "")
        size = int(found.group(1)) if found else 2000
        return min(2000, max(200, size))

    def _query(self, req: SimRequest) -> SimResponse:
        org = self._org_of(req)
        with self._lock:
            self.soql_log.append(req.query.get("q") or "")
        try:
            obj, fields, rows = self.run_soql(org, req.query.get("q") or "")
        except QueryError as exc:
            return error(400, exc.code, exc.message)
        with self._lock:
            self._seq += 1
            locator = f"01g5g{self._seq:010d}AAA"
            self._locators[locator] = _Locator(org, obj, rows, fields, self._batch(req),
                                               time.monotonic())
        return self._page(req.params["version"], locator, 0)

    def _more(self, req: SimRequest) -> SimResponse:
        locator, _, position = req.params["locator"].rpartition("-")
        with self._lock:
            found = self._locators.get(locator)
            stale = found is None or time.monotonic() - found.last > self.locator_ttl
            if found is not None and not stale:
                found.last = time.monotonic()
        if stale or found is None or found.org != self._org_of(req) or not position.isdigit():
            return error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(req.params["version"], locator, int(position))

    def _page(self, version: str, locator: str, start: int) -> SimResponse:
        found = self._locators[locator]
        chunk = found.rows[start:start + found.batch]
        records = [self._render(found.org, found.obj, i, found.fields) for i in chunk
                   if not self.data.is_deleted(found.org, found.obj, i)]
        body: dict[str, Any] = {"totalSize": len(found.rows), "done": True, "records": records}
        if start + found.batch < len(found.rows):
            body["done"] = False
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-" \
                                     f"{start + found.batch}"
        else:
            with self._lock:
                self._locators.pop(locator, None)
        return SimResponse.json(body)

    def run_soql(self, org: str, text: str) -> tuple[str, list[str], list[int]]:
        """(sObject, fields, matching row indexes in order) of a SOQL query."""
        match = _SELECT.fullmatch(text)
        if match is None:
            raise QueryError("MALFORMED_QUERY", f"unexpected token: {text[:40]}")
        obj = match.group("obj")
        if obj not in self.data.sizes:
            raise QueryError("INVALID_TYPE", f"sObject type '{obj}' is not supported.")
        known = self.fields_of(obj)
        raw = match.group("fields").strip()
        if re.fullmatch(r"FIELDS\s*\(\s*STANDARD\s*\)", raw, re.IGNORECASE):
            fields = list(known)
        else:
            fields = [f.strip() for f in raw.split(",")]
            for name in fields:
                if name not in known:
                    raise QueryError("INVALID_FIELD", f"\nSELECT {raw[:40]}\nNo such column "
                                     f"'{name}' on entity '{obj}'. If you are attempting to use "
                                     "a custom field, be sure to append the '__c' after the "
                                     "custom field name.")
        conditions = self._conditions(match.group("where"), known)
        order = self._order(match.group("order"), known)
        hits = []
        for index in self.data.indexes(org, obj):
            row = self._row(org, obj, index)
            if all(test(row) for test in conditions):
                hits.append((row, index))
        for name, descending in reversed(order):
            hits.sort(key=lambda hit, n=name: self._key(hit[0], n), reverse=descending)
        rows = [index for _, index in hits]
        if match.group("limit"):
            rows = rows[:int(match.group("limit"))]
        return obj, fields, rows

    @staticmethod
    def _key(row: dict[str, Any], name: str) -> Any:
        value = row.get(name)
        if name in DATETIMES and isinstance(value, str):
            return parse_when(value.replace("+0000", "Z")) or value
        return "" if value is None else value

    def _conditions(self, where: str | None, known: list[str]) -> list[Any]:
        if not where:
            return []
        tests = []
        for part in re.split(r"\s+AND\s+", where, flags=re.IGNORECASE):
            found_in = _IN.fullmatch(part)
            if found_in is not None:
                field = found_in.group("field")
                values = {v.strip().strip("'") for v in found_in.group("values").split(",")}
                if field not in known:
                    raise QueryError("INVALID_FIELD", f"No such column '{field}'")
                tests.append(lambda row, f=field, vs=values: row.get(f) in vs)
                continue
            found = _COND.fullmatch(part)
            if found is None:
                raise QueryError("MALFORMED_QUERY", f"unexpected token: {part.strip()[:40]}")
            field, op, value = found.group("field", "op", "value")
            if field not in known:
                raise QueryError("INVALID_FIELD", f"No such column '{field}'")
            if field in DATETIMES:
                at = parse_when(value)
                if at is None or value.startswith("'"):
                    raise QueryError("MALFORMED_QUERY", f"value of filter criterion for field "
                                     f"'{field}' must be of type dateTime and should not be "
                                     "enclosed in quotes")
                tests.append(lambda row, f=field, o=op, a=at: _OPS[o](
                    parse_when(row[f].replace("+0000", "Z")), a))
            else:
                if not value.startswith("'"):
                    raise QueryError("MALFORMED_QUERY", f"value of {field} must be quoted")
                tests.append(lambda row, f=field, o=op, v=value[1:-1]: _OPS[o](
                    str(row.get(f) or ""), v))
        return tests

    @staticmethod
    def _order(order: str | None, known: list[str]) -> list[tuple[str, bool]]:
        out = []
        for part in (order or "Id ASC").split(","):
            words = part.split()
            if not words or len(words) > 2 or words[0] not in known or (
                    len(words) == 2 and words[1].upper() not in ("ASC", "DESC")):
                raise QueryError("MALFORMED_QUERY", f"unexpected token in ORDER BY: {part[:40]}")
            out.append((words[0], len(words) == 2 and words[1].upper() == "DESC"))
        return out

    # -- deletions and limits ---------------------------------------------------------------

    def _deleted(self, req: SimRequest) -> SimResponse:
        org, obj = self._org_of(req), req.params["sobject"]
        if obj not in self.data.sizes:
            return error(404, "NOT_FOUND", "The requested resource does not exist")
        start, end = parse_when(req.query.get("start", "")), parse_when(req.query.get("end", ""))
        if start is None or end is None:
            return error(400, "MALFORMED_QUERY", "start and end must be ISO-8601 dateTimes")
        now = self.now
        earliest = now - RECYCLE_BIN
        if start < earliest:
            return error(400, "INVALID_REPLICATION_DATE",
                         "startDate before the org's replication limit")
        if end < start:
            return error(400, "INVALID_REPLICATION_DATE", "endDate before startDate")
        covered = min(end, now)
        gone = []
        for index, tick in sorted(self.data.deleted(org, obj).items()):
            at = self.stamp(tick)
            if start <= at <= covered:
                gone.append({"id": self.record_id(obj, org, index), "deletedDate": iso(at)})
        return SimResponse.json({"deletedRecords": gone, "earliestDateAvailable": iso(earliest),
                                 "latestDateCovered": iso(covered)})

    def _limits(self, req: SimRequest) -> SimResponse:
        org = self.orgs[self._org_of(req)]
        daily: dict[str, Any] = {"Max": org.daily_limit,
                                 "Remaining": max(0, org.daily_limit - org.used)}
        if org.per_app_limit is not None:
            daily[APP_NAME] = {"Max": org.per_app_limit,
                               "Remaining": max(0, org.per_app_limit - org.per_app_used)}
        return SimResponse.json({
            "DailyApiRequests": daily,
            "DailyBulkApiRequests": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 1024, "Remaining": 1000},
            "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200}})

    # -- Outbound Messages ------------------------------------------------------------------

    def webhook_events(self, account: str, n: int = 1, *, stream: str = "Account",
                       send_session_id: bool = False) -> list[dict[str, Any]]:
        """``n`` notifications about ``stream`` records of org ``account`` that a workflow
        rule sends as they change (the records change now; a notification carries the
        latest data)."""
        indexes = self.data.mutate(account, stream, n)
        out = []
        for index in indexes:
            with self._lock:
                self._seq += 1
                note = f"04l5g{self._seq:010d}AAP"
            row = self._row(account, stream, index)
            out.append({"OrganizationId": account, "ActionId": "04k5g0000000001AAQ",
                        "Id": note, "sobject_type": stream, "fields": row,
                        "SessionId": "00D!AQ0AQsimsession" if send_session_id else None})
        return out

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        """The SOAP envelope Salesforce posts (addendum 3.1)."""
        org = events[0]["OrganizationId"] if events else self.default_account
        session = events[0].get("SessionId") if events else None
        base = self.orgs[org].instance_url if org in self.orgs else self.url
        notes = []
        for event in events:
            fields = "".join(
                f'<sf:{k} xsi:nil="true"/>' if v is None else f"<sf:{k}>{escape(_text(v))}</sf:{k}>"
                for k, v in event["fields"].items())
            notes.append(
                f"<Notification><Id>{event['Id']}</Id>"
                f'<sObject xsi:type="sf:{event["sobject_type"]}" '
                f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject>'
                "</Notification>")
        session_xml = f"<SessionId>{escape(session)}</SessionId>" if session else \
            '<SessionId xsi:nil="true"/>'
        action = events[0]["ActionId"] if events else "04k5g0000000001AAQ"
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n <soapenv:Body>\n'
            '  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">\n'
            f"   <OrganizationId>{org}</OrganizationId>\n   <ActionId>{action}</ActionId>\n"
            f"   {session_xml}\n"
            f"   <EnterpriseUrl>{base}/services/Soap/c/61.0/{org[:15]}</EnterpriseUrl>\n"
            f"   <PartnerUrl>{base}/services/Soap/u/61.0/{org[:15]}</PartnerUrl>\n"
            + "".join(f"   {n}\n" for n in notes)
            + "  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n").encode()

    def sign_webhook(self, body: bytes, url: str, *, timestamp: float | None = None
                     ) -> dict[str, str]:
        """What Salesforce sends with a message: no signature at all."""
        return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}

    def send_webhook(self, url: str, account: str | None = None, n: int = 1, *,
                     tamper: bool = False, timestamp: float | None = None,
                     **options: Any) -> tuple[int, str]:
        """Post an Outbound Message of ``n`` notifications about org ``account`` to ``url``
        (``tamper``: claiming another org); kept for :meth:`redeliver` unless acknowledged."""
        account = account or self.default_account
        body = self.webhook_body(self.webhook_events(account, n, **options))
        if tamper:
            body = body.replace(account.encode(), b"00D5g0000000999EAA")
        return self.deliver(url, body)

    def deliver(self, url: str, body: bytes) -> tuple[int, str]:
        """POST one message as Salesforce does; the answer must be the exact ack."""
        import requests

        resp = requests.post(url, data=body, headers=self.sign_webhook(body, url), timeout=60)
        if outbound.is_ack(resp.status_code, resp.content):
            with self._lock:
                self.acknowledged += 1
        else:
            with self._lock:
                self.outbox.append(Pending(url, body))
        return resp.status_code, resp.text

    def redeliver(self) -> int:
        """Send every unacknowledged message again (Salesforce's retries); how many are still
        not acknowledged."""
        with self._lock:
            pending, self.outbox = self.outbox, []
        for message in pending:
            import requests

            resp = requests.post(message.url, data=message.body,
                                 headers=self.sign_webhook(message.body, message.url),
                                 timeout=60)
            if outbound.is_ack(resp.status_code, resp.content):
                with self._lock:
                    self.acknowledged += 1
            else:
                with self._lock:
                    self.outbox.append(attrs.evolve(message, attempts=message.attempts + 1))
        return len(self.outbox)

    # -- control API ------------------------------------------------------------------------

    def _mount_salesforce_control(self) -> None:
        def args(req: SimRequest) -> dict[str, Any]:
            data = req.json()
            return data if isinstance(data, dict) else {}

        @self.app.route("POST", "/_sim/quota", auth=False)
        def quota(req: SimRequest) -> SimResponse:
            data = args(req)
            org = str(data.get("account") or self.default_account)
            if org not in self.orgs:
                return SimResponse.json({"error": f"unknown org {org}"}, 400)
            if data.get("reset"):
                self.reset_daily(org)
            limit = data.get("limit")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
                self.set_daily_limit(org, limit)
            found = self.orgs[org]
            return SimResponse.json({"account": org, "used": found.used,
                                     "limit": found.daily_limit})

        @self.app.route("POST", "/_sim/sessions/expire", auth=False)
        def expire(req: SimRequest) -> SimResponse:
            assert self.oauth is not None
            after = args(req).get("after")
            if isinstance(after, int) and not isinstance(after, bool) and after > 0:
                self.oauth.expire_after(after)
            else:
                self.oauth.expire_access_tokens()
            return SimResponse.json({"ok": True})

        @self.app.route("POST", "/_sim/redeliver", auth=False)
        def again(req: SimRequest) -> SimResponse:
            return SimResponse.json({"pending": self.redeliver(),
                                     "acknowledged": self.acknowledged})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
