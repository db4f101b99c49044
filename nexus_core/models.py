"""The data model: frozen attrs classes shared by the core, plugins, jobs and the store.

Every model round-trips through JSON with the one converter in :mod:`nexus_core.converters`.
Secrets (tokens, API keys) are excluded from ``repr`` so that a model printed in a log line or a
traceback never shows them.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard

import attrs

from nexus_core.errors import PluginError

AuthType = Literal["oauth2", "api_key", "basic", "none"]
InstallStatus = Literal["active", "pending_authorization", "needs_reauth", "disabled"]
Operation = Literal["backfill", "delta", "webhook", "auth", "refresh", "health"]
WebhookScheme = Literal[
    "hubspot-v1", "hubspot-v2", "hubspot-v3", "slack-v0", "standard-webhooks", "stripe", "hmac",
    "custom",
]
#: Placeholders of an :class:`HmacSpec` message template.
HMAC_PLACEHOLDERS: tuple[str, ...] = ("body", "timestamp", "method", "url")

INSTALL_STATUSES: tuple[str, ...] = ("active", "pending_authorization", "needs_reauth",
                                     "disabled")
AUTH_TYPES: tuple[str, ...] = ("oauth2", "api_key", "basic", "none")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


def _names(value: Any) -> tuple[str, ...]:
    """A tuple of names; one name alone is accepted too (``"invalid_grant"``)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _primary_key(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    return tuple(str(v) for v in value)


@attrs.frozen
class Stream:
    """One kind of object a provider syncs, as sinks and docs need to know it.

    ``primary_key`` is the field (or fields, for a composite key) that identifies a record: a
    sink upserts on it. ``cursor_field`` is the field a delta reads changes by (``updated_at``,
    ``lastmodifieddate``, ``SystemModstamp``); None when the stream has
    no incremental read. ``json_schema`` optionally describes one record's ``data``.
    """

    #: The stream's name, unique within the provider (`contacts`).
    name: str
    #: Field(s) of a record's data identifying it; sinks upsert on it.
    primary_key: str | tuple[str, ...] = attrs.field(default="id", converter=_primary_key)
    #: Field a delta reads changes by; None when the stream has no incremental read.
    cursor_field: str | None = None
    # Dicts are left out of the hash, so that a Provider stays hashable.
    #: Optional JSON Schema of one record's data (the standard suite checks it).
    json_schema: dict[str, Any] | None = attrs.field(default=None, hash=False)
    #: What the stream holds, for docs and `nexus providers show`.
    description: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a stream name must be a non-empty string, got {self.name!r}")
        if not self.primary_key:
            raise ValueError(f"stream {self.name!r}: primary_key must name at least one field")


@attrs.frozen
class StreamPattern:
    """Streams an installation may name beyond ``Provider.streams``: any name its config
    lists (``{"streams": ["contacts", "tickets"]}``) that matches ``pattern`` — a regular
    expression matched against the whole name — is a stream with this primary key and cursor
    field, read by the same hooks. For APIs with open-ended object types (CRM object types,
    custom objects an account defines)."""

    #: A regular expression a stream name must match entirely (`[a-z_]+`).
    pattern: str
    #: Primary key of the records of such a stream.
    primary_key: str | tuple[str, ...] = attrs.field(default="id", converter=_primary_key)
    #: Field their deltas read changes by; None: no incremental read.
    cursor_field: str | None = None
    #: What such streams are, for docs.
    description: str = ""

    def __attrs_post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except (re.error, TypeError) as exc:
            raise ValueError(f"StreamPattern.pattern is not a regular expression: {exc}"
                             ) from None

    def matches(self, name: Any) -> bool:
        return isinstance(name, str) and 0 < len(name) <= 200 and \
            re.fullmatch(self.pattern, name) is not None

    def stream(self, name: str) -> Stream:
        return Stream(name, primary_key=self.primary_key, cursor_field=self.cursor_field,
                      description=self.description)


def _streams(value: Any) -> tuple[Stream, ...]:
    """``Provider.streams`` accepts names (``("widgets",)``), :class:`Stream` objects and
    their dicts (JSON), in any mix."""
    if value is None:
        return ()
    if isinstance(value, str | Stream):
        value = (value,)
    out = []
    for item in value:
        if isinstance(item, Stream):
            out.append(item)
        elif isinstance(item, str):
            out.append(Stream(item))
        elif isinstance(item, dict):
            out.append(Stream(**item))
        else:
            raise TypeError(f"a stream is a name or a nexus_core.Stream, got {item!r}")
    return tuple(out)


#: A rate-limit bucket's name: letters, digits, ``_ . -`` (it is part of a Redis key).
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _rate_buckets(value: Any) -> dict[str, RateLimits]:
    """``RateLimits.buckets``: name -> :class:`RateLimits` (or its dict), one level deep."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"RateLimits.buckets must be a dict of name -> RateLimits, got "
                        f"{type(value).__name__}")
    out: dict[str, RateLimits] = {}
    for name, limits in value.items():
        if not isinstance(name, str) or not _BUCKET_NAME.fullmatch(name):
            raise ValueError(f"a rate-limit bucket name is 1-64 letters, digits, '_', '.' or "
                             f"'-', got {name!r}")
        if isinstance(limits, dict):
            limits = RateLimits(**limits)
        if not isinstance(limits, RateLimits):
            raise TypeError(f"rate-limit bucket {name!r}: expected RateLimits, got {limits!r}")
        if limits.buckets:
            raise ValueError(f"rate-limit bucket {name!r} cannot have buckets of its own")
        out[name] = limits
    return out


@attrs.frozen
class RateLimits:
    """The provider's request budget, shared by every worker (per provider account).

    ``buckets`` are further budgets of the same account that a request draws from instead of
    this one when it names them (``ctx.http.post(url, json=..., rate_limit_bucket="search")``):
    an API whose endpoints are limited separately (a search API, per-method tiers).
    Each bucket has its own shared limiter and its own 429 cool-down.
    """

    #: Sustained requests per second per provider account.
    requests_per_second: float = attrs.field(default=5.0, converter=float)
    #: Requests that may go at once before the rate applies.
    burst_size: int = 10
    # Dicts are left out of the hash, so that a Provider stays hashable.
    #: Further budgets of the same account, by name, that a request may draw from instead.
    buckets: dict[str, RateLimits] = attrs.field(factory=dict, hash=False,
                                                 converter=_rate_buckets)

    def bucket(self, name: str | None) -> RateLimits:
        """The limits of bucket ``name`` (None: these); KeyError for an undeclared one."""
        return self if name is None else self.buckets[name]

    def with_overrides(self, overrides: Any) -> RateLimits:
        """These limits with an installation's ``rate_limits`` config applied (a higher or
        lower API tier): ``{"requests_per_second": 20, "burst_size": 20, "buckets":
        {"search": {"requests_per_second": 8}}}``. Keys it does not know, buckets the
        provider does not declare and values of the wrong type are ignored here
        (``IntegrationService.validate_connector_config`` reports them)."""
        if not isinstance(overrides, dict):
            return self
        out = attrs.evolve(self, **_limit_values(overrides))
        raw = overrides.get("buckets")
        if isinstance(raw, dict) and self.buckets:
            buckets = dict(self.buckets)
            for name, values in raw.items():
                if name in buckets and isinstance(values, dict):
                    buckets[name] = attrs.evolve(buckets[name], **_limit_values(values))
            out = attrs.evolve(out, buckets=buckets)
        return out


def _limit_values(raw: dict[str, Any]) -> dict[str, Any]:
    """The usable ``requests_per_second``/``burst_size`` of a config object."""
    out: dict[str, Any] = {}
    rps, burst = raw.get("requests_per_second"), raw.get("burst_size")
    if isinstance(rps, int | float) and not isinstance(rps, bool) and \
            math.isfinite(rps) and rps > 0:
        out["requests_per_second"] = float(rps)
    if isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1:
        out["burst_size"] = burst
    return out


def rate_limit_problems(provider_limits: RateLimits, value: Any) -> list[str]:
    """What is wrong with an installation's ``rate_limits`` config (empty: nothing)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["rate_limits must be an object"]
    problems = _limit_problems("rate_limits", value)
    unknown = sorted(str(k) for k in value if k not in ("requests_per_second", "burst_size",
                                                        "buckets"))
    if unknown:
        problems.append(f"rate_limits: unknown key(s) {', '.join(unknown)}; known: "
                        "requests_per_second, burst_size, buckets")
    buckets = value.get("buckets")
    if buckets is not None:
        declared = provider_limits.buckets
        if not isinstance(buckets, dict):
            problems.append("rate_limits.buckets must be an object of bucket -> limits")
        else:
            for name, limits in buckets.items():
                if name not in declared:
                    problems.append(f"rate_limits.buckets: unknown bucket {name!r}; this "
                                    f"provider has: {', '.join(declared) or 'none'}")
                elif not isinstance(limits, dict):
                    problems.append(f"rate_limits.buckets.{name} must be an object")
                else:
                    problems += _limit_problems(f"rate_limits.buckets.{name}", limits)
                    extra = sorted(str(k) for k in limits
                                   if k not in ("requests_per_second", "burst_size"))
                    if extra:
                        problems.append(f"rate_limits.buckets.{name}: unknown key(s) "
                                        f"{', '.join(extra)}")
    return problems


