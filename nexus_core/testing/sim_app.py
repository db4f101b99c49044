"""The building blocks of a provider simulator: a small WSGI router, the request log, fault
injection and a provider-style rate limiter.

A provider's simulator is a :class:`SimApp` whose routes answer with the provider's real shapes
(paging, errors, headers). The app records every request (:attr:`SimApp.log`) and, before a
route runs, applies the armed faults (:class:`Faults`: 5xx bursts, 429s with Retry-After, slow
answers, the whole API down) and the rate limiter (:class:`SimRateLimit`), so the same tests
work against every simulator::

    app = SimApp("acme")

    @app.route("GET", "/v1/widgets")
    def widgets(req: SimRequest) -> SimResponse:
        return SimResponse.json({"results": [...], "next": None})

Served by :class:`~nexus_core.testing.simulator.SimulatorServer`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import attrs


@attrs.define
class SimRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = attrs.Factory(dict)  # path parameters

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode("latin-1")).items()}

    @property
    def bearer(self) -> str | None:
        auth = self.header("authorization") or ""
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@attrs.define
class SimResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = attrs.Factory(dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> SimResponse:
        return cls(status, json.dumps(data, separators=(",", ":")).encode(),
                   {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def redirect(cls, location: str) -> SimResponse:
        return cls(302, b"", {"Location": location})


@attrs.frozen
class LoggedRequest:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    status: int
    account: str | None = None


Handler = Callable[[SimRequest], SimResponse]
_STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 302: "Found", 400: "Bad Request",
                401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                503: "Service Unavailable"}


@attrs.define
class _Fault:
    response: SimResponse | None
    delay: float
    remaining: int
    path: re.Pattern[str] | None


class Faults:
    """Faults armed by a test, applied to the next matching API requests (OAuth endpoints are
    exempt unless ``oauth=True``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Fault] = []
        self.is_down = False

    def fail_next(self, status: int = 500, times: int = 1, *, body: Any = None,
                  headers: dict[str, str] | None = None, path: str | None = None) -> None:
        """Answer the next ``times`` requests (whose path matches the regex ``path``, if given)
        with ``status``."""
        body = {"error": "injected", "status": status} if body is None else body
        self._arm(SimResponse.json(body, status, headers), 0.0, times, path)

    def rate_limit_next(self, retry_after: float = 1, times: int = 1, *, body: Any = None,
                        headers: dict[str, str] | None = None, path: str | None = None) -> None:
        """A 429 with ``Retry-After`` for the next ``times`` requests."""
        self.fail_next(429, times, body=body if body is not None else {"error": "rate_limited"},
                       headers={"Retry-After": f"{retry_after:g}", **(headers or {})}, path=path)

    def slow_next(self, seconds: float, times: int = 1, *, path: str | None = None) -> None:
        self._arm(None, seconds, times, path)

    def _arm(self, response: SimResponse | None, delay: float, times: int, path: str | None
             ) -> None:
        with self._lock:
            self._armed.append(_Fault(response, delay, times,
                                      re.compile(path) if path else None))

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Every API request is a 503 inside the block (the provider is down)."""
        self.is_down = True
        try:
            yield
        finally:
            self.is_down = False

    def take(self, path: str) -> tuple[SimResponse | None, float]:
        if self.is_down:
            return SimResponse.json({"error": "service unavailable"}, 503), 0.0
        with self._lock:
            for fault in self._armed:
                if fault.remaining > 0 and (fault.path is None or fault.path.search(path)):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._armed.remove(fault)
                    return fault.response, fault.delay
        return None, 0.0

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()
        self.is_down = False


class SimRateLimit:
    """The provider's own limit, as it enforces it: a fixed window of ``limit`` requests per
    ``window`` seconds per (account, bucket). Over it: ``too_many(retry_after, bucket)``'s
    answer. ``bucket_of(request)`` names the bucket of a request and ``buckets`` gives other
    buckets their own ``(limit, window)`` (a provider with several limits: HubSpot's search,
    Slack's method tiers)."""

    def __init__(self, limit: int, window: float, *,
                 too_many: Callable[[float, str], SimResponse] | None = None,
                 bucket_of: Callable[[SimRequest], str] | None = None,
                 buckets: dict[str, tuple[int, float]] | None = None) -> None:
        self.limit = limit
        self.window = window
        self.buckets = dict(buckets or {})
        self._too_many = too_many or (lambda retry_after, bucket: SimResponse.json(
            {"error": "rate_limited", "bucket": bucket}, 429,
            {"Retry-After": str(max(1, round(retry_after)))}))
        self.bucket_of = bucket_of or (lambda req: "default")
        #: (account, bucket) -> (limit, window): an account on another API tier.
        self.account_limits: dict[tuple[str, str], tuple[int, float]] = {}
        self._windows: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()
        self.rejected = 0
        self.rejected_by_bucket: dict[str, int] = {}

    def set_limit(self, account: str, limit: int, window: float, *, bucket: str = "default"
                  ) -> None:
        """Give ``account`` its own limit for ``bucket`` (a higher or lower API tier)."""
        with self._lock:
            self.account_limits[(account, bucket)] = (limit, window)

    def limits(self, account: str | None, bucket: str) -> tuple[int, float]:
        """(limit, window) of ``bucket`` for ``account``."""
        found = self.account_limits.get((account or "-", bucket))
        return found or self.buckets.get(bucket, (self.limit, self.window))

    def check(self, account: str | None, request: SimRequest) -> SimResponse | None:
        bucket = self.bucket_of(request)
        limit, window = self.limits(account, bucket)
        key = (account or "-", bucket)
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= window:
                start, count = now, 0
            if count >= limit:
                self.rejected += 1
                self.rejected_by_bucket[bucket] = self.rejected_by_bucket.get(bucket, 0) + 1
                return self._too_many(window - (now - start), bucket)
            self._windows[key] = (start, count + 1)
        return None

    def remaining(self, account: str | None, bucket: str = "default") -> tuple[int, int, float]:
        """(limit, remaining, window) of a bucket now (for rate-limit headers)."""
        limit, window = self.limits(account, bucket)
        with self._lock:
            start, count = self._windows.get((account or "-", bucket), (0.0, 0))
        if time.monotonic() - start >= window:
            count = 0
        return limit, max(0, limit - count), window


class SimApp:
    """A WSGI app: routes, the request log, faults, the rate limiter and the auth check.

    ``authenticate(request) -> account | None`` (set by the simulator, usually its
    :class:`~nexus_core.testing.sim_oauth.OAuthServer`) guards the routes registered with
    ``auth=True``; ``unauthorized(request)`` is the provider's answer when it fails."""

    def __init__(self, name: str = "simulator") -> None:
        self.name = name
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self.log: list[LoggedRequest] = []
        self.faults = Faults()
        self.rate_limit: SimRateLimit | None = None
        self.authenticate: Callable[[SimRequest], str | None] = lambda req: None
        self.unauthorized: Callable[[SimRequest], SimResponse] = lambda req: SimResponse.json(
            {"error": "invalid_token"}, 401)
        #: Called with every authenticated answer, the rate limiter's 429s included (rate-limit
        #: headers, say): may change it.
        self.after: Callable[[SimRequest, SimResponse, str], SimResponse] | None = None
        self._lock = threading.Lock()

    def route(self, method: str, pattern: str, *, auth: bool = True
              ) -> Callable[[Handler], Handler]:
        """Register a handler for ``METHOD /path/{param}``; ``auth=False`` for endpoints that
        take no bearer token (OAuth, webhook tooling)."""
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

        def decorate(fn: Handler) -> Handler:
            self.routes.append((method.upper(), regex, fn, auth))
            return fn

        return decorate

    def requests(self, path: str | None = None) -> list[LoggedRequest]:
        """The logged API requests (``path``: a regex to match)."""
        with self._lock:
            log = list(self.log)
        if path is None:
            return log
        pattern = re.compile(path)
        return [r for r in log if pattern.search(r.path)]

    def _find(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool, bool]:
        seen_path = False
        for m, regex, fn, auth in self.routes:
            match = regex.match(path)
            if match:
                seen_path = True
                if m == method:
                    return fn, match.groupdict(), auth, True
        return None, {}, False, seen_path

    def handle(self, request: SimRequest) -> tuple[SimResponse, str | None]:
        handler, params, auth, seen = self._find(request.method, request.path)
        if handler is None:
            status = 405 if seen else 404
            return SimResponse.json({"error": "not found" if status == 404 else
                                     "method not allowed"}, status), None
        request.params = params
        account = None
        if auth:
            injected, delay = self.faults.take(request.path)
            if delay:
                time.sleep(delay)
            if injected is not None:
                return injected, None
            account = self.authenticate(request)
            if account is None:
                return self.unauthorized(request), None
            if self.rate_limit is not None:
                limited = self.rate_limit.check(account, request)
                if limited is not None:
                    if self.after is not None:  # a 429 carries the rate-limit headers too
                        limited = self.after(request, limited, account)
                    return limited, account
        try:
            response = handler(request)
        except Exception as exc:  # a simulator bug must be visible, not a hung connection
            return SimResponse.json({"error": "simulator error",
                                     "detail": f"{type(exc).__name__}: {exc}"}, 500), account
        if auth and account is not None and self.after is not None:
            response = self.after(request, response, account)
        return response, account

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        arrived = time.monotonic()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""),
                                               keep_blank_values=True).items()}
        request = SimRequest(environ["REQUEST_METHOD"].upper(), environ.get("PATH_INFO", "/"),
                             query, headers, body)
        response, account = self.handle(request)
        with self._lock:
            self.log.append(LoggedRequest(arrived, request.method, request.path,
                                          response.status, account))
        reason = _STATUS_TEXT.get(response.status, "Status")
        out_headers = {"Content-Length": str(len(response.body)), **response.headers}
        start_response(f"{response.status} {reason}", list(out_headers.items()))
        return [response.body]
