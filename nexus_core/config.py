"""Settings from the environment and a ``.env`` file, with the seed's variable names.

The environment wins over ``.env``. A malformed value is a :class:`ConfigError` at startup that
names the variable, what it got and what it accepts — never a stack trace deep inside a job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import attrs

from nexus_core.errors import ConfigError

T = TypeVar("T")

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("pretty", "json")
ENVIRONMENTS = ("development", "production", "test")


@attrs.frozen
class Setting:
    """One documented variable: the README's configuration table is generated from these."""

    env: str
    default: str | None
    help: str


#: Every variable the core reads, in the order the README lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", None, "Redis for queues, locks, rate limits (wins over REDIS_HOST/...)"),
    Setting("REDIS_HOST", "localhost", "Redis host when REDIS_URL is not set"),
    Setting("REDIS_PORT", "6379", "Redis port when REDIS_URL is not set"),
    Setting("REDIS_PASSWORD", "", "Redis password when REDIS_URL is not set"),
    Setting("REDIS_DB", "0", "Redis database number when REDIS_URL is not set"),
    Setting("INTEGRATION_WORKER_CONCURRENCY", "5", "Scales each queue's worker concurrency"),
    Setting("INTEGRATION_MAX_RETRIES", "3", "Retries of a failed job before the dead-letter queue"),
    Setting("INTEGRATION_BACKOFF_DELAY", "2000", "First retry delay in milliseconds (doubles)"),
    Setting("LOG_LEVEL", "INFO", "TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR or CRITICAL"),
    Setting("NEXUS_LOG_FORMAT", "pretty", "pretty (terminal) or json (one object per line)"),
    Setting("NEXUS_DATABASE_URL", "sqlite:///nexus.db", "Store: SQLite or postgresql+psycopg://"),
    Setting("NEXUS_ENV", "development", "development, test or production (production is strict)"),
    Setting("NEXUS_LOAD_PLUGINS", None, "Comma-separated allow-list of plugin names to load"),
    Setting("NEXUS_DISABLE_PLUGINS", None, "Comma-separated plugin names never to load"),
    Setting("NEXUS_RATE_LIMIT_MAX_WAIT", "5",
            "Seconds a worker may sleep for the shared rate limit (longer: RateLimited)"),
    Setting("NEXUS_RATE_LIMIT_HEADROOM", "1",
            "Requests of a provider's burst kept unused (absorbs network jitter: no 429s)"),
    Setting("NEXUS_BREAKER_FAILURE_THRESHOLD", "5",
            "Consecutive failed calls (5xx, timeouts) that open an installation's breaker"),
    Setting("NEXUS_BREAKER_COOLDOWN", "30", "Seconds an open breaker waits before one probe call"),
    Setting("NEXUS_HTTP_BACKOFF_BASE", "0.5",
            "Seconds: first backoff unit between HTTP retries (x provider's multiplier)"),
    # [sync] settings (nexus_core.jobs / worker / scheduler / sinks)
    Setting("NEXUS_SINK", "jsonl",
            "Built-in record/event sink: jsonl (a file per tenant/stream) or null"),
    Setting("NEXUS_SINK_DIR", "nexus-data", "Directory of the jsonl sink's files"),
    Setting("NEXUS_BACKFILL_TIME_BUDGET", "60",
            "Seconds a backfill job runs before it enqueues its continuation"),
    Setting("NEXUS_DELTA_INTERVAL", "300",
            "Seconds between scheduled deltas of each active installation"),
    Setting("NEXUS_BACKFILL_TENANT_CONCURRENCY", "1",
            "Backfill jobs one tenant may have queued or running at once (RQ RateLimit)"),
    Setting("NEXUS_JOB_LEASE_TTL", "15",
            "Seconds without a heartbeat after which a dead worker's job is requeued"),
    Setting("NEXUS_MAX_DEFERRALS", "100",
            "Rate-limit/breaker reschedules of one job before it goes to the dead-letter queue"),
    Setting("NEXUS_PUBLIC_URL", None,
            "Public base URL providers call (https://hooks.example.com); HubSpot v3 signs it"),
    Setting("NEXUS_WEBHOOK_MAX_BODY", "1048576", "Largest webhook body in bytes (larger: 413)"),
    Setting("NEXUS_WEBHOOK_DEDUPE_TTL", "259200",
            "Seconds a webhook delivery id is remembered against replays (3 days)"),
    Setting("NEXUS_WEBHOOK_TOLERANCE", "300",
            "Seconds a signed webhook timestamp may differ from now, either way"),
    Setting("NEXUS_WEBHOOK_ROUTE_CACHE_TTL", "30",
            "Seconds the web app reuses an account-to-installation lookup (0: off)"),
    Setting("NEXUS_ENCRYPTION_KEYS", None,
            "Credential keys, comma-separated base64url (first encrypts; required in production)"),
    Setting("NEXUS_KEY_FILE", ".nexus/encryption.key",
            "Development key file, generated (mode 600) when NEXUS_ENCRYPTION_KEYS is unset"),
    Setting("NEXUS_REFRESH_MARGIN", "300", "Seconds before expiry an access token is refreshed"),
    Setting("NEXUS_OAUTH_STATE_TTL", "600", "Seconds an OAuth authorization link stays valid"),
)