def _limit_problems(where: str, raw: dict[str, Any]) -> list[str]:
    problems = []
    rps, burst = raw.get("requests_per_second"), raw.get("burst_size")
    if rps is not None and (isinstance(rps, bool) or not isinstance(rps, int | float)
                            or not math.isfinite(rps) or rps <= 0):
        problems.append(f"{where}.requests_per_second must be a number > 0")
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)
                              or burst < 1):
        problems.append(f"{where}.burst_size must be an integer >= 1")
    return problems


def _share(value: Any) -> float:
    share = float(value)
    if not 0 <= share < 1:
        raise ValueError(f"Quota.reserve must be a share from 0 to below 1, got {value!r}")
    return share


def _pause(value: Any) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= 2 * 86400:
        raise ValueError(f"Quota.pause must be seconds > 0 and at most two days, got {value!r}")
    return seconds


@attrs.frozen
class Quota:
    """A provider's allowance of requests over a long window — a daily API quota shared by
    every client of the customer's account (daily API requests per organization) — and
    how much of it the connector leaves alone.

    The provider's answers report its use: the ``parse_rate_limit`` hook returns
    ``quota_used`` and ``quota_max`` among its keys. Once the use reaches ``1 - reserve`` of
    the maximum, every request of the account pauses for ``pause`` seconds — a shared
    cool-down: jobs are deferred without spending a retry, health checks report it, ``nexus
    stats`` lists it — then one request reads the use again. An installation may keep another
    share free: config ``{"quota": {"reserve": 0.3}}`` (and ``"pause"``)."""

    #: Share of the quota (from 0 to below 1) left for the account's other clients.
    reserve: float = attrs.field(default=0.0, converter=_share)
    #: Seconds every request of the account pauses once the reserve is reached.
    pause: float = attrs.field(default=3600.0, converter=_pause)

    def with_overrides(self, overrides: Any) -> Quota:
        """This quota with an installation's ``quota`` config applied; unusable values are
        ignored here (:func:`quota_problems` reports them)."""
        if not isinstance(overrides, dict) or quota_problems(overrides):
            return self
        return attrs.evolve(self, **{k: overrides[k] for k in ("reserve", "pause")
                                     if overrides.get(k) is not None})

    def reached(self, status: dict[str, Any] | None) -> bool:
        """Whether a parsed rate-limit status reports the use at or past the reserve."""
        if not status or self.reserve <= 0:
            return False
        used, cap = status.get("quota_used"), status.get("quota_max")
        if not (_finite_number(used) and _finite_number(cap)) or cap <= 0:
            return False
        return used >= cap * (1 - self.reserve)


