"""Test doubles for the store/OAuth tests: a provider plugin and a real local token endpoint.

Shared by the tests (through conftest) and by ``refresh_worker.py`` (a separate process).
Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from nexus_core import BaseConnector, OAuthConfig, Provider, SyncPage

CLIENT_ID = "acme-client-id"
CLIENT_SECRET = "acme-client-secret-value"  # noqa: S105
REDIRECT_URI = "https://app.example.test/integrations/acme/callback"

ACME = Provider(
    id="acme",
    name="Acme CRM",
    version="1.0.0",
    auth_type="oauth2",
    base_url="https://api.acme.test",
    base_url_env="ACME_BASE_URL",
    scopes=("crm.read", "crm.write"),
    streams=("contacts",),
    oauth=OAuthConfig(
        authorize_url="https://app.acme.test/oauth/authorize",
        token_url="https://api.acme.test/oauth/v1/token",
        pkce=True,
        client_id_env="ACME_CLIENT_ID",
        client_secret_env="ACME_CLIENT_SECRET",
        redirect_uri_env="ACME_REDIRECT_URI",
        account_id_field="hub_id",  # HubSpot-style: the portal id is in the token response
    ),
)


class AcmeConnector(BaseConnector):
    """Uses the core's standard code exchange and refresh (no authorize/refresh hooks)."""

    provider = ACME

    def backfill(self, ctx: Any, stream: str, cursor: str | None) -> SyncPage:
        return SyncPage(done=True)


def settings_env(server_url: str, keys: str, **extra: str) -> dict[str, str]:
    return {
        "ACME_BASE_URL": server_url,
        "ACME_CLIENT_ID": CLIENT_ID,
        "ACME_CLIENT_SECRET": CLIENT_SECRET,
        "ACME_REDIRECT_URI": REDIRECT_URI,
        "NEXUS_ENCRYPTION_KEYS": keys,
        **extra,
    }


class TokenServer:
    """An OAuth2 token endpoint on 127.0.0.1 (a real socket, threaded) that

    * counts every call by grant type,
    * accepts each authorization code once, checking PKCE S256 when a challenge was registered,
    * rotates refresh tokens: each refresh token is valid exactly once (like Slack / HubSpot
      rotation), a reused one gets ``400 {"error": "invalid_grant"}``,
    * answers refreshes after ``refresh_delay`` seconds (to widen race windows).
    """

    def __init__(self, *, refresh_delay: float = 0.0, style: str = "hubspot") -> None:
        self.refresh_delay = refresh_delay
        self.style = style
        self.lock = threading.Lock()
        self.calls: list[dict[str, Any]] = []
        self.codes: dict[str, str | None] = {}
        self.valid_refresh: set[str] = set()
        self.issued_refresh: list[str] = []
        self.issued_access: list[str] = []
        self.fail_with: tuple[int, dict[str, Any]] | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- state ---------------------------------------------------------------------------

    def add_code(self, code: str, challenge: str | None = None) -> None:
        self.codes[code] = challenge

    def seed_refresh_token(self) -> str:
        token = f"rt-seed-{secrets.token_hex(6)}"
        self.valid_refresh.add(token)
        self.issued_refresh.append(token)
        return token

    def count(self, grant: str) -> int:
        return sum(1 for c in self.calls if c.get("grant_type") == grant)

    def _issue(self) -> dict[str, Any]:
        access = f"at-{len(self.issued_access)}-{secrets.token_hex(8)}"
        refresh = f"rt-{len(self.issued_refresh)}-{secrets.token_hex(8)}"
        self.issued_access.append(access)
        self.issued_refresh.append(refresh)
        self.valid_refresh.add(refresh)
        body = {"access_token": access, "refresh_token": refresh, "expires_in": 1800,
                "token_type": "bearer", "hub_id": 62515, "scope": "crm.read crm.write"}
        if self.style == "slack":
            body = {"ok": True, "access_token": access, "refresh_token": refresh,
                    "expires_in": 43200, "token_type": "bot", "scope": "channels:read,chat:write",
                    "bot_user_id": "U0BOT", "team": {"id": "T0TEAM", "name": "Team"}}
        return body

    def handle(self, path: str, headers: Any, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if grant == "refresh_token" and self.refresh_delay:
            time.sleep(self.refresh_delay)
        with self.lock:
            self.calls.append({"path": path, "auth": headers.get("Authorization"), **form})
            if self.fail_with is not None:
                return self.fail_with
            if headers.get("Authorization", "").startswith("Basic "):
                pair = base64.b64decode(headers["Authorization"][6:]).decode()
                client_id, _, secret = pair.partition(":")
            else:
                client_id, secret = form.get("client_id"), form.get("client_secret")
            if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
                return 401, {"error": "invalid_client"}
            if grant == "authorization_code":
                code = form.get("code", "")
                if code not in self.codes:
                    return 400, {"error": "invalid_grant", "error_description": "bad code"}
                challenge = self.codes.pop(code)
                if challenge is not None:
                    verifier = form.get("code_verifier", "")
                    digest = hashlib.sha256(verifier.encode()).digest()
                    if base64.urlsafe_b64encode(digest).decode().rstrip("=") != challenge:
                        return 400, {"error": "invalid_grant", "error_description": "PKCE"}
                return 200, self._issue()
            if grant == "refresh_token":
                token = form.get("refresh_token", "")
                if token not in self.valid_refresh:
                    if self.style == "slack":
                        return 200, {"ok": False, "error": "invalid_refresh_token"}
                    return 400, {"error": "invalid_grant",
                                 "error_description": "expired access/refresh token"}
                self.valid_refresh.discard(token)
                return 200, self._issue()
            return 400, {"error": "unsupported_grant_type"}

    # -- server --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TokenServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = outer.handle(self.path, self.headers, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
