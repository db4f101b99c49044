"""Settings from the environment and a ``.env`` file, with the seed's variable names.

One typed object, :class:`Settings`, is the single source: every variable the core reads is a
:class:`Setting` in :data:`SETTINGS` with its type, bounds and a doc line, parsed once by
:func:`load_settings` into a typed field. Modules read the field (``settings.webhook_tolerance``),
never the variable by name. The environment wins over ``.env``; an empty value means the default.

A malformed value is a one-line :class:`ConfigError` at startup that names the variable, what it
got and what it accepts — never a traceback, never a silent default (``nan``, ``inf``, ``1e999``,
``-0x1`` and the like are refused).

Provider plugins' own variables (``HUBSPOT_CLIENT_ID``, ...) are read with
:meth:`Settings.get`, by the same rules (environment over ``.env``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import attrs

from nexus_core.errors import ConfigError

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("pretty", "json")
ENVIRONMENTS = ("development", "production", "test")
SINKS = ("jsonl", "sql", "http", "null")

#: Longest value shown back in an error message (a 10 KB paste stays one readable line).
_SHOW = 60


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= _SHOW else raw[:_SHOW] + "...")


# -- parsers: (variable name, raw text) -> typed value, or a ConfigError naming the variable ------

Parser = Callable[[str, str], Any]

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@attrs.frozen
class Number:
    """An integer or a finite decimal number within ``[low, high]`` (``low`` exclusive when
    ``low_open``). Plain ASCII notation only: no ``nan``/``inf``, hex, underscores or
    other scripts' digits."""

    integer: bool
    low: float
    high: float
    low_open: bool = False
    unit: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"> {_fmt(self.low)}" if self.low_open else f">= {_fmt(self.low)}"
        return f"{kind}{' of ' + self.unit if self.unit else ''} {low} and <= {_fmt(self.high)}"

    def __call__(self, name: str, raw: str) -> Any:
        text = raw.strip()
        pattern = _INT if self.integer else _FLOAT
        if len(text) > 40 or not pattern.fullmatch(text):  # int() refuses > 4300 digits
            raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")
        value = int(text) if self.integer else float(text)
        if not self.integer and not math.isfinite(value):
            raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")
        return value


@attrs.frozen
class Choice:
    choices: tuple[str, ...]
    upper: bool = False

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)

    def __call__(self, name: str, raw: str) -> str:
        value = raw.strip().upper() if self.upper else raw.strip().lower()
        if value not in self.choices:
            raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")
        return value


@attrs.frozen
class Text:
    """Free text (a path, a secret); only control characters are refused."""

    what: str = "text"

    def describe(self) -> str:
        return self.what

    def __call__(self, name: str, raw: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in raw):
            raise ConfigError(f"{name} must be {self.what} without control characters")
        return raw.strip()


@attrs.frozen
class Names:
    """A comma-separated list of names (``a, b``); empty items are dropped."""

    def describe(self) -> str:
        return "comma-separated names"

    def __call__(self, name: str, raw: str) -> tuple[str, ...]:
        Text()(name, raw)
        return tuple(p.strip() for p in raw.split(",") if p.strip())


@attrs.frozen
class OneOrMore:
    """A comma-separated list of ``choices`` (at least one, each once)."""

    choices: tuple[str, ...]

    def describe(self) -> str:
        return "one or more of " + ", ".join(self.choices) + " (comma-separated)"

    def __call__(self, name: str, raw: str) -> tuple[str, ...]:
        items = [p.strip().lower() for p in raw.split(",") if p.strip()]
        unknown = [p for p in items if p not in self.choices]
        if not items or unknown:
            raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")
        return tuple(dict.fromkeys(items))


@attrs.frozen
class Flag:
    """A yes/no switch: true/false, yes/no, on/off, 1/0 (any case)."""

    def describe(self) -> str:
        return "true or false (also yes/no, on/off, 1/0)"

    def __call__(self, name: str, raw: str) -> bool:
        value = raw.strip().lower()
        if value in ("true", "yes", "on", "1"):
            return True
        if value in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")


