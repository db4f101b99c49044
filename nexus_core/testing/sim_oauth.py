"""An OAuth 2.0 authorization server for provider simulators: authorization codes (with PKCE),
expiring access tokens, refresh tokens that may rotate (an old one is then refused for good —
reusing it is what strands an installation), revocation and expiry on demand.

Wire it into a :class:`~nexus_core.testing.sim_app.SimApp` with :meth:`OAuthServer.mount`; the
provider-specific parts (the token response's shape, the error shapes, where the account id
goes) are the ``token_body`` and ``error`` callables a simulator passes in.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import attrs

from nexus_core.testing.sim_app import SimApp, SimRequest, SimResponse


@attrs.define
class Grant:
    """One authorization: an account's refresh token and the access tokens issued under it."""

    account: str
    scopes: tuple[str, ...]
    refresh_token: str
    revoked: bool = False


@attrs.define
class _Token:
    account: str
    grant: str  # the grant's current refresh token at issue time (identifies the grant)
    expires_at: float


def _default_token_body(issued: dict[str, Any]) -> dict[str, Any]:
    return {"access_token": issued["access_token"], "refresh_token": issued["refresh_token"],
            "token_type": "bearer", "expires_in": issued["expires_in"],
            "scope": " ".join(issued["scopes"]), "account_id": issued["account"]}


def _default_error(code: str, description: str) -> SimResponse:
    return SimResponse.json({"error": code, "error_description": description}, 400)


