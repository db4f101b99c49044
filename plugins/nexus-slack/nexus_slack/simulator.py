"""A local simulator of the Slack APIs the connector uses, built to the shapes of
``reference/providers.md`` and ``providers-addendum.md`` section 2 (``nexus simulate slack``).

==============================================  ==============================================
``GET  /oauth/v2/authorize``                    consent, approved at once: 302 with code+state
                                                (the consent host: ``SLACK_AUTH_URL``)
``POST /api/oauth.v2.access``                   code exchange and refresh (client credentials
                                                as HTTP Basic); token rotation: every refresh
                                                answers a NEW refresh token and kills the old
                                                one (its reuse is ``invalid_refresh_token`` and
                                                counted); errors as 200 ``{"ok": false}``
``GET|POST /api/auth.test``                     the token's workspace, bot and user
``GET|POST /api/conversations.list``            Tier 2; ``types``, ``exclude_archived``,
                                                ``limit``, cursor ``team:<id>`` (base64)
``GET|POST /api/users.list``                    Tier 2; cursor ``user:<id>`` (base64)
``GET|POST /api/conversations.history``         Tier 3; newest first, ``oldest``/``latest``
                                                exclusive unless ``inclusive``, cursor
                                                ``next_ts:<ts>``; ``not_in_channel``,
                                                ``channel_not_found``
``GET|POST /api/conversations.replies``         Tier 3; the parent first, then its replies
==============================================  ==============================================

Every Web API error is an HTTP 200 ``{"ok": false, "error": ...}``: ``not_authed`` (no token),
``invalid_auth`` (a token never issued), ``token_expired`` (an expired access token of a live
grant), ``token_revoked`` (a revoked grant), and any code a test arms with
:meth:`SlackSimulator.error_next`. Rate limits are per workspace and per tier (Tier 2: 20 per
minute, Tier 3: 50, others 100) with ``429 {"ok": false, "error": "ratelimited"}`` and
``Retry-After``; ``limited_history`` puts history and replies on 1 per minute and 15 messages
per page (non-Marketplace apps created on or after 2025-05-29). ``minute`` shortens the
simulated minute, and :meth:`install_config` gives installations the matching budgets.

The Events API sender (:meth:`SlackSimulator.deliver`) signs envelopes v0, times the answer
against Slack's 3-second budget and retries as Slack does (``X-Slack-Retry-Num``,
``X-Slack-Retry-Reason``); :meth:`SlackSimulator.verify_url` sends ``url_verification``.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import attrs
import requests

from nexus_core.testing.provider_sim import ProviderSimulator
from nexus_core.testing.sim_app import SimRateLimit, SimRequest, SimResponse
from nexus_core.testing.sim_data import SIM_EPOCH
from nexus_core.webhook_schemes import sign_slack
from nexus_slack import tiers

CLIENT_ID = "1234567890.slack-sim"
CLIENT_SECRET = "slack-sim-client-secret"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
EPOCH = int(SIM_EPOCH.timestamp())
APP_ID = "A0SIMAPP01"
BOT_USER = "U0BOTUSER1"
#: Every fourth channel is one the bot is not a member of.
NOT_MEMBER_EVERY = 4
#: Slack answers within 3 s or retries (addendum 2.3).
ANSWER_BUDGET = 3.0
#: The challenge of Slack's documented url_verification example.
CHALLENGE = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
TIERS = {"conversations.list": "tier2", "users.list": "tier2",
         "conversations.history": "tier3", "conversations.replies": "tier3"}


def ok(data: dict[str, Any], headers: dict[str, str] | None = None) -> SimResponse:
    return SimResponse.json({"ok": True, **data}, 200, headers)


def fail(code: str, **extra: Any) -> SimResponse:
    return SimResponse.json({"ok": False, "error": code, **extra}, 200)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(token: str, prefix: str) -> str | None:
    try:
        raw = base64.b64decode(token, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return raw[len(prefix):] if raw.startswith(prefix) else None


def _token_body(issued: dict[str, Any]) -> dict[str, Any]:
    """``oauth.v2.access``'s answer (addendum 2.4); an account id starting with ``E`` is an
    organization-wide (Enterprise Grid) installation: no team, the enterprise instead."""
    account = issued["account"]
    enterprise = account.startswith("E")
    return {"ok": True, "app_id": APP_ID, "authed_user": {"id": "U0AUTHED01"},
            "scope": ",".join(issued["scopes"]) or "channels:read,channels:history,users:read",
            "token_type": "bot", "access_token": issued["access_token"],
            "bot_user_id": BOT_USER, "expires_in": int(issued["expires_in"]),
            "refresh_token": issued["refresh_token"],
            "team": None if enterprise else {"id": account, "name": f"Workspace {account}"},
            "enterprise": {"id": account, "name": f"Org {account}"} if enterprise else None,
            "is_enterprise_install": enterprise}


def _token_error(code: str, description: str) -> SimResponse:
    """oauth.v2.access errors (addendum 2.4), all HTTP 200."""
    text = description.lower()
    if code == "invalid_client":
        return fail("bad_client_secret" if "secret" in text else "invalid_client_id")
    if "refresh token" in text:
        return fail("invalid_refresh_token")
    if "redirect_uri" in text:
        return fail("bad_redirect_uri")
    if code == "unsupported_grant_type":
        return fail("invalid_grant_type")
    return fail("invalid_code")


@attrs.frozen
class Attempt:
    """One POST of an Events API delivery, as the sender saw it."""

    retry_num: int
    status: int
    seconds: float
    body: str


class SlackSimulator(ProviderSimulator):
    provider_id = "slack"
    streams = {"channels": 8, "users": 30, "messages": 120}
    oauth_options = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                     "token_lifetime": 43200, "rotate_refresh": True, "client_auth": "basic",
                     "token_body": _token_body, "error": _token_error}
    webhook_secret = SIGNING_SECRET
    demo_account = "T0G9PQBBK"

    #: Seconds of one rate-limit "minute" (60: Slack's; tests shorten it).
    minute: float = 60.0
    #: History and replies at 1 request per minute, 15 messages per page.
    limited_history: bool = False
    #: Records a page of conversations.list / users.list holds at most (Slack may return fewer
    #: than ``limit``).
    list_page_cap: int = 1000

    def __init__(self, *, minute: float | None = None, limited_history: bool | None = None,
                 **kw: Any) -> None:
        if minute is not None:
            self.minute = minute
        if limited_history is not None:
            self.limited_history = limited_history
        super().__init__(**kw)

    # -- accounts and records -----------------------------------------------------------------

    def add_account(self, account: str | None = None) -> str:
        return super().add_account(account or f"T0SIM{len(self.accounts) + 1:05d}")

    def channel_id(self, index: int) -> str:
        return f"C{1000001 + index}"

    def is_member(self, index: int) -> bool:
        return index % NOT_MEMBER_EVERY != NOT_MEMBER_EVERY - 1

    def member_channels(self) -> list[int]:
        return [i for i in range(self.data.sizes.get("channels", 0)) if self.is_member(i)]

    def channel_of(self, message_index: int) -> int:
        member = self.member_channels()
        return member[message_index % len(member)]

    def ts(self, account: str, index: int, reply: int = 0) -> str:
        """A message's ``ts``: the second it was posted, and a unique fraction."""
        second = self.data.version(account, "messages", index)[1]
        return f"{EPOCH + second}.{(index % 10000) * 100 + reply:06d}"

    def make_record(self, stream: str, index: int, version: int, account: str
                    ) -> dict[str, Any]:
        second = self.data.version(account, stream, index)[1]
        if stream == "channels":
            return {"id": self.channel_id(index), "name": f"channel-{index}",
                    "name_normalized": f"channel-{index}", "created": EPOCH + index,
                    "updated": (EPOCH + second) * 1000, "creator": "U1000001",
                    "is_channel": True, "is_group": False, "is_im": False, "is_mpim": False,
                    "is_private": False, "is_archived": False, "is_general": index == 0,
                    "is_member": self.is_member(index), "is_shared": False,
                    "num_members": 3 + index,
                    "topic": {"value": f"topic v{version}", "creator": "", "last_set": 0},
                    "purpose": {"value": "", "creator": "", "last_set": 0},
                    "previous_names": []}
        if stream == "users":
            name = f"user{index}"
            return {"id": f"U{1000001 + index}", "team_id": account, "name": name,
                    "deleted": False, "real_name": f"User {index} v{version}",
                    "tz": "Europe/Berlin", "tz_offset": 3600,
                    "profile": {"real_name": f"User {index}", "display_name": name,
                                "email": f"{name}@example.com", "team": account},
                    "is_admin": index == 0, "is_owner": index == 0, "is_bot": False,
                    "is_app_user": False, "updated": EPOCH + second}
        if stream == "messages":
            ts = self.ts(account, index)
            message: dict[str, Any] = {"type": "message", "user": f"U{1000001 + index % 30}",
                                       "text": f"message {index}", "ts": ts}
            if index % 10 == 0:
                message.update(thread_ts=ts, reply_count=2, reply_users_count=1,
                               latest_reply=self.ts(account, index, 2))
            channel = self.channel_id(self.channel_of(index))
            return {"id": f"{channel}:{ts}", "channel": channel, "message": message}
        return {"id": f"{stream}-{index}"}

    def mutate(self, stream: str, account: str, n: int, **kw: Any) -> set[str]:
        """Channels and users change (a new ``updated``); messages are posted (history has no
        edits by time: a delta reads what is new)."""
        if stream == "messages":
            indexes = self.data.create(account, "messages", n)
            return {self.data.row(account, "messages", i)["id"] for i in indexes}
        return super().mutate(stream, account, n, **kw)

    def expected_reply_ids(self, account: str) -> set[str]:
        """The ids of every thread reply (``threads`` in the installation config)."""
        out = set()
        for index in self.data.indexes(account, "messages"):
            if index % 10 == 0:
                channel = self.channel_id(self.channel_of(index))
                out |= {f"{channel}:{self.ts(account, index, k)}" for k in (1, 2)}
        return out

    def install_config(self, account: str) -> dict[str, Any]:
        """Budgets on this simulator's minute (none needed on Slack's own)."""
        return {} if self.minute == 60.0 else {"rate_limits": tiers.config_for(self.minute)}

    # -- the API --------------------------------------------------------------------------------

    def build(self) -> None:
        assert self.oauth is not None
        self.oauth.mount(self.app, authorize_path="/oauth/v2/authorize",
                         token_path="/api/oauth.v2.access",
                         default_account=lambda: self.default_account)
        self.app.unauthorized = self._unauthorized
        history = 1 if self.limited_history else tiers.PER_MINUTE["tier3"]
        self.app.rate_limit = SimRateLimit(
            tiers.PER_MINUTE["main"], self.minute,
            buckets={"tier2": (tiers.PER_MINUTE["tier2"], self.minute),
                     "tier3": (history, self.minute)},
            bucket_of=lambda req: TIERS.get(req.path.rsplit("/", 1)[-1], "default"),
            too_many=lambda retry_after, bucket: SimResponse.json(
                {"ok": False, "error": "ratelimited"}, 429,
                {"Retry-After": str(max(1, round(retry_after)))}))
        self._event_seq = 0
        self.deliveries: list[Attempt] = []
        methods = {"auth.test": self._auth_test, "conversations.list": self._channels,
                   "users.list": self._users, "conversations.history": self._history,
                   "conversations.replies": self._replies}
        for method, handler in methods.items():
            for verb in ("GET", "POST"):
                self.app.route(verb, f"/api/{method}")(self._with_args(handler))

    @staticmethod
    def _with_args(handler: Any) -> Any:
        def route(req: SimRequest) -> SimResponse:
            args = dict(req.query)
            if req.method == "POST":
                args.update(req.form())
            return handler(req, args)

        return route

    def _unauthorized(self, req: SimRequest) -> SimResponse:
        assert self.oauth is not None
        token = req.bearer
        if not token:
            return fail("not_authed")
        account, revoked = self.oauth.token_account(token)
        if account is None:
            return fail("invalid_auth")
        return fail("token_revoked" if revoked else "token_expired")

    def error_next(self, code: str, *, method: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls (of ``method``) with ``200 {"ok": false, "error":
        code}``."""
        self.faults.fail_next(200, times, body={"ok": False, "error": code},
                              path=f"/api/{method}$" if method else r"^/api/(?!oauth)")

    @staticmethod
    def _limit(args: dict[str, str], default: int, top: int) -> int | None:
        raw = args.get("limit") or str(default)
        if not raw.isdigit():
            return None
        return max(1, min(int(raw), top))

    def _auth_test(self, req: SimRequest, args: dict[str, str]) -> SimResponse:
        account = self.authenticated_account(req)
        body = {"url": f"https://{account.lower()}.slack.com/", "team": f"Workspace {account}",
                "user": "bot", "team_id": account, "user_id": BOT_USER, "bot_id": "B0BOT00001",
                "is_enterprise_install": account.startswith("E")}
        if account.startswith("E"):
            body["enterprise_id"] = account
        return ok(body, {"x-oauth-scopes": "channels:read,channels:history,users:read"})

    def _list(self, req: SimRequest, args: dict[str, str], stream: str, key: str,
              prefix: str) -> SimResponse:
        account = self.authenticated_account(req)
        limit = self._limit(args, 100, 1000)
        if limit is None:
            return fail("invalid_limit")
        limit = min(limit, self.list_page_cap)
        rows = [self.data.row(account, stream, i) for i in self.data.indexes(account, stream)]
        start = 0
        if args.get("cursor"):
            after = _unb64(args["cursor"], prefix)
            ids = [r["id"] for r in rows]
            if after is None or after not in ids:
                return fail("invalid_cursor")
            start = ids.index(after)
        page = rows[start:start + limit]
        nxt = _b64(prefix + rows[start + limit]["id"]) if start + limit < len(rows) else ""
        for row in page:
            row.pop("updated_at", None)
            row.pop("created_at", None)
        return ok({key: page, "response_metadata": {"next_cursor": nxt}})

    def _channels(self, req: SimRequest, args: dict[str, str]) -> SimResponse:
        types = set((args.get("types") or "public_channel").split(","))
        if not types <= {"public_channel", "private_channel", "mpim", "im"}:
            return fail("invalid_types")
        return self._list(req, args, "channels", "channels", "team:")

    def _users(self, req: SimRequest, args: dict[str, str]) -> SimResponse:
        return self._list(req, args, "users", "members", "user:")

    def _channel_index(self, channel: str | None) -> int | None:
        if not channel or not channel.startswith("C") or not channel[1:].isdigit():
            return None
        index = int(channel[1:]) - 1000001
        return index if 0 <= index < self.data.sizes.get("channels", 0) else None

    def _history(self, req: SimRequest, args: dict[str, str]) -> SimResponse:
        account = self.authenticated_account(req)
        channel = self._channel_index(args.get("channel"))
        if channel is None:
            return fail("channel_not_found")
        if not self.is_member(channel):
            return fail("not_in_channel")
        top = 15 if self.limited_history else 999
        limit = self._limit(args, 100, top)
        if limit is None:
            return fail("invalid_limit")
        inclusive = args.get("inclusive") in ("1", "true")
        try:
            oldest = float(args["oldest"]) if args.get("oldest") else None
            latest = float(args["latest"]) if args.get("latest") else None
        except ValueError:
            return fail("invalid_ts_oldest")
        messages = [self.data.row(account, "messages", i)["message"]
                    for i in self.data.indexes(account, "messages")
                    if self.channel_of(i) == channel]
        messages.sort(key=lambda m: float(m["ts"]), reverse=True)

        def inside(ts: float) -> bool:
            low = oldest is None or ts > oldest or (inclusive and ts == oldest)
            high = latest is None or ts < latest or (inclusive and ts == latest)
            return low and high

        messages = [m for m in messages if inside(float(m["ts"]))]
        if args.get("cursor"):
            before = _unb64(args["cursor"], "next_ts:")
            if before is None or not before.isdigit():
                return fail("invalid_cursor")
            messages = [m for m in messages if int(m["ts"].replace(".", "")) < int(before)]
        page, more = messages[:limit], len(messages) > limit
        nxt = _b64("next_ts:" + page[-1]["ts"].replace(".", "")) if more else ""
        return ok({"messages": page, "has_more": more, "pin_count": 0,
                   "response_metadata": {"next_cursor": nxt}})

    def _replies(self, req: SimRequest, args: dict[str, str]) -> SimResponse:
        account = self.authenticated_account(req)
        channel = self._channel_index(args.get("channel"))
        if channel is None:
            return fail("channel_not_found")
        if not self.is_member(channel):
            return fail("not_in_channel")
        parent = None
        for i in self.data.indexes(account, "messages"):
            if self.channel_of(i) == channel and self.ts(account, i) == args.get("ts"):
                parent = i
                break
        if parent is None or parent % 10:
            return fail("thread_not_found")
        head = self.data.row(account, "messages", parent)["message"]
        replies = [{"type": "message", "user": "U1000002", "text": f"reply {k}",
                    "ts": self.ts(account, parent, k), "thread_ts": head["ts"],
                    "parent_user_id": head["user"]} for k in (1, 2)]
        return ok({"messages": [head, *replies], "has_more": False,
                   "response_metadata": {"next_cursor": ""}})

    # -- pointing the connector here ------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {"SLACK_BASE_URL": self.url + "/api", "SLACK_AUTH_URL": self.url,
                "SLACK_TOKEN_URL": self.url + "/api/oauth.v2.access",
                "SLACK_CLIENT_ID": CLIENT_ID, "SLACK_CLIENT_SECRET": CLIENT_SECRET,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_HISTORY_LIMITED": "true" if self.limited_history else "false"}

    # -- the Events API -------------------------------------------------------------------------

    def webhook_events(self, account: str, n: int = 1, *, kind: str = "message",
                       workspace: str | None = None) -> list[dict[str, Any]]:
        """``n`` ``event_callback`` envelopes about ``account``: ``message`` (a message is
        posted), ``channel_created`` or ``member_joined_channel``. An enterprise account
        (``E...``) sends them from ``workspace`` with its ``enterprise_id``."""
        out = []
        for _ in range(n):
            self._event_seq += 1
            now = EPOCH + self.data.now
            if kind == "message":
                (index,) = self.data.create(account, "messages", 1)
                row = self.data.row(account, "messages", index)
                event = {**row["message"], "channel": row["channel"], "channel_type": "channel",
                         "event_ts": row["message"]["ts"]}
            elif kind == "channel_created":
                event = {"type": "channel_created", "channel": {
                    "id": f"C9{self._event_seq:06d}", "name": f"new-{self._event_seq}",
                    "created": now, "creator": "U1000001"}}
            else:
                event = {"type": kind, "user": "U1000003", "channel": self.channel_id(0),
                         "channel_type": "C", "team": account}
            enterprise = account if account.startswith("E") else None
            team = workspace or ("T0ORGWS001" if enterprise else account)
            out.append({"token": "XXYYZZ", "team_id": team, "enterprise_id": enterprise,
                        "context_team_id": team, "context_enterprise_id": enterprise,
                        "api_app_id": APP_ID, "event": event, "type": "event_callback",
                        "event_id": f"Ev{self._event_seq:08d}SIM", "event_time": now,
                        "authorizations": [{"enterprise_id": enterprise, "team_id": team,
                                            "user_id": BOT_USER, "is_bot": True,
                                            "is_enterprise_install": bool(enterprise)}],
                        "is_ext_shared_channel": False, "event_context": "4-sim"})
        return out

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        """One envelope per delivery, as Slack sends (several only for the standard suite,
        which asks for two at once: then a JSON array)."""
        data: Any = events[0] if len(events) == 1 else events
        return json.dumps(data, separators=(",", ":")).encode()

    def sign_webhook(self, body: bytes, url: str, *, timestamp: float | None = None
                     ) -> dict[str, str]:
        ts = str(int(time.time() if timestamp is None else timestamp))
        return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": sign_slack(self.webhook_secret, ts, body)}

    def deliver(self, url: str, envelope: dict[str, Any], *, force_retries: int = 0,
                retry_waits: tuple[float, ...] = (0.0, 0.0, 0.0)) -> list[Attempt]:
        """Deliver one envelope as Slack does: a 2xx within :data:`ANSWER_BUDGET` seconds is
        a success; otherwise (or ``force_retries`` times, as when Slack's own timeout fired
        while the first request was still running) it is sent again, up to 3 retries, with
        ``X-Slack-Retry-Num`` and ``X-Slack-Retry-Reason`` (Slack waits 0 s, 1 min, 5 min:
        ``retry_waits``). Every attempt is recorded in :attr:`deliveries`."""
        body = json.dumps(envelope, separators=(",", ":")).encode()
        attempts: list[Attempt] = []
        reason = None
        for num in range(4):
            if num:
                time.sleep(retry_waits[num - 1])
            headers = self.sign_webhook(body, url)
            if num:
                headers.update({"X-Slack-Retry-Num": str(num),
                                "X-Slack-Retry-Reason": reason or "http_timeout"})
            start = time.monotonic()
            try:
                resp = requests.post(url, data=body, headers=headers, timeout=ANSWER_BUDGET)
                status, text = resp.status_code, resp.text
            except requests.Timeout:
                status, text = 0, ""
            attempt = Attempt(num, status, time.monotonic() - start, text)
            attempts.append(attempt)
            self.deliveries.append(attempt)
            good = 200 <= status < 300 and attempt.seconds <= ANSWER_BUDGET
            if good and num >= force_retries:
                break
            reason = "http_timeout" if good or status == 0 else "http_error"
        return attempts

    def verify_url(self, url: str, challenge: str = CHALLENGE) -> requests.Response:
        """Slack's ``url_verification`` request, signed, to ``url``."""
        body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge,
                           "type": "url_verification"}).encode()
        return requests.post(url, data=body, headers=self.sign_webhook(body, url), timeout=10)

    def now(self) -> datetime:
        return datetime.fromtimestamp(EPOCH + self.data.now, UTC)