@attrs.frozen
class Token:
    """A bearer token: at least ``min_length`` visible ASCII characters, no spaces."""

    min_length: int = 16

    def describe(self) -> str:
        return f"a token of at least {self.min_length} visible ASCII characters (no spaces)"

    def __call__(self, name: str, raw: str) -> str:
        value = raw.strip()
        if not all(33 <= ord(c) <= 126 for c in value):
            raise ConfigError(f"{name} must be {self.describe()}: it has a space, a control "
                              "or a non-ASCII character")
        if len(value) < self.min_length:
            raise ConfigError(f"{name} must be {self.describe()}, got {len(value)} characters "
                              "(`python -c 'import secrets; print(secrets.token_urlsafe(32))'` "
                              "makes one)")
        return value


@attrs.frozen
class Url:
    """A URL with one of ``schemes``; checked for what each scheme needs (a host, a port in
    1..65535, a Redis database number)."""

    schemes: tuple[str, ...]
    what: str

    def describe(self) -> str:
        return self.what

    def __call__(self, name: str, raw: str) -> str:
        text = raw.strip()
        Text()(name, text)
        scheme = text.split(":", 1)[0].lower() if ":" in text else ""
        if not any(text.lower().startswith(s) for s in self.schemes):
            raise ConfigError(
                f"{name} must be {self.what}, got one starting {scheme or text[:10]!r}"
            )
        if scheme in ("redis", "rediss", "http", "https"):
            _check_network_url(name, text, scheme)
        elif scheme == "unix" and not urlsplit(text).path:
            raise ConfigError(f"{name}: a unix:// URL needs a socket path (unix:///run/redis.sock)")
        return text


_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]{2,45})\]|(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?))"
    r":(?P<port>[0-9]{1,5})", re.ASCII)


@attrs.frozen
class HostPorts:
    """A comma-separated list of ``host:port`` addresses (``[v6-address]:port`` for IPv6), at
    least one; a repeated address counts once."""

    def describe(self) -> str:
        return "comma-separated host:port addresses ([::1]:26379 for IPv6)"

    def __call__(self, name: str, raw: str) -> tuple[tuple[str, int], ...]:
        import ipaddress

        Text()(name, raw)
        out: list[tuple[str, int]] = []
        for item in (p.strip() for p in raw.split(",")):
            match = _HOST_PORT.fullmatch(item)
            if not item or match is None:
                raise ConfigError(f"{name} must be {self.describe()}, got {_shown(item or raw)}"
                                  f"{'' if item else ' (an empty address)'}")
            port = int(match["port"])
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name}: port {port} of {_shown(item)} is not in 1..65535")
            host = match["v6"] or match["host"]
            if match["v6"]:
                try:
                    host = str(ipaddress.IPv6Address(host))
                except ValueError:
                    raise ConfigError(f"{name}: {_shown(item)} is not an IPv6 address in "
                                      "brackets ([::1]:26379)") from None
            if (host, port) not in out:
                out.append((host, port))
        return tuple(out)


@attrs.frozen
class Identifier:
    """A name made of ASCII letters, digits, ``.``, ``_`` and ``-`` (at most 100)."""

    what: str

    def describe(self) -> str:
        return f"{self.what} (letters, digits, . _ -)"

    def __call__(self, name: str, raw: str) -> str:
        text = raw.strip()
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", text, re.ASCII):
            raise ConfigError(f"{name} must be {self.describe()}, got {_shown(raw)}")
        return text


def _check_network_url(name: str, text: str, scheme: str) -> None:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # a port that is not a number or out of range
        raise ConfigError(f"{name} has an invalid port: {exc}; "
                          f"expected {scheme}://host:port{'/db' if 'redis' in scheme else ''}"
                          ) from None
    if not parts.hostname:
        raise ConfigError(f"{name} has no host: expected {scheme}://host[:port]")
    if port == 0:
        raise ConfigError(f"{name} has port 0; expected a port in 1..65535")
    if scheme.startswith("redis"):
        db = parts.path.lstrip("/")
        if db and not (_INT.fullmatch(db) and int(db) >= 0):
            raise ConfigError(
                f"{name} has database {_shown(db)}; expected a number >= 0 "
                f"({scheme}://host:port/0)"
            )
    elif parts.query or parts.fragment:
        raise ConfigError(f"{name} must be a base URL without ?query or #fragment")


