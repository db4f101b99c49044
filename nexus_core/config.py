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


def read_env(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> dict:
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