def _int(name: str, raw: str, minimum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be an integer, got {raw!r}", hint=f"set {name} to e.g. 3"
        ) from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _number(
    name: str, raw: str, kind: type, lowest: float, inclusive: bool, what: str | None = None
) -> Any:
    what = what or ("an integer" if kind is int else "a number")
    try:
        value = float(raw)
        if kind is int and value != int(value):
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value < lowest or (value == lowest and not inclusive):
        raise ConfigError(f"{name} must be {'>=' if inclusive else '>'} {lowest:g}, got {raw!r}")
    return kind(value)


# Parsers for ``Settings.get_parsed(name, parser, default)``: each names the variable on error.
def non_negative_float(name: str, raw: str) -> float:
    return _number(name, raw, float, 0, inclusive=True)


def positive_float(name: str, raw: str) -> float:
    return _number(name, raw, float, 0, inclusive=False)


def non_negative_int(name: str, raw: str) -> int:
    return _number(name, raw, int, 0, inclusive=True)


def positive_int(name: str, raw: str) -> int:
    return _number(name, raw, int, 1, inclusive=True)


def positive_seconds(name: str, raw: str) -> float:
    return _number(name, raw, float, 0, inclusive=False, what="a number of seconds")


def non_negative_seconds(name: str, raw: str) -> float:
    return _number(name, raw, float, 0, inclusive=True, what="a number of seconds")


def byte_size(name: str, raw: str) -> int:
    return _number(name, raw, int, 1, inclusive=True, what="a number of bytes")


def _choice(name: str, raw: str, choices: tuple[str, ...], upper: bool = False) -> str:
    value = raw.strip().upper() if upper else raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (raw or "").split(",") if p.strip())


@attrs.frozen
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    worker_concurrency: int = 5
    max_retries: int = 3
    backoff_delay_ms: int = 2000
    log_level: str = "INFO"
    log_format: str = "pretty"
    database_url: str = "sqlite:///nexus.db"
    env: str = "development"
    load_plugins: tuple[str, ...] | None = None
    disable_plugins: tuple[str, ...] = ()
    #: Everything read (environment over .env), for settings that later modules own.
    raw: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)

    def get(self, name: str, default: str | None = None) -> str | None:
        """A variable not modelled here (a provider's HUBSPOT_CLIENT_ID, say)."""
        return self.raw.get(name, default)

    def get_parsed(self, name: str, parse: Callable[[str, str], T], default: T) -> T:
        raw = self.raw.get(name)
        return default if raw in (None, "") else parse(name, raw)


def _redis_url(values: Mapping[str, str]) -> str:
    url = values.get("REDIS_URL")
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "REDIS_URL must start with redis://, rediss:// or unix://, "
                f"got one starting {url.split(':', 1)[0]!r}"
            )
        return url
    host = values.get("REDIS_HOST") or "localhost"
    port = _int("REDIS_PORT", values.get("REDIS_PORT") or "6379", minimum=1)
    db = _int("REDIS_DB", values.get("REDIS_DB") or "0", minimum=0)
    password = values.get("REDIS_PASSWORD") or ""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


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
    """Read and validate settings; raises :class:`ConfigError` naming the bad variable."""
    v = read_env(environ, env_file)
    load = v.get("NEXUS_LOAD_PLUGINS")
    return Settings(
        redis_url=_redis_url(v),
        worker_concurrency=_int(
            "INTEGRATION_WORKER_CONCURRENCY", v.get("INTEGRATION_WORKER_CONCURRENCY") or "5", 1
        ),
        max_retries=_int("INTEGRATION_MAX_RETRIES", v.get("INTEGRATION_MAX_RETRIES") or "3", 0),
        backoff_delay_ms=_int(
            "INTEGRATION_BACKOFF_DELAY", v.get("INTEGRATION_BACKOFF_DELAY") or "2000", 0
        ),
        log_level=_choice("LOG_LEVEL", v.get("LOG_LEVEL") or "INFO", LOG_LEVELS, upper=True),
        log_format=_choice("NEXUS_LOG_FORMAT", v.get("NEXUS_LOG_FORMAT") or "pretty", LOG_FORMATS),
        database_url=_database_url(v.get("NEXUS_DATABASE_URL") or "sqlite:///nexus.db"),
        env=_choice("NEXUS_ENV", v.get("NEXUS_ENV") or "development", ENVIRONMENTS),
        load_plugins=_csv(load) if load is not None else None,
        disable_plugins=_csv(v.get("NEXUS_DISABLE_PLUGINS")),
        raw=v,
    )


def _database_url(url: str) -> str:
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+")):
        raise ConfigError(
            "NEXUS_DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL, "
            f"got one starting {url.split(':', 1)[0]!r}"
        )
    return url


_cached: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once. Tests build their own with :func:`load_settings`."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def reset_settings() -> None:
    global _cached
    _cached = None


def settings_table() -> list[dict[str, Any]]:
    return [attrs.asdict(s) for s in SETTINGS]