# -- the settings ------------------------------------------------------------------------------


@attrs.frozen
class Setting:
    """One documented variable: the README's configuration table is generated from these."""

    env: str
    default: str | None
    help: str
    #: The :class:`Settings` attribute that holds the parsed value.
    field: str
    parse: Parser = attrs.field(default=Text(), repr=False)

    @property
    def accepts(self) -> str:
        describe = getattr(self.parse, "describe", None)
        return describe() if describe else ""


_DAY = 86400.0


def _seconds(low: float, high: float, *, open_low: bool = False, integer: bool = False) -> Number:
    return Number(integer, low, high, open_low, unit="seconds")


#: Every variable the core reads, in the order the README lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", None, "Redis for queues, locks, rate limits (wins over REDIS_HOST/...)",
            "redis_url_setting", Url(("redis://", "rediss://", "unix://"),
                                     "a redis://, rediss:// or unix:// URL")),
    Setting("REDIS_HOST", "localhost", "Redis host when REDIS_URL is not set", "redis_host",
            Text("a host name")),
    Setting("REDIS_PORT", "6379", "Redis port when REDIS_URL is not set", "redis_port",
            Number(True, 1, 65535)),
    Setting("REDIS_PASSWORD", "", "Redis password when REDIS_URL is not set", "redis_password",
            Text("a password")),
    Setting("REDIS_DB", "0", "Redis database number when REDIS_URL is not set", "redis_db",
            Number(True, 0, 1_000_000)),
    Setting("REDIS_SENTINELS", None,
            "Redis Sentinel addresses: connect to the master they name and follow failovers "
            "(the master's password/db/TLS: REDIS_URL's, else REDIS_PASSWORD/REDIS_DB)",
            "redis_sentinels", HostPorts()),
    Setting("REDIS_SENTINEL_MASTER", None,
            "Name of the master set the sentinels monitor (required with REDIS_SENTINELS)",
            "redis_sentinel_master", Identifier("a Sentinel master name")),
    Setting("REDIS_SENTINEL_PASSWORD", None,
            "Password of the sentinels themselves (their requirepass), if any",
            "redis_sentinel_password", Text("a password")),
    Setting("NEXUS_EMBEDDED_REDIS", "auto",
            "No Redis configured: auto (development: localhost:6379, else start one under "
            "NEXUS_EMBEDDED_REDIS_DIR), on, or off", "embedded_redis",
            Choice(("auto", "on", "off"))),
    Setting("NEXUS_EMBEDDED_REDIS_DIR", ".nexus/redis",
            "Where the development Redis keeps its files (AOF, log, pid)", "embedded_redis_dir",
            Text("a directory path")),
    Setting("INTEGRATION_WORKER_CONCURRENCY", "5",
            "Sizes the per-queue worker pools of `nexus run-worker`: seed concurrency x value / 5",
            "worker_concurrency", Number(True, 1, 1000)),
    Setting("INTEGRATION_MAX_RETRIES", "3", "Retries of a failed job before the dead-letter queue",
            "max_retries", Number(True, 0, 100)),
    Setting("INTEGRATION_BACKOFF_DELAY", "2000", "First retry delay in milliseconds (doubles)",
            "backoff_delay_ms", Number(True, 0, 86_400_000, unit="milliseconds")),
    Setting("LOG_LEVEL", "INFO", "Log verbosity", "log_level", Choice(LOG_LEVELS, upper=True)),
    Setting("NEXUS_LOG_FORMAT", "pretty", "pretty (terminal) or json (one object per line)",
            "log_format", Choice(LOG_FORMATS)),
    Setting("NEXUS_DATABASE_URL", "sqlite:///nexus.db", "Store: SQLite or PostgreSQL",
            "database_url", Url(("sqlite:", "postgresql:", "postgresql+"),
                                "a sqlite:/// or postgresql+psycopg:// URL")),
    Setting("NEXUS_ENV", "development", "production is strict (keys required, no key file)",
            "env", Choice(ENVIRONMENTS)),
    Setting("NEXUS_LOAD_PLUGINS", None, "Allow-list of plugin names to load (unset: all)",
            "load_plugins", Names()),
    Setting("NEXUS_DISABLE_PLUGINS", None, "Plugin names never to load", "disable_plugins",
            Names()),
    Setting("NEXUS_RATE_LIMIT_MAX_WAIT", "5",
            "Seconds a worker may sleep for the shared rate limit (longer: RateLimited)",
            "rate_limit_max_wait", _seconds(0, 3600)),
    Setting("NEXUS_RATE_LIMIT_HEADROOM", "1",
            "Requests of a provider's burst kept unused (absorbs network jitter: no 429s)",
            "rate_limit_headroom", Number(True, 0, 10_000)),
    Setting("NEXUS_BREAKER_FAILURE_THRESHOLD", "5",
            "Consecutive failed calls (5xx, timeouts) that open an installation's breaker",
            "breaker_failure_threshold", Number(True, 1, 100_000)),
    Setting("NEXUS_BREAKER_COOLDOWN", "30", "Seconds an open breaker waits before one probe call",
            "breaker_cooldown", _seconds(0, _DAY)),
    Setting("NEXUS_HTTP_BACKOFF_BASE", "0.5",
            "Seconds: first backoff unit between HTTP retries (x provider's multiplier)",
            "http_backoff_base", _seconds(0, 3600)),
    Setting("NEXUS_SINK", "jsonl",
            "Built-in sinks, comma-separated: jsonl (files), sql (tables), http (signed POSTs "
            "to the product), null", "sink", OneOrMore(SINKS)),
    Setting("NEXUS_SINK_DATABASE_URL", None,
            "Database of the sql sink (default: NEXUS_DATABASE_URL)", "sink_database_url",
            Url(("sqlite:", "postgresql:", "postgresql+"),
                "a sqlite:/// or postgresql+psycopg:// URL")),
    Setting("NEXUS_SINK_URL", None, "The product's endpoint the http sink POSTs to",
            "sink_url", Url(("http://", "https://"), "an http:// or https:// URL")),
    Setting("NEXUS_SINK_SECRET", None,
            "Standard Webhooks secret (whsec_...) the http sink signs with", "sink_secret",
            Text("a whsec_ secret")),
    Setting("NEXUS_PLUGINS", None,
            "In-product plugins: comma-separated module or module:object paths", "plugins",
            Names()),
    Setting("NEXUS_SINK_DIR", "nexus-data", "Directory of the jsonl sink's files", "sink_dir",
            Text("a directory path")),
    Setting("NEXUS_BACKFILL_TIME_BUDGET", "60",
            "Seconds a backfill job runs before it enqueues its continuation",
            "backfill_time_budget", _seconds(0, _DAY, open_low=True)),
    Setting("NEXUS_DELTA_INTERVAL", "300",
            "Seconds between scheduled deltas of each active installation", "delta_interval",
            _seconds(1, 7 * _DAY, integer=True)),
    Setting("NEXUS_BACKFILL_TENANT_CONCURRENCY", "1",
            "Backfill jobs one tenant may have queued or running at once (RQ RateLimit)",
            "backfill_tenant_concurrency", Number(True, 1, 10_000)),
    Setting("NEXUS_JOB_LEASE_TTL", "15",
            "Seconds without a heartbeat after which a dead worker's job is requeued",
            "job_lease_ttl", _seconds(0, 3600, open_low=True)),
    Setting("NEXUS_MAX_DEFERRALS", "100",
            "Rate-limit/breaker reschedules of one job before it goes to the dead-letter queue",
            "max_deferrals", Number(True, 1, 1_000_000)),
    Setting("NEXUS_PUBLIC_URL", None,
            "Public base URL providers and browsers call (https://hooks.example.com)",
            "public_url", Url(("http://", "https://"), "an http:// or https:// base URL")),
    Setting("NEXUS_WEBHOOK_MAX_BODY", "1048576", "Largest webhook body in bytes (larger: 413)",
            "webhook_max_body", Number(True, 1, 64 * 1024 * 1024, unit="bytes")),
    Setting("NEXUS_WEBHOOK_DEDUPE_TTL", "259200",
            "Seconds a webhook delivery id is remembered against replays (3 days)",
            "webhook_dedupe_ttl", _seconds(1, 365 * _DAY, integer=True)),
    Setting("NEXUS_WEBHOOK_TOLERANCE", "300",
            "Seconds a signed webhook timestamp may differ from now, either way",
            "webhook_tolerance", _seconds(0, _DAY, open_low=True)),
    Setting("NEXUS_WEBHOOK_ROUTE_CACHE_TTL", "30",
            "Seconds the web app reuses an account-to-installation lookup (0: off)",
            "webhook_route_cache_ttl", _seconds(0, 3600)),
    Setting("NEXUS_ENCRYPTION_KEYS", None,
            "Credential keys, comma-separated base64url (first encrypts; required in production)",
            "encryption_keys", Text("comma-separated base64url keys")),
    Setting("NEXUS_KEY_FILE", ".nexus/encryption.key",
            "Development key file, generated (mode 600) when NEXUS_ENCRYPTION_KEYS is unset",
            "key_file", Text("a file path")),
    Setting("NEXUS_REFRESH_MARGIN", "300", "Seconds before expiry an access token is refreshed",
            "refresh_margin", _seconds(0, _DAY)),
    Setting("NEXUS_OAUTH_STATE_TTL", "600",
            "Seconds an OAuth authorization (consent page to callback) stays valid",
            "oauth_state_ttl", _seconds(0, _DAY, open_low=True)),
    Setting("NEXUS_CONNECT_LINK_TTL", "3600",
            "Seconds a connect link (`nexus auth link`) stays valid by default",
            "connect_link_ttl", _seconds(0, 30 * _DAY, open_low=True)),
    Setting("NEXUS_HEALTH_INTERVAL", "900",
            "Seconds between scheduled health checks of each active installation (0: none)",
            "health_interval", _seconds(0, 7 * _DAY, integer=True)),
    Setting("NEXUS_METRICS_TOKEN", None,
            "Bearer token for /metrics and the /readyz details on the public port (unset: "
            "the public /metrics is a 404; the metrics listener asks for it too when set)",
            "metrics_token", Token()),
    Setting("NEXUS_METRICS_TENANT_LABELS", "false",
            "Add a tenant_id label to the operation, page and record series, and keep "
            "nexus_breaker_state per installation (one series per tenant or installation: "
            "mind the cardinality)", "metrics_tenant_labels", Flag()),
    Setting("NEXUS_METRICS_DIR", None,
            "Where nexus serve / run-worker keep their per-process metrics files (default: "
            "<tmp>/nexus-metrics); `nexus metrics serve` reads every process's there",
            "metrics_dir", Text("a directory path")),
)

