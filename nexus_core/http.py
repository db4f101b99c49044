"""The resilient HTTP session a connector uses to talk to its provider (``ctx.http``).

One :class:`ProviderSession` per (provider, installation), built on ``requests.Session`` with an
``HTTPAdapter(max_retries=urllib3 Retry)``: connection pooling across a job's calls, connect and
read timeouts on every request, retries with exponential backoff and jitter for idempotent
methods (and for others only with an idempotency key), ``Retry-After`` honoured. Around it:

* the shared rate limiter and circuit breaker (:mod:`nexus_core.ratelimit`,
  :mod:`nexus_core.breaker`) — one Redis round trip per request (fewer at high limits, where
  slots are leased);
* auth injection per ``Provider.auth_type`` and one refresh-and-retry on the provider's
  expired-token answer (``is_token_expired`` hook);
* the provider's rate-limit headers (``parse_rate_limit`` hook) kept for health checks;
* one log line (DEBUG for a 2xx answer on the first attempt, else INFO) and metrics per
  request, secrets redacted.
"""

from __future__ import annotations

import base64
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import orjson
import requests
from loguru import logger
from requests.adapters import HTTPAdapter

from nexus_core import metrics
from nexus_core.__about__ import __version__
from nexus_core.auth import lookup
from nexus_core.breaker import Admission, BreakerPolicy, CircuitBreaker
from nexus_core.config import Settings, get_settings
from nexus_core.errors import (
    AuthError,
    ConfigError,
    PluginError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from nexus_core.log import redact
from nexus_core.models import Credentials, Provider, Quota, RateLimits, RateLimitWait, Timeouts
from nexus_core.ratelimit import RateLimiter, account_scope
from nexus_core.retries import (
    IDEMPOTENT_METHODS,
    RETRY_STATUSES,
    CallState,
    SharedRetry,
    current_call,
    describe_failure,
    parse_rate_limit_headers,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient

class ProviderSession:
    """An installation's resilient session with its provider (see the module docstring).

    ``redis=None`` disables the shared limiter and breaker (logged). ``registry`` supplies the
    provider's ``is_token_expired``/``parse_rate_limit`` hooks; without it (or without the
    plugin's implementation) a bare 401 means "expired" and ``X-RateLimit-*`` headers are read.
    ``credentials`` is called before every request; ``refresh(stale)`` returns fresh
    credentials (the caller plugs the store's single-flight refresh in here).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        tenant_id: str,
        install_id: str,
        account_id: str | None = None,
        redis: RedisClient | None = None,
        registry: Any = None,
        credentials: Callable[[], Credentials | None] | None = None,
        refresh: Callable[[Credentials | None], Credentials] | None = None,
        config: dict[str, Any] | None = None,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or get_settings()
        config = config or {}
        self.provider = provider
        self.tenant_id = tenant_id
        self.install_id = install_id
        self.account = account_scope(tenant_id, install_id, account_id)
        self._credentials = credentials or (lambda: None)
        self._refresh = refresh
        self._context = {"provider": provider.id, "tenant_id": tenant_id, "install_id": install_id}
        self._error_context: dict[str, Any] = {"tenant_id": tenant_id, "install_id": install_id}
        self.timeouts = attrs.evolve(provider.timeouts, **_known(config.get("timeouts"), Timeouts))
        #: The provider's limits with the installation's tier applied (``config["rate_limits"]``).
        self.rate_limits: RateLimits = provider.rate_limits.with_overrides(
            config.get("rate_limits"))
        #: The provider's long-window quota with the installation's share applied
        #: (``config["quota"]``); None: the provider declares none.
        self.quota: Quota | None = provider.quota.with_overrides(config.get("quota")) \
            if provider.quota is not None else None
        self.max_wait = settings.rate_limit_max_wait
        self._headroom = settings.rate_limit_headroom
        env = provider.base_url_env
        #: The simulator/sandbox override; it wins over a per-installation API host.
        env_url = (env and (settings.get(env) or os.environ.get(env))) or ""
        self._env_base_url = env_url.rstrip("/")
        self.base_url = self._env_base_url or provider.base_url.rstrip("/")
        self._base_host = urlsplit(self.base_url).hostname
        self._api_key_header = str(config.get("api_key_header") or "Authorization")
        self._expired_hook = _hook(registry, "is_token_expired", provider.id)
        self._retry_hook = _hook(registry, "should_retry", provider.id)
        self._body_errors = provider.body_errors
        self._ok_false = None if provider.body_errors is None else re.compile(
            b'"' + re.escape(provider.body_errors.ok_field.rsplit(".", 1)[-1].encode())
            + rb'"\s*:\s*false')
        self._retry_statuses = frozenset(provider.retry.retry_statuses)
        self._backoff_base = settings.http_backoff_base
        self._parse_hook = _hook(registry, "parse_rate_limit", provider.id)
        self._wait_hook = _hook(registry, "rate_limit_wait", provider.id)
        self._last_status: dict[str, Any] | None = None
        self._status_shared_at = 0.0
        self._fresh: tuple[Credentials | None, Credentials] | None = None

        self._redis = redis
        self.limiter: RateLimiter | None = None
        #: One limiter per rate-limit bucket used so far (None: the main one, ``limiter``).
        self._limiters: dict[str | None, RateLimiter] = {}
        self.breaker: CircuitBreaker | None = None
        if redis is None:
            logger.bind(**self._context).info(
                "{}: no Redis given — shared rate limiter and circuit breaker DISABLED for "
                "installation {}", provider.id, install_id,
            )
        else:
            self.limiter = self._limiter(None)
            self.breaker = CircuitBreaker(
                redis,
                provider_id=provider.id,
                tenant_id=tenant_id,
                install_id=install_id,
                policy=BreakerPolicy(
                    failure_threshold=settings.breaker_failure_threshold,
                    cooldown=settings.breaker_cooldown,
                ),
                # The probe is one attempt: it may wait for a slot, then connect and read.
                probe_ttl=self.max_wait + self.timeouts.connect + self.timeouts.read + 1,
            )

        backoff = settings.http_backoff_base
        retry = SharedRetry(
            total=provider.retry.max_retries,
            status_forcelist=self._retry_statuses,
            allowed_methods=IDEMPOTENT_METHODS,
            backoff_factor=backoff,
            backoff_jitter=backoff,
            backoff_max=provider.retry.max_backoff,
            retry_after_max=max(1, int(provider.retry.max_backoff)),
            raise_on_status=False,
            multiplier=provider.retry.backoff_multiplier,
            before_retry=self._before_retry,
        )
        self.session = requests.Session()
        # requests re-reads proxy and CA-bundle variables by scanning os.environ on every request
        # (three scans: 10-25% of a request's client time against a fast local server). A
        # worker's environment does not change during a job: read it once per host.
        self.session.trust_env = False
        self._env_cache: dict[tuple[str, str], dict[str, Any]] = {}
        adapter = _SharedPoolAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = f"nexus-core/{__version__} ({provider.id})"
        self._requests_total: dict[tuple[str, str], Any] = {}
        self._duration: dict[str, Any] = {}

    # -- public API --------------------------------------------------------------------------

    def request(
        self, method: str, url: str, *, idempotency_key: str | None = None,
        rate_limit_bucket: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """Send one request with everything applied; returns the provider's answer.

        ``rate_limit_bucket`` names one of the provider's ``RateLimits.buckets`` the request
        draws from instead of the account's main budget (e.g. a search API).

        Raises :class:`RateLimited`, :class:`ProviderUnavailable` (breaker open),
        :class:`ProviderError` (unreachable, or 5xx after the retries) and :class:`AuthError`
        (refresh failed, or still expired after it). Other 4xx answers are returned.
        """
        if rate_limit_bucket is not None and rate_limit_bucket not in self.rate_limits.buckets:
            raise PluginError(
                f"{self.provider.id} declares no rate-limit bucket {rate_limit_bucket!r}; "
                f"its buckets: {', '.join(self.rate_limits.buckets) or 'none'}",
                provider=self.provider.id,
                hint="declare it in Provider.rate_limits=RateLimits(..., buckets={...})",
            )
        method = method.upper()
        kwargs["timeout"] = kwargs.get("timeout") or (self.timeouts.connect, self.timeouts.read)
        headers = dict(kwargs.pop("headers", None) or {})
        if idempotency_key is not None:
            headers.setdefault("Idempotency-Key", idempotency_key)
        path = redact(urlsplit(url).path or "/")
        call = CallState(method=method, path=path, any_method=idempotency_key is not None,
                         bucket=rate_limit_bucket)
        start = time.perf_counter()
        status = "error"
        with logger.contextualize(**self._context):
            token = current_call.set(call)
            try:
                resp = self._send(method, url, headers, kwargs, call)
                status = str(resp.status_code)
                return resp
            except ProviderUnavailable:
                status = "breaker_open"  # never sent
                raise
            except Exception as exc:
                status = str(call.status or ("rate_limited" if isinstance(exc, RateLimited)
                                             else "error"))
                raise
            finally:
                current_call.reset(token)
                elapsed = time.perf_counter() - start
                self._observe(method, status, elapsed)
                # Every request is logged; a plain success at DEBUG (a backfill makes thousands,
                # and formatting each line costs ~50 us), anything else — an error, a retry,
                # a 429, an expired token, a 4xx answer — at INFO.
                quiet = call.retries == 0 and status[:1] == "2"
                logger.log(
                    "DEBUG" if quiet else "INFO", "{} {} -> {} in {:.0f} ms (attempt {})",
                    method, call.path, status, elapsed * 1000, call.retries + 1,
                )

    def get(self, url: str, **kw: Any) -> requests.Response:
        return self.request("GET", url, **kw)

    def head(self, url: str, **kw: Any) -> requests.Response:
        return self.request("HEAD", url, **kw)

    def options(self, url: str, **kw: Any) -> requests.Response:
        return self.request("OPTIONS", url, **kw)

    def post(self, url: str, **kw: Any) -> requests.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> requests.Response:
        return self.request("PUT", url, **kw)

    def patch(self, url: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", url, **kw)

    def rate_limit_status(self) -> dict[str, Any] | None:
        """The provider's last rate-limit headers for this account, parsed (this process's
        last answer, else the last one any process shared through Redis)."""
        if self._last_status is not None:
            return dict(self._last_status)
        return self.limiter.read_status() if self.limiter is not None else None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ProviderSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one logical request -----------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        kwargs: dict[str, Any],
        call: CallState,
    ) -> requests.Response:
        limiter = self._limiter(call.bucket) if self._redis is not None else None
        admission = self._admit(limiter, first=True)
        call.single_attempt = admission.probe
        refreshed = False
        rate_limited = 0
        hook_retries = 0
        while True:
            creds = self._current_credentials()
            full_url = self._resolve(url, creds)
            parts = urlsplit(full_url)
            host = parts.hostname or ""
            try:
                resp = self.session.request(
                    method, full_url, headers=headers or None,
                    **{"auth": self._auth(creds, host),
                       **self._environment(parts.scheme, parts.netloc, full_url), **kwargs},
                )
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                reason, before_sending = describe_failure(exc, self.timeouts)
                self._record(limiter, admission, ok=False)
                raise ProviderError(
                    f"{self.provider.name} could not be reached: {reason} for {method} "
                    f"{host}{call.path} after {call.retries + 1} attempt(s)",
                    retryable=before_sending or method in IDEMPOTENT_METHODS or call.any_method,
                    provider=self.provider.id,
                    hint=f"check that {host} is the right host and reachable from this worker",
                    **self._error_context,
                ) from None
            call.status = resp.status_code
            self._note_rate_limit(resp)

            verdict = self._rate_limit_verdict(resp, kwargs.get("stream", False)) \
                if resp.status_code >= 400 else None
            if resp.status_code == 429 or verdict is not None:
                self._record(limiter, admission, ok=True)  # the provider is up, just busy
                admission = attrs.evolve(admission, probe=False, failures=0)
                wait, scope = self._on_429(resp, limiter, verdict)
                resp.close()
                reason = f"{resp.status_code}" + (f" {verdict.reason}" if verdict is not None
                                                  and verdict.reason else "")
                if rate_limited < self.provider.retry.max_retries and wait <= self.max_wait:
                    rate_limited += 1
                    self._count_retry(call, "rate_limited", f"{reason}, cool-down {wait:.1f} s")
                    if limiter is None:
                        time.sleep(wait)
                    self._admit(limiter, first=False)
                    continue
                raise RateLimited(
                    f"{self.provider.name} answered {reason} (too many requests) for {method} "
                    f"{host}{call.path}; shared cool-down of {wait:.1f} s for {scope}",
                    retry_after=wait,
                    provider=self.provider.id,
                    status=resp.status_code,
                    **self._error_context,
                )

            stream = kwargs.get("stream", False)
            # An error inside a 2xx answer (Provider.body_errors): its code and what it means.
            code = self._body_error(resp, stream)
            kind = self._body_kind(code, creds)

            # Without credentials nothing can have expired (an authorize/refresh hook's
            # session): the answer goes back to the caller as it is.
            if creds is not None and (kind == "expired" or self._is_expired(resp, stream, code)):
                if refreshed or self._refresh is None:
                    outcome = "still_expired" if refreshed else "no_refresh"
                    metrics.TOKEN_REFRESHES.labels(self.provider.id, outcome).inc()
                    self._record(limiter, admission, ok=True)
                    resp.close()
                    raise AuthError(
                        f"{self.provider.name} rejected the access token for {method} "
                        f"{host}{call.path}"
                        + (" even after a refresh" if refreshed else " and no refresh is set up"),
                        needs_reauth=True,
                        provider=self.provider.id,
                        hint="the tenant must reconnect the installation",
                        **self._error_context,
                    )
                resp.close()
                self._refresh_credentials(creds)
                refreshed = True
                self._count_retry(call, "token_expired", "access token expired, refreshed")
                self._admit(limiter, first=False)
                continue

            if kind == "reauth":
                self._record(limiter, admission, ok=True)  # the provider is up
                resp.close()
                raise AuthError(
                    f"{self.provider.name} answered {code!r} for {method} {host}{call.path}: "
                    "the grant is revoked or the account is inactive",
                    needs_reauth=True,
                    provider=self.provider.id,
                    hint="the tenant must reconnect the installation",
                    **self._error_context,
                )

            ok = resp.status_code not in self._retry_statuses
            if ok and (kind == "transient" or self._should_retry(resp, stream)):
                # The provider says this answer is a transient failure: retried like a 5xx.
                retryable = method in IDEMPOTENT_METHODS or call.any_method
                if retryable and not admission.probe and \
                        hook_retries < self.provider.retry.max_retries:
                    hook_retries += 1
                    resp.close()
                    self._count_retry(call, "should_retry",
                                      f"answered {resp.status_code}, a transient error")
                    time.sleep(self._hook_backoff(hook_retries))
                    self._admit(limiter, first=False)
                    continue
                ok = False
            self._record(limiter, admission, ok=ok)
            if not ok:
                resp.close()
                error = ProviderError(
                    f"{self.provider.name} answered {resp.status_code} for {method} "
                    f"{host}{call.path} after {call.retries + 1} attempt(s)",
                    retryable=True,
                    status=resp.status_code,
                    provider=self.provider.id,
                    **self._error_context,
                )
                error.response = resp  # type: ignore[attr-defined]
                raise error
            if kind == "failed":
                resp.close()
                error = ProviderError(
                    f"{self.provider.name} answered error {code!r} for {method} "
                    f"{host}{call.path}",
                    retryable=False,
                    status=resp.status_code,
                    provider=self.provider.id,
                    **self._error_context,
                )
                error.code = code  # type: ignore[attr-defined]
                raise error
            return resp

    def _limiter(self, bucket: str | None) -> RateLimiter:
        """The shared limiter of ``bucket`` (None: the account's main budget), built once."""
        limiter = self._limiters.get(bucket)
        assert self._redis is not None  # callers check: no Redis, no shared limiter
        if limiter is None:
            limits = self.rate_limits.bucket(bucket)
            limiter = self._limiters[bucket] = RateLimiter(
                self._redis,
                provider_id=self.provider.id,
                account=self.account,
                requests_per_second=limits.requests_per_second,
                burst_size=limits.burst_size,
                max_wait=self.max_wait,
                headroom=self._headroom,
                error_context=self._error_context,
                bucket=bucket,
            )
        return limiter

    def _admit(self, limiter: RateLimiter | None, *, first: bool) -> Admission:
        if limiter is None:
            return Admission()
        return limiter.acquire(self.breaker if first else None, lease=first)

    def _record(self, limiter: RateLimiter | None, admission: Admission, *, ok: bool) -> None:
        if self.breaker is not None:
            if not ok and limiter is not None:
                limiter.drop_lease()
            self.breaker.record(admission, ok)

    def _before_retry(self, last: Any) -> None:
        """Called by urllib3 between attempts of one request (see :class:`SharedRetry`)."""
        call = current_call.get() or CallState()
        if last is not None and last.status:
            reason, detail = str(last.status), f"answered {last.status}"
        elif last is not None and last.error is not None:
            detail, _ = describe_failure(last.error, self.timeouts)
            reason = detail.split(" (")[0].replace(" ", "_")
        else:
            reason = detail = "error"
        self._count_retry(call, reason, detail)
        if self._redis is not None:
            # A retry is a request: it takes a slot of the shared limit.
            self._limiter(call.bucket).acquire(lease=False)

    def _count_retry(self, call: CallState, reason: str, detail: str) -> None:
        call.retries += 1
        metrics.HTTP_RETRIES.labels(self.provider.id, reason).inc()
        logger.warning("{} {} {}: retrying (attempt {})", call.method, call.path, detail,
                       call.retries + 1)

    # -- auth --------------------------------------------------------------------------------

    def _current_credentials(self) -> Credentials | None:
        creds = self._credentials()
        if self._fresh is not None and creds == self._fresh[0]:
            return self._fresh[1]  # the caller still hands out the stale ones
        return creds

    def _refresh_credentials(self, stale: Credentials | None) -> None:
        assert self._refresh is not None
        try:
            fresh = self._refresh(stale)
        except AuthError:
            metrics.TOKEN_REFRESHES.labels(self.provider.id, "failed").inc()
            raise
        except Exception as exc:
            metrics.TOKEN_REFRESHES.labels(self.provider.id, "failed").inc()
            raise AuthError(
                f"refreshing the {self.provider.name} access token failed: "
                f"{type(exc).__name__}: {redact(str(exc))}",
                provider=self.provider.id,
                **self._error_context,
            ) from None
        metrics.TOKEN_REFRESHES.labels(self.provider.id, "ok").inc()
        self._fresh = (self._credentials(), fresh)

    def _auth(self, creds: Credentials | None, host: str) -> _HeaderAuth | None:
        # Credentials go only to the provider's own hosts, never to a URL found in a payload.
        if creds is None or not host:
            return None
        if host != self._base_host:
            instance = creds.extra.get("instance_url") if creds.extra else None
            if not instance or urlsplit(instance).hostname != host:
                return None
        kind = self.provider.auth_type
        if kind == "basic" and creds.username is not None:
            raw = f"{creds.username}:{creds.password or ''}".encode()
            return _HeaderAuth("Authorization", "Basic " + base64.b64encode(raw).decode("ascii"))
        if kind == "api_key" and creds.api_key:
            if self._api_key_header.lower() == "authorization":
                return _HeaderAuth("Authorization", f"Bearer {creds.api_key}")
            return _HeaderAuth(self._api_key_header, creds.api_key)
        if creds.access_token:
            scheme = "Bearer" if creds.token_type.lower() == "bearer" else creds.token_type
            return _HeaderAuth("Authorization", f"{scheme} {creds.access_token}")
        return None

    def _should_retry(self, resp: requests.Response, stream: bool) -> bool:
        if self._retry_hook is None:
            return False
        return self._retry_hook(provider=self.provider, status=resp.status_code,
                                headers=resp.headers, body=b"" if stream else resp.content) is True

    def _hook_backoff(self, attempt: int) -> float:
        """:class:`SharedRetry`'s backoff for a retry the ``should_retry`` hook asked for."""
        if attempt <= 1:
            return 0.0
        value = self._backoff_base * self.provider.retry.backoff_multiplier ** (attempt - 1)
        value += random.random() * self._backoff_base  # noqa: S311 - jitter, not crypto
        return max(0.0, min(self.provider.retry.max_backoff, value))

    def _body_error(self, resp: requests.Response, stream: bool) -> str | None:
        """The error code of a 2xx answer that ``Provider.body_errors`` marks as an error
        (``{"ok": false, "error": "invalid_auth"}``); None for any other answer."""
        spec = self._body_errors
        if spec is None or stream or not 200 <= resp.status_code < 300:
            return None
        content = resp.content
        # Cheap test first: most answers are successes, and a JSON text can hold the field
        # name followed by `false` only as a key (inside a string the quotes are escaped).
        if self._ok_false is None or not self._ok_false.search(content):
            return None
        try:
            data = orjson.loads(content)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or lookup(data, spec.ok_field) is not False:
            return None
        for path in spec.error_field:
            value = lookup(data, path)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)[:200]
        return "unknown_error"

    def _body_kind(self, code: str | None, creds: Credentials | None) -> str | None:
        """What an error inside a 2xx answer means (:meth:`BodyErrors.kind`); without
        credentials (an authorize/refresh hook's session) nothing can expire or be revoked."""
        if code is None or self._body_errors is None:
            return None
        kind = self._body_errors.kind(code)
        if creds is None and kind in ("expired", "reauth"):
            return "failed"
        return kind

    def _is_expired(self, resp: requests.Response, stream: bool, code: str | None = None
                    ) -> bool:
        status = resp.status_code
        if self._expired_hook is None:
            return status == 401
        if status < 400 and code is None:
            return False
        body = b"" if stream else resp.content
        return bool(self._expired_hook(
            provider=self.provider, status=status, headers=resp.headers, body=body
        ))

    # -- rate-limit answers ------------------------------------------------------------------

    def _rate_limit_verdict(self, resp: requests.Response, stream: bool
                            ) -> RateLimitWait | None:
        """The ``rate_limit_wait`` hook's reading of an error answer (None: not a rate limit,
        or no hook)."""
        if self._wait_hook is None:
            return None
        answer = self._wait_hook(provider=self.provider, status=resp.status_code,
                                 headers=resp.headers, body=b"" if stream else resp.content)
        if answer is None or answer is False:
            return None
        try:
            if isinstance(answer, RateLimitWait):
                return answer
            if isinstance(answer, int | float) and not isinstance(answer, bool):
                return RateLimitWait(answer)
        except ValueError:
            pass
        logger.warning("{}: the rate_limit_wait hook answered {!r}, not seconds or a "
                       "RateLimitWait; ignored", self.provider.id, answer)
        return None

    def _on_429(self, resp: requests.Response, limiter: RateLimiter | None,
                verdict: RateLimitWait | None = None) -> tuple[float, str]:
        """Start the shared cool-down of a rate-limit answer: (seconds, what cools down)."""
        bucket = limiter.bucket if limiter is not None else None
        if verdict is not None:
            reason = f"{resp.status_code} {verdict.reason}".strip()
            if verdict.scope == "account":
                self._pause_account(verdict.seconds, reason)
                return verdict.seconds, "every request of this account"
            if limiter is not None:
                limiter.cooldown(verdict.seconds, reason)
            return verdict.seconds, "this account" + (f" (bucket {bucket})" if bucket else "")
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        if wait is None:
            # The provider's rate-limit headers describe its main budget, not a bucket's.
            interval = (self._last_status or {}).get("interval_seconds") \
                if bucket is None else None
            limits = self.rate_limits.bucket(bucket)
            wait = float(interval) if isinstance(interval, int | float) else (
                limits.burst_size / limits.requests_per_second
            )
        if limiter is not None:
            limiter.cooldown(wait, f"{resp.status_code} too many requests")
        return wait, "this account" + (f" (bucket {bucket})" if bucket else "")

    def _pause_account(self, seconds: float, reason: str) -> None:
        """A cool-down of every budget (bucket) of the account: nothing is sent for it."""
        if self._redis is not None:
            for name in (None, *self.rate_limits.buckets):
                self._limiter(name).cooldown(seconds, reason)

    def _note_rate_limit(self, resp: requests.Response) -> None:
        if self._parse_hook is not None:
            status = self._parse_hook(provider=self.provider, headers=resp.headers)
        else:
            status = parse_rate_limit_headers(resp.headers)
        if not status:
            return
        self._last_status = status
        now = time.monotonic()
        quota = self.quota is not None and self.quota.reached(status)
        if self.limiter is not None and (quota or now - self._status_shared_at >= 1.0):
            self._status_shared_at = now
            self.limiter.store_status(status)
        if quota:
            self._quota_reached(status)

    def _quota_reached(self, status: dict[str, Any]) -> None:
        """The provider reports its quota used up to the share kept free: every request of
        the account pauses (:class:`~nexus_core.models.Quota`). This answer is still the
        caller's; the next request of any process waits, or is deferred."""
        assert self.quota is not None
        reason = (f"quota reserve reached: {status['quota_used']:g} of {status['quota_max']:g} "
                  f"used, {self.quota.reserve:.0%} kept free for other clients")
        metrics.RATE_LIMITED.labels(self.provider.id, "quota_reserve").inc()
        logger.warning("{}: {}; every request of this account pauses for {:.0f} s",
                       self.provider.name, reason, self.quota.pause)
        self._pause_account(self.quota.pause, reason)

    # -- helpers -----------------------------------------------------------------------------

    def _environment(self, scheme: str, netloc: str, url: str) -> dict[str, Any]:
        """:func:`_environment` once per host and session (a job's environment is fixed)."""
        key = (scheme, netloc)
        env = self._env_cache.get(key)
        if env is None:
            env = self._env_cache[key] = _environment(scheme, netloc, url)
        return env

    def _resolve(self, url: str, creds: Credentials | None) -> str:
        if urlsplit(url).scheme:
            return url
        instance = creds.extra.get("instance_url") if creds is not None else None
        base = (self._env_base_url or instance or self.base_url).rstrip("/")
        if not base:
            raise ConfigError(
                f"{self.provider.id} has no base URL to resolve {url!r} against",
                provider=self.provider.id,
                hint=f"set {self.provider.base_url_env or 'Provider.base_url'} or pass a full URL",
            )
        return f"{base}/{url.lstrip('/')}"

    def _observe(self, method: str, status: str, elapsed: float) -> None:
        counter = self._requests_total.get((method, status))
        if counter is None:
            counter = metrics.HTTP_REQUESTS.labels(self.provider.id, method, status)
            self._requests_total[(method, status)] = counter
        counter.inc()
        hist = self._duration.get(method)
        if hist is None:
            hist = self._duration[method] = metrics.HTTP_DURATION.labels(self.provider.id, method)
        hist.observe(elapsed)


_ENV_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}

