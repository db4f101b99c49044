"""``ProviderSimulator``: the base of every provider simulator, and the contract between a
simulator and the standard connector suite (:func:`nexus_core.testing.suite.connector_suite`).

A plugin's simulator subclasses it, builds its routes on :attr:`app` (the provider's real paths,
paging and error shapes) over :attr:`data` (a seeded :class:`~nexus_core.testing.sim_data.DataSet`)
and, for OAuth2 providers, :attr:`oauth`; it says how the connector is pointed at it
(:meth:`env`) and how its webhooks are signed (:meth:`sign_webhook`). Everything a test arms —
faults, 429s, expired or revoked tokens, changed records — goes through the same methods for
every provider, so one suite proves every connector::

    class AcmeSimulator(ProviderSimulator):
        provider_id = "acme"
        streams = {"widgets": 250}

        def build(self) -> None:
            @self.app.route("GET", "/v1/widgets")
            def widgets(req): ...

        def env(self) -> dict[str, str]:
            return {"ACME_BASE_URL": self.url, **self.oauth_env("ACME")}

``nexus simulate PROVIDER --port P`` serves a plugin's simulator in the foreground.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from nexus_core.testing.sim_app import SimApp, SimRequest
from nexus_core.testing.sim_data import DataSet, default_record
from nexus_core.testing.sim_oauth import OAuthServer
from nexus_core.testing.simulator import SimulatorServer


class ProviderSimulator:
    """A simulated provider API on a local port. Subclasses set the class attributes and
    implement :meth:`build`, :meth:`env` and (for webhooks) :meth:`sign_webhook` and
    :meth:`webhook_events`."""

    #: The provider id of the plugin this simulates.
    provider_id: ClassVar[str] = ""
    #: Records per stream and account at the start.
    streams: ClassVar[dict[str, int]] = {}
    #: Field of a record that is its id (the stream's primary key).
    id_field: ClassVar[str] = "id"
    #: OAuth2 providers: a token server is created (``None``: the API takes other credentials).
    oauth_options: ClassVar[dict[str, Any] | None] = None
    #: The webhook secret the simulator signs with (configured through :meth:`env`).
    webhook_secret: ClassVar[str] = "sim-webhook-secret"

    def __init__(self, *, seed: int = 0, sizes: dict[str, int] | None = None,
                 port: int = 0) -> None:
        self.app = SimApp(self.provider_id or type(self).__name__)
        self.data = DataSet(sizes or dict(self.streams), seed=seed, make=self.make_record)
        self.oauth: OAuthServer | None = None
        if self.oauth_options is not None:
            self.oauth = OAuthServer(**self.oauth_options)
        self.accounts: list[str] = []
        self._server = SimulatorServer(self.app, port=port)
        self.build()
        self._mount_control()

    # -- to implement ------------------------------------------------------------------------

    def build(self) -> None:
        """Register the provider's routes on :attr:`app` (and mount :attr:`oauth`)."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment variables that point the connector at this simulator (base URL, OAuth
        endpoints, client id/secret, webhook secret)."""
        raise NotImplementedError

    def make_record(self, stream: str, index: int, version: int, account: str
                    ) -> dict[str, Any]:
        """One record as the provider returns it (override for the provider's shape)."""
        return default_record(stream, index, version, account)

    def install_config(self, account: str) -> dict[str, Any]:
        """The installation config the connector needs for ``account`` (default: none)."""
        return {}

    def webhook_events(self, account: str, n: int = 1) -> list[dict[str, Any]]:
        """``n`` provider events about ``account``, as its webhook body carries them."""
        raise NotImplementedError(f"{type(self).__name__} sends no webhooks")

    def webhook_body(self, events: list[dict[str, Any]]) -> bytes:
        """The delivery body for ``events`` (default: a JSON array)."""
        return json.dumps(events, separators=(",", ":")).encode()

    def sign_webhook(self, body: bytes, url: str, *, timestamp: float | None = None
                     ) -> dict[str, str]:
        """The headers the provider sends with ``body`` posted to ``url`` (signed with
        :attr:`webhook_secret`; ``timestamp`` overrides now, for stale deliveries)."""
        raise NotImplementedError(f"{type(self).__name__} sends no webhooks")

    #: True when the provider's signature covers a timestamp (stale deliveries are refused).
    webhook_timestamped: ClassVar[bool] = True
    #: False for a provider that signs nothing (a changed body cannot be told from a genuine
    #: one; the suite skips that check and the plugin's own tests cover what it verifies).
    webhook_signed: ClassVar[bool] = True
    #: The account ``nexus simulate`` serves, in the provider's own id shape (numbers, ``T…``).
    demo_account: ClassVar[str] = "account-1"

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> ProviderSimulator:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serve in the foreground (``nexus simulate``) until interrupted."""
        with contextlib.suppress(KeyboardInterrupt):
            self._server._server.serve_forever(poll_interval=0.05)

    # -- accounts and credentials --------------------------------------------------------------

    def add_account(self, account: str | None = None) -> str:
        """A provider account (a portal, workspace, organization) with its seeded data."""
        account = account or f"acct{len(self.accounts) + 1}-{secrets.token_hex(2)}"
        self.accounts.append(account)
        return account

    @property
    def default_account(self) -> str:
        return self.accounts[0] if self.accounts else self.add_account()

    def authenticated_account(self, req: SimRequest) -> str:
        """The account of the request's valid token — for a route that has already refused
        requests without one (an AssertionError here is a bug in the simulator)."""
        assert self.oauth is not None
        account = self.oauth.authenticate(req)
        assert account is not None
        return account

    def oauth_env(self, prefix: str) -> dict[str, str]:
        """``<PREFIX>_CLIENT_ID``/``_CLIENT_SECRET`` for :attr:`oauth` (empty without it)."""
        if self.oauth is None:
            return {}
        return {f"{prefix}_CLIENT_ID": self.oauth.client_id,
                f"{prefix}_CLIENT_SECRET": self.oauth.client_secret}

    def authorize_code(self, account: str, *, redirect_uri: str | None = None,
                       challenge: str | None = None) -> str:
        """An authorization code for ``account``, as the consent page would hand out."""
        if self.oauth is None:
            raise NotImplementedError(f"{type(self).__name__} has no OAuth server")
        return self.oauth.issue_code(account, redirect_uri=redirect_uri, challenge=challenge)

    def credentials(self, account: str) -> Any:
        """Stored-credential form of fresh tokens for ``account`` (tests that start
        connected): a :class:`~nexus_core.models.Credentials`."""
        from datetime import timedelta

        from nexus_core.models import Credentials, utcnow

        if self.oauth is None:
            return Credentials(api_key=f"key-{account}", extra={"account_id": account})
        issued = self.oauth.issue_tokens(account)
        return Credentials(access_token=issued["access_token"],
                           refresh_token=issued["refresh_token"],
                           expires_at=utcnow() + timedelta(seconds=issued["expires_in"]),
                           extra={"account_id": account})

    # -- what tests arm --------------------------------------------------------------------------

    @property
    def faults(self) -> Any:
        """:class:`~nexus_core.testing.sim_app.Faults`: ``fail_next``, ``rate_limit_next``,
        ``slow_next``, ``down()``."""
        return self.app.faults

    def expected_ids(self, stream: str, account: str) -> set[str]:
        """The ids a complete backfill of ``stream`` for ``account`` must deliver."""
        return self.data.ids(account, stream, self.id_field)

    def mutate(self, stream: str, account: str, n: int, **kw: Any) -> set[str]:
        """Change ``n`` records; their ids (what the next delta must deliver)."""
        indexes = self.data.mutate(account, stream, n, **kw)
        return {str(self.data.row(account, stream, i)[self.id_field]) for i in indexes}

    def delete(self, stream: str, account: str, n: int) -> set[str]:
        """Delete ``n`` live records; their ids (what the next delta must report deleted)."""
        rows = {i: self.data.row(account, stream, i)[self.id_field]
                for i in self.data.indexes(account, stream)}
        return {str(rows[i]) for i in self.data.delete(account, stream, n)}

    def send_webhook(self, url: str, account: str | None = None, n: int = 1, *,
                     tamper: bool = False, timestamp: float | None = None,
                     **options: Any) -> tuple[int, str]:
        """POST a signed delivery of ``n`` events about ``account`` to ``url``, as the provider
        does (``tamper``: change the body after signing); (HTTP status, answer body)."""
        import requests

        events = self.webhook_events(account or self.default_account, n, **options)
        body = self.webhook_body(events)
        headers = self.sign_webhook(body, url, timestamp=timestamp)
        if tamper:
            body = body.replace(b"}", b" }", 1)
        resp = requests.post(url, data=body, headers=headers, timeout=10)
        return resp.status_code, resp.text

    # -- the control API: what `nexus simulate` offers scripts (demos, manual tests) ---------

    def _mount_control(self) -> None:
        """``/_sim/...``: change the simulated world from outside the process (no auth; the
        simulator listens on 127.0.0.1 only)."""
        from nexus_core.testing.sim_app import SimResponse

        def args(req: SimRequest) -> dict[str, Any]:
            data = req.json()
            return data if isinstance(data, dict) else {}

        def bad(message: str) -> SimResponse:
            return SimResponse.json({"error": message}, 400)

        def stream_and_n(data: dict[str, Any]) -> tuple[str, int, str] | str:
            stream, n = data.get("stream"), data.get("n", 1)
            if stream not in self.data.sizes:
                return f"unknown stream {stream!r}; streams: {', '.join(self.data.sizes)}"
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                return "n must be an integer >= 0"
            return stream, n, str(data.get("account") or self.default_account)

        @self.app.route("GET", "/_sim", auth=False)
        def state(req: SimRequest) -> SimResponse:
            return SimResponse.json({"provider": self.provider_id, "accounts": self.accounts,
                                     "sizes": self.data.sizes, "clock": self.data.now})

        @self.app.route("POST", "/_sim/mutate", auth=False)
        def mutate(req: SimRequest) -> SimResponse:
            data = args(req)
            found = stream_and_n(data)
            if isinstance(found, str):
                return bad(found)
            stream, n, account = found
            ids = self.mutate(stream, account, n, same_second=bool(data.get("same_second")))
            return SimResponse.json({"ids": sorted(ids), "clock": self.data.now})

        @self.app.route("POST", "/_sim/delete", auth=False)
        def delete(req: SimRequest) -> SimResponse:
            found = stream_and_n(args(req))
            if isinstance(found, str):
                return bad(found)
            stream, n, account = found
            return SimResponse.json({"ids": sorted(self.delete(stream, account, n)),
                                     "clock": self.data.now})

        @self.app.route("POST", "/_sim/webhook", auth=False)
        def webhook(req: SimRequest) -> SimResponse:
            data = args(req)
            url, n = data.get("url"), data.get("n", 1)
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return bad("url must be the http(s) URL to deliver to")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                return bad("n must be an integer >= 1")
            options = data.get("options") or {}
            if not isinstance(options, dict):
                return bad("options must be an object")
            status, answer = self.send_webhook(url, data.get("account"), n,
                                               tamper=bool(data.get("tamper")), **options)
            return SimResponse.json({"status": status, "answer": answer[:500], "events": n})

    def requests(self, path: str | None = None) -> list[Any]:
        return self.app.requests(path)

    def wait_for_requests(self, count: int, path: str | None = None, timeout: float = 10.0
                          ) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(found := self.requests(path)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        with self.app.faults.down():
            yield