_BY_ENV = {s.env: s for s in SETTINGS}


@attrs.frozen
class Settings:
    """Every setting of the core, parsed and typed. Build it with :func:`load_settings`."""

    redis_url_setting: str | None = None
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_password: str = ""
    redis_db: int = 0
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = None
    embedded_redis: str = "auto"
    embedded_redis_dir: str = ".nexus/redis"
    worker_concurrency: int = 5
    max_retries: int = 3
    backoff_delay_ms: int = 2000
    log_level: str = "INFO"
    log_format: str = "pretty"
    database_url: str = "sqlite:///nexus.db"
    env: str = "development"
    load_plugins: tuple[str, ...] | None = None
    disable_plugins: tuple[str, ...] = ()
    rate_limit_max_wait: float = 5.0
    rate_limit_headroom: int = 1
    breaker_failure_threshold: int = 5
    breaker_cooldown: float = 30.0
    http_backoff_base: float = 0.5
    sink: tuple[str, ...] = ("jsonl",)
    sink_database_url: str | None = None
    sink_url: str | None = None
    sink_secret: str | None = None
    plugins: tuple[str, ...] = ()
    sink_dir: str = "nexus-data"
    backfill_time_budget: float = 60.0
    delta_interval: int = 300
    backfill_tenant_concurrency: int = 1
    job_lease_ttl: float = 15.0
    max_deferrals: int = 100
    public_url: str | None = None
    webhook_max_body: int = 1024 * 1024
    webhook_dedupe_ttl: int = 3 * 24 * 3600
    webhook_tolerance: float = 300.0
    webhook_route_cache_ttl: float = 30.0
    encryption_keys: str | None = None
    key_file: str = ".nexus/encryption.key"
    refresh_margin: float = 300.0
    oauth_state_ttl: float = 600.0
    connect_link_ttl: float = 3600.0
    health_interval: int = 900
    metrics_token: str | None = attrs.field(default=None, repr=False)
    metrics_tenant_labels: bool = False
    metrics_dir: str | None = None
    #: Everything read (environment over .env): provider plugins' variables live here.
    raw: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def redis_url(self) -> str:
        """REDIS_URL, else the URL REDIS_HOST/PORT/PASSWORD/DB make."""
        if self.redis_url_setting:
            return self.redis_url_setting
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def redis_location(self) -> str:
        """Where Redis is, for messages and logs (no password): the sentinels and master name,
        or REDIS_URL without its credentials."""
        if self.redis_sentinels:
            where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
                             for h, p in self.redis_sentinels)
            return f"sentinel master {self.redis_sentinel_master!r} via {where}"
        return re.sub(r"//[^/@]*@", "//", self.redis_url, count=1)

    @property
    def production(self) -> bool:
        return self.env == "production"

    def get(self, name: str, default: str | None = None) -> str | None:
        """A variable not modelled here (a provider's HUBSPOT_CLIENT_ID, say); an empty value
        counts as unset."""
        value = self.raw.get(name)
        return default if value in (None, "") else value