#: The process's connection pools (urllib3 PoolManagers by pool settings), shared by every
#: ProviderSession: a worker's jobs reuse keep-alive connections to a provider instead of each
#: job connecting (and TLS-handshaking) again. Pools are keyed by host and TLS settings inside
#: urllib3; requests carry their own auth headers. A forked child (an RQ work-horse) starts
#: with none: it never writes to a socket its parent may use.
_POOLS: dict[tuple[Any, ...], Any] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_in_child() -> None:
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools_in_child)


def _environment(scheme: str, netloc: str, url: str) -> dict[str, Any]:
    """What ``requests`` with ``trust_env`` would take from the environment for ``url``:
    proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) and ``REQUESTS_CA_BUNDLE``/
    ``CURL_CA_BUNDLE``. netrc is not read: the session injects credentials itself.

    Cached per process and host, keyed by those variables' names and values: a changed
    variable is seen by the next session (each session asks once per host)."""
    get = os.environ.get
    # One pass over the environment (requests makes three per request, each lower-casing
    # every name): the proxy variables in any case, and the CA bundle variables.
    proxy_vars = tuple(item for item in os.environ.items() if item[0][-6:].lower() == "_proxy")
    key = (scheme, netloc, proxy_vars, get("REQUESTS_CA_BUNDLE"), get("CURL_CA_BUNDLE"))
    env = _ENV_CACHE.get(key)
    if env is None:
        env = {}
        # Without proxy variables there is nothing to read on Linux; elsewhere the OS proxy
        # settings (macOS, Windows) are consulted through requests.
        if proxy_vars or sys.platform != "linux":
            proxies = requests.utils.get_environ_proxies(url)
            if proxies:
                env["proxies"] = proxies
        bundle = get("REQUESTS_CA_BUNDLE") or get("CURL_CA_BUNDLE")
        if bundle:
            env["verify"] = bundle
        if len(_ENV_CACHE) >= 1024:
            _ENV_CACHE.clear()
        _ENV_CACHE[key] = env
    return env


