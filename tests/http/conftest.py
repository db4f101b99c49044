"""Local provider APIs for the HTTP client's tests: real sockets on 127.0.0.1, nothing patched.

``ProviderServer`` is a threaded ``http.server`` whose answers a test scripts with a function
``app(request) -> (status, headers, body)``; it records every request it received. ``HANG`` as
the answer keeps the connection open without answering (read timeouts).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
import pytest
from loguru import logger

from nexus_core.config import load_settings
from nexus_core.http import ProviderSession
from nexus_core.models import OAuthConfig, Provider, RateLimits, RetryConfig, Timeouts

HANG = object()
BASE_URL_ENV = "ACME_BASE_URL"


@attrs.frozen
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: The client's source port: requests with the same port came on one connection.
    port: int = 0


Answer = tuple[int, dict[str, str], bytes] | object


def json_answer(status: int, payload: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, dict(self.headers.items()), body, time.monotonic(),
                    self.client_address[1])
        with self.server.lock:
            self.server.seen.append(seen)
        answer = self.server.app(seen)
        if answer is HANG:
            self.server.stopping.wait(10)
            self.close_connection = True
            return
        status, headers, payload = answer  # type: ignore[misc]
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head += [f"{k}: {v}" for k, v in {"Content-Length": str(len(payload)), **headers}.items()]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self.app: Callable[[Seen], Answer] = lambda req: json_answer(200, {"ok": True})


class ProviderServer:
    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def seen(self) -> list[Seen]:
        with self._server.lock:
            return list(self._server.seen)

    def answer(self, app: Callable[[Seen], Answer]) -> None:
        self._server.app = app

    def script(self, *answers: Answer) -> None:
        """Answer with these in order, then repeat the last one."""
        queue = list(answers)

        def app(_req: Seen) -> Answer:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.answer(app)

    def start(self) -> ProviderServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def provider_server() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    try:
        yield server
    finally:
        server.stop()


def make_provider(**overrides: Any) -> Provider:
    fields: dict[str, Any] = {
        "id": "acme",
        "name": "Acme CRM",
        "version": "1.0",
        "auth_type": "oauth2",
        "base_url": "https://api.acme.invalid",
        "base_url_env": BASE_URL_ENV,
        "rate_limits": RateLimits(requests_per_second=1000, burst_size=1000),
        "timeouts": Timeouts(connect=1.0, read=2.0),
        "retry": RetryConfig(max_retries=2, backoff_multiplier=2.0, max_backoff=0.2),
        "oauth": OAuthConfig(authorize_url="https://app.acme.invalid/oauth/authorize",
                             token_url="https://api.acme.invalid/oauth/token"),
        "streams": ("contacts",),
    }
    fields.update(overrides)
    return Provider(**fields)


def make_settings(base_url: str = "", **env: str) -> Any:
    values = {
        BASE_URL_ENV: base_url,
        "NEXUS_HTTP_BACKOFF_BASE": "0.01",
        "NEXUS_BREAKER_COOLDOWN": "1",
        "NEXUS_BREAKER_FAILURE_THRESHOLD": "3",
    }
    values.update(env)
    return load_settings(environ=values, env_file=None)


@pytest.fixture
def open_session() -> Iterator[Callable[..., ProviderSession]]:
    """``open_session(base_url, provider=..., env=..., **ProviderSession kwargs)``; closed after."""
    sessions: list[ProviderSession] = []

    def factory(
        base_url: str = "",
        *,
        provider: Provider | None = None,
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> ProviderSession:
        kw.setdefault("tenant_id", "t1")
        kw.setdefault("install_id", "i1")
        session = ProviderSession(
            provider or make_provider(), settings=make_settings(base_url, **(env or {})), **kw
        )
        sessions.append(session)
        return session

    try:
        yield factory
    finally:
        for session in sessions:
            session.close()


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    """Every loguru record emitted during the test: ``{"level", "message", "extra"}``."""
    records: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        r = message.record
        records.append({"level": r["level"].name, "message": r["message"],
                        "extra": dict(r["extra"])})

    handler = logger.add(sink, level="DEBUG", format="{message}")
    try:
        yield records
    finally:
        logger.remove(handler)


@pytest.fixture
def kit() -> Any:
    """The helpers above, for test modules (``--import-mode=importlib`` cannot import conftest)."""
    import types

    return types.SimpleNamespace(
        HANG=HANG, Seen=Seen, ProviderServer=ProviderServer, json_answer=json_answer,
        TokenBucket=TokenBucket,
        make_provider=make_provider, make_settings=make_settings,
    )


class TokenBucket:
    """The provider's own limit, enforced on arrival (what a real API does)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last: float | None = None
        self.lock = threading.Lock()

    def take(self, now: float) -> bool:
        with self.lock:
            if self.last is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False