def read_env(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict:
    """The merged variables: ``.env`` first, then the process environment on top."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Read and validate every setting; raises :class:`ConfigError` naming the bad variable."""
    values = read_env(environ, env_file)
    parsed: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = values.get(setting.env)
        if raw is None or raw.strip() == "":
            if setting.default not in (None, ""):
                parsed[setting.field] = setting.parse(setting.env, setting.default)
            elif setting.env == "NEXUS_DISABLE_PLUGINS":
                parsed[setting.field] = ()
            continue
        parsed[setting.field] = setting.parse(setting.env, raw)
    _check_sentinel(parsed)
    return Settings(**parsed, raw=values)


def _check_sentinel(parsed: dict[str, Any]) -> None:
    """REDIS_SENTINELS and REDIS_SENTINEL_MASTER come together; a unix socket has no Sentinel."""
    sentinels, master = parsed.get("redis_sentinels"), parsed.get("redis_sentinel_master")
    if sentinels and not master:
        raise ConfigError("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: set it to "
                          "the name the sentinels monitor (`sentinel monitor <name> ...`)")
    if master and not sentinels:
        raise ConfigError("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: list the "
                          "sentinels (host:port,host:port) or unset REDIS_SENTINEL_MASTER")
    url = parsed.get("redis_url_setting") or ""
    if sentinels and url.lower().startswith("unix:"):
        raise ConfigError("REDIS_URL is a unix:// socket but REDIS_SENTINELS is set: with "
                          "Sentinel, REDIS_URL only gives the master's password, database and "
                          "TLS (redis://:password@master/0 or rediss://...)")


def parse_setting(name: str, raw: str) -> Any:
    """Parse one documented variable's text (tests, ``nexus doctor``); KeyError if unknown."""
    return _BY_ENV[name].parse(name, raw)


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once. Tests build their own with :func:`load_settings`."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def provider_setting(name: str, default: str | None = None) -> str | None:
    """A provider plugin's own variable, read exactly as the core reads its own: the process
    environment over ``.env``, an empty value counting as unset. Declare the variables a
    plugin reads in ``Provider.env`` so ``nexus providers show`` lists them."""
    return get_settings().get(name, default)


def reset_settings() -> None:
    global _cached
    _cached = None


def settings_table() -> list[dict[str, Any]]:
    return [{"env": s.env, "default": s.default, "help": s.help, "accepts": s.accepts}
            for s in SETTINGS]