def _finite_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def quota_problems(value: Any) -> list[str]:
    """What is wrong with an installation's ``quota`` config (empty: nothing)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["quota must be an object, e.g. {\"reserve\": 0.2}"]
    problems = []
    unknown = sorted(str(k) for k in value if k not in ("reserve", "pause"))
    if unknown:
        problems.append(f"quota: unknown key(s) {', '.join(unknown)}; known: reserve, pause")
    reserve, pause = value.get("reserve"), value.get("pause")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, int | float)
                                or not 0 <= reserve < 1):
        problems.append("quota.reserve must be a share from 0 to below 1 (0.2: keep a fifth "
                        "of the quota free)")
    if pause is not None and (isinstance(pause, bool) or not isinstance(pause, int | float)
                              or not math.isfinite(pause) or not 0 < pause <= 2 * 86400):
        problems.append("quota.pause must be seconds > 0, at most two days")
    return problems


#: Longest wait a provider's rate-limit answer is believed for (two days): a daily quota
#: resets within one; anything longer is an unreadable answer, not a reason to stop for good.
MAX_RATE_LIMIT_WAIT = 2 * 86400.0


def _wait_seconds(value: Any) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"RateLimitWait.seconds must be a finite number >= 0, got {value!r}")
    return min(seconds, MAX_RATE_LIMIT_WAIT)


@attrs.frozen
class RateLimitWait:
    """A provider's answer meaning "too many requests", read by its ``rate_limit_wait`` hook:
    wait ``seconds`` before the next request. ``scope="bucket"`` cools down the budget the
    request drew from; ``"account"`` every budget of the provider account (a daily quota that
    covers all endpoints). ``reason`` is shown in logs and errors (``"DAILY limit"``).
    Waits are capped at two days."""

    #: How long to wait before the next request (capped at two days).
    seconds: float = attrs.field(converter=_wait_seconds)
    #: `bucket`: the budget the request drew from; `account`: every budget of the account.
    scope: Literal["bucket", "account"] = "bucket"
    #: Shown in logs and errors (`DAILY limit`).
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if self.scope not in ("bucket", "account"):
            raise ValueError(f"RateLimitWait.scope must be 'bucket' or 'account', got "
                             f"{self.scope!r}")


@attrs.frozen
class Timeouts:
    """Seconds; both are always set on every request."""

    #: Seconds to establish a connection.
    connect: float = attrs.field(default=10.0, converter=float)
    #: Seconds to wait for each read of the answer.
    read: float = attrs.field(default=30.0, converter=float)


def _statuses(value: Any) -> tuple[int, ...]:
    statuses = tuple(int(v) for v in value)
    bad = [s for s in statuses if not 400 <= s <= 599 or s == 429]
    if bad:
        raise ValueError(
            f"retry_statuses must be HTTP error statuses other than 429 (429 always means a "
            f"shared cool-down), got {', '.join(map(str, bad))}"
        )
    return statuses


@attrs.frozen
class RetryConfig:
    """How the HTTP client retries a provider's transient failures (idempotent requests, or any
    with an idempotency key), with exponential backoff and jitter. A provider whose transient
    errors do not show in the status (an error inside an HTTP 200) implements ``should_retry``."""

    #: Retries of one request after a transient failure (0: none).
    max_retries: int = 3
    #: Growth of the backoff between retries (2: doubles).
    backoff_multiplier: float = attrs.field(default=2.0, converter=float)
    #: Longest wait between two retries, in seconds.
    max_backoff: float = attrs.field(default=60.0, converter=float)
    #: Answers retried, and counted as circuit-breaker failures once retries are spent; any
    #: other answer goes back to the connector.
    retry_statuses: tuple[int, ...] = attrs.field(default=(500, 502, 503, 504),
                                                  converter=_statuses)


@attrs.frozen
class BodyErrors:
    """Errors a provider reports inside answers whose HTTP status says success
    (``200 {"ok": false, "error": "invalid_auth"}``), declared so that the HTTP client treats
    them like the statuses they stand for. A 2xx JSON object whose ``ok_field`` is ``false``
    is an error answer; its code is at ``error_field``:

    * ``expired`` codes: the access token expired — refreshed once, the request sent again
      (the ``is_token_expired`` hook sees these answers too);
    * ``reauth`` codes: the grant is dead — ``AuthError(needs_reauth=True)``, the tenant must
      reconnect;
    * ``transient`` codes: retried like a 5xx (backoff, ``RetryConfig.max_retries``, then a
      retryable ``ProviderError`` and a circuit-breaker failure);
    * ``returned`` codes: the connector reads them itself (the answer goes back to it);
    * any other code: a non-retryable ``ProviderError`` naming the code, so the page fails
      with it in the run's error instead of being read as an empty page.
    """

    #: Dotted path of the field that is JSON ``false`` on an error answer (`ok`).
    ok_field: str = "ok"
    #: Dotted path(s) of the error code, tried in order (`error`).
    error_field: tuple[str, ...] = attrs.field(default=("error",), converter=_names)
    #: Codes meaning the access token expired: refresh once and send again.
    expired: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: Codes meaning the grant is revoked or the account gone: the installation needs_reauth.
    reauth: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: Codes of transient failures: retried like a 5xx.
    transient: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: Codes the connector handles itself: the answer is returned to it unchanged.
    returned: tuple[str, ...] = attrs.field(default=(), converter=_names)

    def __attrs_post_init__(self) -> None:
        if not self.ok_field or not self.error_field:
            raise ValueError("BodyErrors needs an ok_field and at least one error_field")
        kinds = {"expired": self.expired, "reauth": self.reauth,
                 "transient": self.transient, "returned": self.returned}
        seen: dict[str, str] = {}
        for kind, codes in kinds.items():
            for code in codes:
                if code in seen:
                    raise ValueError(f"BodyErrors: code {code!r} is both {seen[code]} and "
                                     f"{kind}")
                seen[code] = kind

    def kind(self, code: str) -> str:
        """``expired``, ``reauth``, ``transient``, ``returned`` or ``failed`` for ``code``."""
        for kind in ("expired", "reauth", "transient", "returned"):
            if code in getattr(self, kind):
                return kind
        return "failed"


@attrs.frozen
class OAuthConfig:
    """Where and how the OAuth2 authorization-code flow runs for a provider, and how its token
    endpoint answers. Every default is plain RFC 6749; a provider that differs declares it here
    (see :mod:`nexus_core.auth`). Paths are dotted paths into the JSON answer (``"team.id"``;
    a number indexes a list)."""

    #: The consent page.
    authorize_url: str
    #: The token endpoint (code exchange and refresh).
    token_url: str
    #: Send a PKCE S256 challenge (RFC 7636).
    pkce: bool = False
    #: How scopes are joined in the authorize URL (space; some providers: comma).
    scope_separator: str = " "
    #: Scopes asked for only if the account has them (HubSpot ``optional_scope``): sent,
    #: joined like the scopes, in the ``optional_scope_param`` query parameter.
    optional_scopes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: The query parameter carrying them.
    optional_scope_param: str = "optional_scope"
    #: Variable overriding the scheme and host of ``authorize_url`` (its path is kept): the
    #: consent page often lives on another host than the API (``app.`` vs ``api.``), so
    #: ``Provider.base_url_env`` cannot move it to a simulator or a regional host.
    authorize_base_url_env: str | None = None
    #: Lifetime assumed when the token response carries no ``expires_in``.
    default_token_lifetime: float | None = None
    #: ``"form"``: client id/secret in the body; ``"basic"``: HTTP Basic auth.
    client_auth: Literal["form", "basic"] = "form"
    #: Variables holding the client id, secret and redirect URI; None: ``<ID>_CLIENT_ID``,
    #: ``<ID>_CLIENT_SECRET``, ``<ID>_REDIRECT_URI`` (``<ID>`` = the provider id upper-cased,
    #: other characters as ``_``).
    client_id_env: str | None = None
    #: Variable holding the client secret (default `<ID>_CLIENT_SECRET`).
    client_secret_env: str | None = None
    #: Variable holding the redirect URI (default `<ID>_REDIRECT_URI`).
    redirect_uri_env: str | None = None
    #: A field that is JSON ``false`` on errors even in an HTTP 200 (e.g. ``"ok"``).
    ok_field: str | None = None
    #: Where the error code and its description are in an error answer; several paths are
    #: tried in order (``("status", "error")``: a provider that answers in either shape).
    error_field: tuple[str, ...] = attrs.field(default=("error",), converter=_names)
    #: Field(s) of an error answer with its description (e.g. `message`), tried in order.
    error_description_field: tuple[str, ...] = attrs.field(default=("error_description",),
                                                           converter=_names)
    #: Error codes (case-insensitive) that mean, on a refresh, that the grant is dead and the
    #: tenant must reconnect (``needs_reauth``).
    reauth_errors: tuple[str, ...] = attrs.field(default=("invalid_grant",), converter=_names)
    #: Dotted path of the access token in the token answer.
    access_token_field: str = "access_token"  # noqa: S105 - a field name, not a secret
    #: Where the provider account id is in the token response (``"team.id"``), and a regular
    #: expression with one group that extracts it from that value (``r"/id/([^/]+)/"``).
    account_id_field: str | None = None
    #: Regex with one group applied to the account-id field's value (an id inside a URL).
    account_id_pattern: str | None = None
    #: ``Credentials.extra`` key -> path in the token response (``{"team_name": "team.name"}``).
    extra_fields: dict[str, str] = attrs.field(factory=dict, hash=False)
    #: The Authorization scheme to send (``"Bearer"``) whatever the response's ``token_type``
    #: says; None: the response's, ``bearer`` normalized to ``Bearer``.
    token_type: str | None = None
    #: Installation config key holding the base URL (``https://host``) of that installation's
    #: own authorization server, for providers whose customers log in on hosts of their own —
    #: a sandbox login host or a company domain (Okta org URLs). Its scheme and host replace
    #: those of ``authorize_url`` and ``token_url`` for that installation's flows and
    #: refreshes. None: no such key.
    auth_base_url_config: str | None = None
    #: Where an installation's auth base URL may point: ``fnmatch`` patterns of
    #: ``scheme://host[:port]`` (``https://*.example-login.com``). Any other value is refused
    #: before a request goes there (the client secret goes with it); the variable
    #: ``<ID>_AUTH_BASE_URLS`` adds patterns, comma-separated (a simulator, a private cloud).
    auth_base_urls: tuple[str, ...] = attrs.field(default=(), converter=_names)

    def __attrs_post_init__(self) -> None:
        if self.account_id_pattern is not None:
            try:
                groups = re.compile(self.account_id_pattern).groups
            except re.error as exc:
                raise ValueError(f"account_id_pattern is not a regular expression: {exc}") from None
            if groups != 1:
                raise ValueError(
                    f"account_id_pattern must have exactly one group, {self.account_id_pattern!r} "
                    f"has {groups}"
                )
        if self.client_auth not in ("form", "basic"):
            raise ValueError(f"client_auth must be 'form' or 'basic', got {self.client_auth!r}")
        if self.auth_base_url_config is not None and not self.auth_base_urls:
            raise ValueError("auth_base_url_config needs auth_base_urls: the hosts an "
                             "installation's authorization server may be on")


@attrs.frozen
class HmacSpec:
    """A webhook signature declared rather than coded (``WebhookConfig(scheme="hmac")``): an
    HMAC of a signed string, encoded in a header.

    ``message`` is the signed string: ``{body}`` (the raw body), ``{timestamp}`` (the value of
    ``timestamp_header``), ``{method}`` (upper case), ``{url}`` (the full public URL the
    provider called); ``{{``/``}}`` are literal braces. The header holds ``prefix`` + the
    digest (hex, compared case-insensitively, or base64). With ``timestamp_header``, deliveries
    outside the NEXUS_WEBHOOK_TOLERANCE window are rejected. GitHub:
    ``HmacSpec(header="X-Hub-Signature-256", prefix="sha256=")``; Shopify:
    ``HmacSpec(header="X-Shopify-Hmac-Sha256", encoding="base64")``.
    """

    #: Header carrying the signature (`X-Hub-Signature-256`).
    header: str
    #: Text before the signature in the header (`sha256=`).
    prefix: str = ""
    #: How the digest is written: `hex` or `base64`.
    encoding: Literal["hex", "base64"] = "hex"
    #: HMAC hash: `sha256`, `sha1` or `sha512`.
    algorithm: Literal["sha256", "sha1", "sha512"] = "sha256"
    #: What is signed: a template of `{body}`, `{timestamp}`, `{method}`, `{url}`.
    message: str = "{body}"
    #: Header with the signed timestamp (its window is NEXUS_WEBHOOK_TOLERANCE); None: no
    #: timestamp.
    timestamp_header: str | None = None
    #: Unit of that timestamp: `s` or `ms`.
    timestamp_unit: Literal["s", "ms"] = "s"

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.header, str) or not self.header.strip():
            raise ValueError("HmacSpec.header must name the signature header")
        for field, allowed in (("encoding", ("hex", "base64")),
                               ("algorithm", ("sha256", "sha1", "sha512")),
                               ("timestamp_unit", ("s", "ms"))):
            if getattr(self, field) not in allowed:
                raise ValueError(f"HmacSpec.{field} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, field)!r}")
        fields = self.placeholders()
        if "timestamp" in fields and not self.timestamp_header:
            raise ValueError("HmacSpec.message uses {timestamp}: it needs timestamp_header")

    def placeholders(self) -> tuple[str, ...]:
        """The placeholders ``message`` uses, in order (ValueError for anything else)."""
        import string

        try:
            parts = list(string.Formatter().parse(self.message))
        except ValueError as exc:
            raise ValueError(f"HmacSpec.message {self.message!r} is not a valid template: "
                             f"{exc}") from None
        out = []
        for _, field, spec, conversion in parts:
            if field is None:
                continue
            if field not in HMAC_PLACEHOLDERS:
                raise ValueError(f"HmacSpec.message: unknown placeholder {{{field}}}; use "
                                 + ", ".join("{" + p + "}" for p in HMAC_PLACEHOLDERS))
            if spec or conversion:
                raise ValueError("HmacSpec.message takes plain placeholders, no format specs "
                                 "or conversions")
            out.append(field)
        return tuple(out)


@attrs.frozen
class UrlVerification:
    """A provider's handshake when a webhook URL is registered (``url_verification``):
    a verified delivery whose ``type_field`` is ``type_value`` is answered 200 with
    ``{challenge_field: <the delivery's challenge>}`` (JSON) and nothing is enqueued."""

    #: Dotted path of the field naming the delivery's kind (`type`).
    type_field: str = "type"
    #: Its value on a handshake (`url_verification`).
    type_value: str = "url_verification"
    #: Dotted path of the challenge to echo, and the key it is answered under (`challenge`).
    challenge_field: str = "challenge"


@attrs.frozen
class WebhookConfig:
    """How a provider signs its webhooks and how a delivery finds its installation."""

    #: The signature scheme: `hubspot-v1|v2|v3`, `slack-v0`, `standard-webhooks`, `stripe`, `hmac`
    #: (with `hmac`) or `custom` (the `verify_webhook` hook).
    scheme: WebhookScheme
    #: Other schemes accepted, for a provider that signs some deliveries differently (HubSpot:
    #: v3, or v1/v2 when ``X-HubSpot-Signature-Version`` says so). A delivery is verified by
    #: the first of ``scheme``, then these, whose signature headers it carries; when it
    #: carries none, by ``scheme``. A delivery failing that scheme is rejected without trying
    #: the others, so a weaker scheme is never a way around a stronger one it also carries.
    fallback_schemes: tuple[WebhookScheme, ...] = attrs.field(default=(), converter=_names)
    #: Environment variables holding the secret(s), first match wins; comma-separated values
    #: are several secrets (rotation).
    secret_envs: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: JSON field of an event that names the provider account (HubSpot ``portalId``).
    account_id_field: str | None = None
    #: Fields tried in order for events whose ``account_id_field`` account has no
    #: installation: an account the event also belongs to (an ``enterprise_id``, for an
    #: app installed on a whole Enterprise Grid organization).
    fallback_account_fields: tuple[str, ...] = attrs.field(default=(), converter=_names)
    #: Header or field that uniquely identifies a delivery, for replay protection.
    delivery_id_field: str | None = None
    #: Seconds a delivery id is remembered (covers the provider's retry window).
    dedupe_ttl: float = attrs.field(default=3 * 24 * 3600, converter=float)
    #: The signature, for ``scheme="hmac"``.
    hmac: HmacSpec | None = None
    #: How the ingress reads a delivery's body: ``json`` (an event object or an array of
    #: them) or ``custom`` — the provider's ``parse_webhook_body`` hook reads it (SOAP/XML,
    #: form-encoded bodies).
    body_format: Literal["json", "custom"] = "json"
    #: The exact body answered (200) to an accepted delivery, for a provider that expects a
    #: fixed one and redelivers otherwise (a SOAP ``Ack``);
    #: None: the core's JSON summary.
    accept_body: str | None = None
    #: Content-Type of ``accept_body``.
    accept_content_type: str = "application/json"
    #: The provider's URL handshake, answered after the signature check (e.g.
    #: ``UrlVerification()``); None: none.
    url_verification: UrlVerification | None = None
    #: Refuse (403) a delivery to an installation's own URL whose events name another account
    #: at ``account_id_field``: for a provider that signs nothing, the account id is part of
    #: what is checked (an ``OrganizationId`` in the body).
    account_check: bool = False

    def __attrs_post_init__(self) -> None:
        if self.body_format not in ("json", "custom"):
            raise ValueError(f"WebhookConfig.body_format must be 'json' or 'custom', got "
                             f"{self.body_format!r}")
        if self.account_check and not self.account_id_field:
            raise ValueError("WebhookConfig.account_check needs account_id_field")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class EnvVar:
    """An environment variable a provider plugin reads (``.env`` counts too): shown by
    ``nexus providers show`` with whether it is set — and its value only when not ``secret``.
    Read it with :func:`nexus_core.provider_setting`."""

    #: The variable's name (`ACME_REGION`).
    name: str
    #: What it is for, shown by `nexus providers show`.
    help: str = ""
    #: Never print its value.
    secret: bool = False
    #: The provider does not work without it.
    required: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _ENV_NAME.fullmatch(self.name):
            raise ValueError(f"an environment variable name is letters, digits and _, "
                             f"got {self.name!r}")


def _env_vars(value: Any) -> tuple[EnvVar, ...]:
    if value is None:
        return ()
    if isinstance(value, str | EnvVar):
        value = (value,)
    return tuple(v if isinstance(v, EnvVar) else EnvVar(v) if isinstance(v, str)
                 else EnvVar(**v) for v in value)


@attrs.frozen
class Provider:
    """A provider's metadata, returned by the ``nexus_provider`` hook.

    The seed's PROVIDER_CONFIGS entries become these.
    """

    #: Unique slug naming the provider everywhere (entry point, URLs, job ids, metrics).
    id: str
    #: Human name, shown by `nexus providers list` and on the OAuth pages.
    name: str
    #: The plugin's version (shown by `nexus providers list`).
    version: str
    #: `oauth2` (the core runs the code flow and refresh), `api_key`, `basic` or `none`.
    auth_type: AuthType = "oauth2"
    #: The API's base URL; relative paths given to `ctx.http` are resolved against it.
    base_url: str = ""
    #: The provider's budget per account, shared by every worker through Redis.
    rate_limits: RateLimits = attrs.Factory(RateLimits)
    #: Connect and read timeouts of every request.
    timeouts: Timeouts = attrs.Factory(Timeouts)
    #: How transient failures are retried (statuses, backoff).
    retry: RetryConfig = attrs.Factory(RetryConfig)
    #: Errors it reports inside successful HTTP answers (``{"ok": false, "error": ...}``) and
    #: what each means; None: a 2xx answer is a success.
    body_errors: BodyErrors | None = None
    #: A long-window quota (daily API requests) its answers report, and the share of it left
    #: free for the account's other clients; None: none.
    quota: Quota | None = None
    #: OAuth scopes asked for on the consent page.
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: The streams it syncs; plain names are accepted (``streams=("widgets",)``).
    streams: tuple[Stream, ...] = attrs.field(default=(), converter=_streams)
    #: Further streams an installation's config may name (open-ended object types).
    stream_pattern: StreamPattern | None = None
    #: How its webhooks are signed and routed; None: no webhooks.
    webhook: WebhookConfig | None = None
    #: The OAuth2 endpoints and token-response shape; required for `auth_type="oauth2"`.
    oauth: OAuthConfig | None = None
    #: One line about the provider, shown by `nexus providers show`.
    description: str = ""
    #: Environment variable that overrides ``base_url`` (simulators, sandboxes).
    base_url_env: str | None = None
    #: The plugin's own environment variables (the core's conventional ones are derived, see
    #: :meth:`variables`); names are accepted for ``EnvVar(name)``.
    env: tuple[EnvVar, ...] = attrs.field(default=(), converter=_env_vars)

    def __attrs_post_init__(self) -> None:
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"provider id must be a non-empty slug, got {self.id!r}")
        if self.auth_type not in AUTH_TYPES:
            raise ValueError(
                f"provider {self.id!r}: auth_type must be one of {', '.join(AUTH_TYPES)}, "
                f"got {self.auth_type!r}"
            )
        names = [s.name for s in self.streams]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"provider {self.id!r}: stream name(s) declared twice: {', '.join(duplicates)}"
            )

    @property
    def supports_webhooks(self) -> bool:
        return self.webhook is not None

    @property
    def env_prefix(self) -> str:
        """The prefix of the provider's conventional variables: ``my-crm`` → ``MY_CRM``
        (``MY_CRM_CLIENT_ID``, ``MY_CRM_TOKEN_URL``, ...)."""
        return re.sub(r"[^A-Za-z0-9]", "_", self.id).upper()

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams)

    def variables(self) -> tuple[EnvVar, ...]:
        """Every environment variable this provider reads: :attr:`env`, then those the core
        derives from the metadata — the OAuth client id, secret and redirect URI
        (``<ID>_CLIENT_ID``, ``<ID>_CLIENT_SECRET``, ``<ID>_REDIRECT_URI`` unless
        ``OAuthConfig`` names others), the ``<ID>_AUTHORIZE_URL``/``<ID>_TOKEN_URL``
        overrides, the webhook secrets and ``base_url_env``. A variable listed twice is one,
        secret if either says so."""
        out: dict[str, EnvVar] = {}

        def add(var: EnvVar) -> None:
            seen = out.get(var.name)
            out[var.name] = var if seen is None else attrs.evolve(
                seen, help=seen.help or var.help, secret=seen.secret or var.secret,
                required=seen.required or var.required)

        for var in self.env:
            add(var)
        prefix = self.env_prefix
        if self.oauth is not None:
            add(EnvVar(self.oauth.client_id_env or f"{prefix}_CLIENT_ID",
                       f"OAuth client id of the app registered with {self.name}", required=True))
            add(EnvVar(self.oauth.client_secret_env or f"{prefix}_CLIENT_SECRET",
                       "OAuth client secret of that app", secret=True,
                       required=not self.oauth.pkce))
            add(EnvVar(self.oauth.redirect_uri_env or f"{prefix}_REDIRECT_URI",
                       "OAuth redirect URI registered with the app (unless given per flow)"))
            add(EnvVar(f"{prefix}_AUTHORIZE_URL",
                       f"overrides the authorize URL {self.oauth.authorize_url}"))
            if self.oauth.authorize_base_url_env:
                add(EnvVar(self.oauth.authorize_base_url_env,
                           "overrides the scheme and host of the authorize URL "
                           f"{self.oauth.authorize_url} (sandboxes, simulators)"))
            add(EnvVar(f"{prefix}_TOKEN_URL", f"overrides the token URL {self.oauth.token_url}"))
            if self.oauth.auth_base_url_config:
                add(EnvVar(f"{prefix}_AUTH_BASE_URLS",
                           "more patterns (comma-separated) an installation's "
                           f"{self.oauth.auth_base_url_config} may match, beside "
                           + ", ".join(self.oauth.auth_base_urls)))
        if self.webhook is not None:
            envs = self.webhook.secret_envs
            for n, name in enumerate(envs):
                add(EnvVar(name, "webhook signing secret (comma-separated during rotation)"
                           + (f"; used when {', '.join(envs[:n])} is unset" if n else ""),
                           secret=True))
        if self.base_url_env:
            add(EnvVar(self.base_url_env,
                       f"overrides the API base URL {self.base_url or '(none)'} "
                       "(sandboxes, simulators)"))
        return tuple(out.values())

    def stream(self, name: str) -> Stream:
        """The stream ``name``: a declared one, or one that ``stream_pattern`` admits;
        :class:`~nexus_core.errors.PluginError` naming the known streams otherwise."""
        for stream in self.streams:
            if stream.name == name:
                return stream
        if self.stream_pattern is not None and self.stream_pattern.matches(name):
            return self.stream_pattern.stream(name)
        raise PluginError(f"provider {self.id!r} has no stream {name!r}; its streams: "
                          f"{self.describe_streams()}", provider=self.id)

    def accepts_stream(self, name: Any) -> bool:
        """Whether an installation may sync a stream called ``name``."""
        return name in self.stream_names or (
            self.stream_pattern is not None and self.stream_pattern.matches(name))

    def describe_streams(self) -> str:
        """``contacts, deals`` (``or any name matching <pattern>``) for messages."""
        text = ", ".join(self.stream_names) or "none declared"
        if self.stream_pattern is not None:
            text += f" (or any name matching {self.stream_pattern.pattern})"
        return text