class OAuthServer:
    """Codes, tokens and grants of one simulated provider.

    * ``token_lifetime``: seconds an access token lives (``expires_in``).
    * ``rotate_refresh``: every refresh returns a new refresh token and invalidates the old one.
    * ``client_auth``: ``"form"`` (client id/secret in the body) or ``"basic"``.
    """

    def __init__(self, *, client_id: str = "sim-client", client_secret: str = "sim-secret",
                 token_lifetime: float = 3600, rotate_refresh: bool = True,
                 client_auth: str = "form",
                 token_body: Callable[[dict[str, Any]], dict[str, Any]] = _default_token_body,
                 error: Callable[[str, str], SimResponse] = _default_error) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.rotate_refresh = rotate_refresh
        self.client_auth = client_auth
        self.token_body = token_body
        self.error = error
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[str, tuple[str, ...], str | None, str | None]] = {}
        self._grants: dict[str, Grant] = {}  # by current refresh token
        self._retired: set[str] = set()  # rotated-out refresh tokens
        self._tokens: dict[str, _Token] = {}
        self._expire_after: int | None = None
        #: Counters a test asserts on.
        self.exchanges = 0
        self.refreshes = 0
        self.refused_reuse = 0

    # -- what tests arm --------------------------------------------------------------------

    def issue_code(self, account: str, scopes: tuple[str, ...] = (), *,
                   redirect_uri: str | None = None, challenge: str | None = None) -> str:
        code = "code-" + secrets.token_urlsafe(12)
        with self._lock:
            self._codes[code] = (account, tuple(scopes), redirect_uri, challenge)
        return code

    def issue_tokens(self, account: str, scopes: tuple[str, ...] = ()) -> dict[str, Any]:
        """Tokens for ``account`` without the browser flow (tests that start connected)."""
        with self._lock:
            return self._issue(account, tuple(scopes), None)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is expired from now on (a provider's session
        timeout, or a token used past its ``expires_in``)."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    def expire_after(self, requests: int) -> None:
        """Expire every access token after ``requests`` more authenticated API requests."""
        with self._lock:
            self._expire_after = requests

    def revoke(self, account: str | None = None) -> None:
        """Revoke the grants of ``account`` (all accounts when None): its refresh tokens and
        access tokens stop working, as when a user uninstalls the app."""
        with self._lock:
            for grant in self._grants.values():
                if account is None or grant.account == account:
                    grant.revoked = True
            for token in self._tokens.values():
                if account is None or token.account == account:
                    token.expires_at = 0.0

    def current_refresh_token(self, account: str) -> str | None:
        with self._lock:
            live = [g for g in self._grants.values() if g.account == account and not g.revoked]
            return live[-1].refresh_token if live else None

    # -- what the simulator's routes call --------------------------------------------------

    def validate(self, access_token: str | None) -> str | None:
        """The account of a live access token, else None."""
        if not access_token:
            return None
        with self._lock:
            token = self._tokens.get(access_token)
            if token is None or token.expires_at <= time.time():
                return None
            if self._expire_after is not None:
                self._expire_after -= 1
                if self._expire_after <= 0:
                    self._expire_after = None
                    for t in self._tokens.values():
                        t.expires_at = 0.0
            return token.account

    def token_status(self, access_token: str | None) -> str:
        """``"live"``, ``"expired"`` (issued here, past its lifetime or revoked) or
        ``"unknown"`` — for a provider that answers the two failures differently."""
        if not access_token:
            return "unknown"
        with self._lock:
            token = self._tokens.get(access_token)
        if token is None:
            return "unknown"
        return "live" if token.expires_at > time.time() else "expired"

    def token_account(self, access_token: str | None) -> tuple[str | None, bool]:
        """(account, revoked) of an access token issued here, live or not — for a provider
        that answers an expired token differently from a revoked grant; (None, False) for a
        token it never issued."""
        if not access_token:
            return None, False
        with self._lock:
            token = self._tokens.get(access_token)
            if token is None:
                return None, False
            live = any(g.account == token.account and not g.revoked
                       for g in self._grants.values())
            return token.account, not live

    def authenticate(self, request: SimRequest) -> str | None:
        return self.validate(request.bearer)

    def authorize(self, request: SimRequest, account: str) -> SimResponse:
        """``GET /authorize``: approve at once for ``account`` (no browser in a simulator) and
        redirect back with ``code`` and ``state``, as the provider does after consent."""
        q = request.query
        if q.get("client_id") != self.client_id:
            return SimResponse.json({"error": "invalid_client"}, 400)
        redirect = q.get("redirect_uri", "")
        if not redirect:
            return SimResponse.json({"error": "invalid_request", "error_description":
                                     "redirect_uri missing"}, 400)
        scopes = tuple(q.get("scope", "").replace(",", " ").split())
        challenge = q.get("code_challenge")
        code = self.issue_code(account, scopes, redirect_uri=redirect, challenge=challenge)
        sep = "&" if "?" in redirect else "?"
        return SimResponse.redirect(redirect + sep + urlencode({"code": code,
                                                                "state": q.get("state", "")}))

    def token(self, request: SimRequest) -> SimResponse:
        """``POST /token``: the authorization-code and refresh-token grants."""
        form = request.form()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.header("authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return self.error("invalid_client", "malformed basic auth")
        if client_id != self.client_id or client_secret != self.client_secret:
            return self.error("invalid_client", "unknown client or wrong secret")
        grant_type = form.get("grant_type")
        with self._lock:
            if grant_type == "authorization_code":
                return self._exchange(form)
            if grant_type == "refresh_token":
                return self._refresh(form.get("refresh_token", ""))
        return self.error("unsupported_grant_type", f"grant_type {grant_type!r}")

    def mount(self, app: SimApp, *, authorize_path: str = "/oauth/authorize",
              token_path: str = "/oauth/token",
              default_account: Callable[[], str] | None = None) -> None:
        """Add the authorize and token endpoints to ``app`` and make it check bearer tokens.
        ``default_account()`` is the account ``/authorize`` approves for (``?account=`` wins)."""
        app.authenticate = self.authenticate

        @app.route("GET", authorize_path, auth=False)
        def _authorize(req: SimRequest) -> SimResponse:
            account = req.query.get("account") or (default_account() if default_account
                                                   else "account-1")
            return self.authorize(req, account)

        @app.route("POST", token_path, auth=False)
        def _token(req: SimRequest) -> SimResponse:
            return self.token(req)

    # -- internals (under the lock) --------------------------------------------------------

    def _exchange(self, form: dict[str, str]) -> SimResponse:
        found = self._codes.pop(form.get("code", ""), None)
        if found is None:
            return self.error("invalid_grant", "unknown or used authorization code")
        account, scopes, redirect, challenge = found
        if redirect is not None and form.get("redirect_uri") != redirect:
            return self.error("invalid_grant", "redirect_uri does not match")
        if challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.decode().rstrip("=") != challenge:
                return self.error("invalid_grant", "PKCE verification failed")
        self.exchanges += 1
        return SimResponse.json(self.token_body(self._issue(account, scopes, None)))

    def _refresh(self, refresh_token: str) -> SimResponse:
        if refresh_token in self._retired:
            self.refused_reuse += 1
            return self.error("invalid_grant", "refresh token was already used (rotated)")
        grant = self._grants.get(refresh_token)
        if grant is None or grant.revoked:
            return self.error("invalid_grant", "refresh token revoked or unknown")
        self.refreshes += 1
        return SimResponse.json(self.token_body(self._issue(grant.account, grant.scopes, grant)))

    def _issue(self, account: str, scopes: tuple[str, ...], grant: Grant | None
               ) -> dict[str, Any]:
        if grant is None:
            grant = Grant(account, scopes, "rt-" + secrets.token_urlsafe(16))
            self._grants[grant.refresh_token] = grant
        elif self.rotate_refresh:
            self._retired.add(grant.refresh_token)
            del self._grants[grant.refresh_token]
            grant.refresh_token = "rt-" + secrets.token_urlsafe(16)
            self._grants[grant.refresh_token] = grant
        access = "at-" + secrets.token_urlsafe(16)
        self._tokens[access] = _Token(account, grant.refresh_token,
                                      time.time() + self.token_lifetime)
        return {"access_token": access, "refresh_token": grant.refresh_token,
                "expires_in": int(self.token_lifetime), "scopes": scopes, "account": account}