class _SharedPoolAdapter(HTTPAdapter):
    """requests' adapter on the process's shared pool manager (see ``_POOLS``); closing a
    session leaves the shared connections open for the next job."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        # requests' documented extension point: it sets up what it needs (pickling fields, a
        # manager of its own, which is dropped), then the process's shared manager takes over.
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        key = (connections, maxsize, block, tuple(sorted(pool_kwargs.items())))
        with _POOLS_LOCK:
            pool = _POOLS.get(key)
            if pool is None:
                pool = _POOLS[key] = self.poolmanager
        self.poolmanager = pool

    def close(self) -> None:
        for proxy in self.proxy_manager.values():
            proxy.clear()


class _HeaderAuth(requests.auth.AuthBase):
    """Sets the credential header on the prepared request (a ``requests`` auth hook: cheaper
    than merging a headers dict per call, and it keeps netrc out)."""

    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers[self.name] = self.value
        return r


def _known(overrides: Any, cls: type) -> dict[str, Any]:
    """The installation config's overrides for an attrs class (unknown keys ignored)."""
    if not isinstance(overrides, dict):
        return {}
    names = {f.name for f in attrs.fields(cls)}
    return {k: v for k, v in overrides.items() if k in names and v is not None}


def _hook(registry: Any, name: str, provider_id: str) -> Callable[..., Any] | None:
    if registry is None or not registry.implements(name, provider_id):
        return None
    return registry.hook(name, provider_id)


__all__ = ["IDEMPOTENT_METHODS", "RETRY_STATUSES", "ProviderSession", "parse_rate_limit_headers"]