@attrs.frozen
class Credentials:
    """What authenticates an installation with its provider. Encrypted at rest by the store."""

    #: The OAuth access token (or bearer token).
    access_token: str | None = attrs.field(default=None, repr=False)
    #: The OAuth refresh token; a rotated one replaces it at each refresh.
    refresh_token: str | None = attrs.field(default=None, repr=False)
    #: Authorization scheme sent with the access token.
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    #: When the access token expires (UTC); None: it states no expiry.
    expires_at: datetime | None = None
    #: Scopes the grant holds.
    scopes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: An API key (`auth_type="api_key"`).
    api_key: str | None = attrs.field(default=None, repr=False)
    #: User name (`auth_type="basic"`).
    username: str | None = None
    #: Password (`auth_type="basic"`).
    password: str | None = attrs.field(default=None, repr=False)
    #: Provider-specific non-secret extras (Salesforce ``instance_url``, Slack ``bot_user_id``).
    extra: dict[str, Any] = attrs.Factory(dict)

    def expires_within(self, seconds: float, now: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        now = now or utcnow()
        return (self.expires_at - now).total_seconds() <= seconds


@attrs.frozen
class Installation:
    """One tenant's connection to one provider account.

    ``status``: ``active`` (syncs run), ``pending_authorization`` (an OAuth2 installation whose
    tenant has not completed the consent flow yet), ``needs_reauth`` (the provider revoked or
    refused the grant: the tenant must reconnect), ``disabled`` (by an operator).
    ``webhook_key`` routes the per-installation webhook URL ``/webhooks/<provider>/<key>``."""

    #: Your product's tenant (1-200 characters, no control characters).
    tenant_id: str
    #: The installation's id within the tenant (same rules).
    install_id: str
    #: The provider id.
    provider: str
    #: The provider account it is connected to (a portal, workspace or organization id).
    account_id: str | None = None
    #: `active`, `pending_authorization`, `needs_reauth` or `disabled`.
    status: InstallStatus = "active"
    #: The installation's config (streams, rate-limit tier, provider options).
    config: dict[str, Any] = attrs.Factory(dict)
    #: When it was added (UTC).
    created_at: datetime = attrs.Factory(utcnow)
    #: When it last changed (UTC).
    updated_at: datetime = attrs.Factory(utcnow)
    #: Opaque key of its own webhook URL `/webhooks/<provider>/<key>` (rotatable).
    webhook_key: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class ConnectorContext:
    """Everything a hook needs to work for one installation.

    ``http`` (the installation's resilient session) and ``log`` (a logger bound to the
    tenant/install/provider) are attached by the core at run time and never serialized.
    """

    #: The tenant the hook works for.
    tenant_id: str
    #: The installation the hook works for.
    install_id: str
    #: The provider id.
    provider: str
    #: The installation's current credentials (never logged).
    credentials: Credentials | None = attrs.field(default=None, repr=False)
    #: The installation's config.
    config: dict[str, Any] = attrs.Factory(dict)
    #: What the core knows about the call (`{"kind": "backfill"}`).
    metadata: dict[str, Any] = attrs.Factory(dict)
    #: The provider account of the installation.
    account_id: str | None = None
    #: The installation's resilient session with the provider (rate limit, retries, auth, refresh).
    http: Any = attrs.field(default=None, repr=False, eq=False)
    #: A logger bound to provider, tenant and installation.
    log: Any = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class Record:
    """One object read from a provider stream."""

    #: The record's id: its primary key as text (composite keys as a JSON list).
    id: str
    #: The stream it belongs to.
    stream: str
    #: The record as the provider returned it (JSON-serializable).
    data: dict[str, Any] = attrs.Factory(dict)
    #: When it last changed at the provider, if known.
    updated_at: datetime | None = None
    #: A deletion (archived, removed): sinks delete or soft-delete it.
    deleted: bool = False


@attrs.frozen
class SyncPage:
    """What one ``backfill``/``delta`` call returns: a page of records and where to go next.

    ``done`` ends the run. For a delta, ``next_cursor`` on the last page is the cursor the next
    delta starts from; for a backfill, it becomes the first delta cursor.
    """

    #: The page's records.
    records: list[Record] = attrs.Factory(list)
    #: Where the next page starts; on a backfill's last page, the first delta cursor.
    next_cursor: str | None = None
    #: No page follows: the run (of this stream) ends.
    done: bool = False


@attrs.frozen
class WebhookRequest:
    """A webhook delivery exactly as it arrived: the raw body is what signatures are over."""

    #: HTTP method the provider used.
    method: str
    #: The full public URL it called (some schemes sign it).
    url: str
    #: Request headers (look up with `header(name)`, any case).
    headers: dict[str, str] = attrs.Factory(dict)
    #: The raw body, exactly as signed.
    body: bytes = b""
    #: When the ingress received it (UTC).
    received_at: datetime = attrs.Factory(utcnow)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lname:
                return value
        return None


@attrs.frozen
class WebhookEvent:
    """A normalized provider event handed to the ``process_events`` sink."""

    #: A stable event id: sinks deduplicate on it.
    id: str
    #: The event type (`contact.propertyChange`, `message`).
    type: str
    #: The provider id.
    provider: str
    #: The object the event is about, if any.
    object_id: str | None = None
    #: The provider account it came from.
    account_id: str | None = None
    #: When it happened at the provider, if known.
    occurred_at: datetime | None = None
    #: The provider's event, as it was delivered.
    payload: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class WebhookResult:
    """What ``handle_webhook`` returns when a delivery yields records as well as events: the
    records it read from the provider for those events (a targeted fetch of the changed
    objects; ``Record(deleted=True)`` for deletions). They go to ``process_records``, one call
    per stream, before the events go to ``process_events`` — so a sink sees an object's new
    state no later than the event about it."""

    #: The delivery's normalized events (to `process_events`).
    events: list[WebhookEvent] = attrs.Factory(list)
    #: Records read for them (to `process_records`, one call per stream, first).
    records: list[Record] = attrs.Factory(list)


@attrs.frozen
class Health:
    """The seed's health-check answer."""

    #: Overall: the installation can sync.
    healthy: bool
    #: Its credentials were accepted.
    auth_valid: bool = False
    #: The provider answered.
    api_accessible: bool = False
    #: The provider's last rate-limit headers (`max=110 remaining=90`).
    rate_limit_status: str | None = None
    #: Errors seen by this check.
    error_count: int = 0
    #: When the check ran (UTC).
    checked_at: datetime = attrs.Factory(utcnow)
    #: Why, when unhealthy (`{"error": ..., "needs_reauth": true}`), and provider extras.
    details: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class IntegrationMetrics:
    """One operation's outcome (the seed's IntegrationMetrics)."""

    #: The provider id.
    connector_id: str
    #: The tenant.
    tenant_id: str
    #: `backfill`, `delta`, `webhook`, `auth`, `refresh` or `health`.
    operation: Operation
    #: Seconds the operation took.
    duration: float = attrs.field(converter=float)
    #: Whether it succeeded.
    success: bool
    #: When it ended (UTC).
    timestamp: datetime = attrs.Factory(utcnow)
    #: Records it delivered, if any.
    records_processed: int | None = None
    #: The error's kind when it failed.
    error_code: str | None = None
    #: Retries it needed.
    retry_count: int | None = None
