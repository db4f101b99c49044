"""``nexus doctor``: check a deployment and say, for every problem, how to fix it.

Each check returns :class:`Finding` s — ``ok``, ``warn`` (works, but not as it should in
production), ``fail`` (something is broken or will lose work) or ``skip`` (could not be checked
because something it depends on failed). :func:`diagnose` runs them all; the command prints
them and exits 1 when one failed.

The doctor only looks: it never starts the development Redis, never migrates the database,
never creates a key file and never prints a secret (only which variables are set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal

import attrs

Status = Literal["ok", "warn", "fail", "skip"]

#: The oldest Redis the SDK works with: RQ 3 and ``nexus sync --wait`` (streams, XREAD) need 5.
MIN_REDIS = (5, 0)


@attrs.frozen
class Finding:
    """One check's answer."""

    #: What was checked (``redis.eviction``, ``database.schema``, ``plugin.acme``, ...).
    check: str
    status: Status
    #: What was found.
    message: str
    #: What to do about it (None when nothing needs doing).
    fix: str | None = None


@attrs.define
class _Context:
    settings: Any
    registry: Any = None
    redis: Any = None
    store: Any = None
    keyring: Any = None
    installations: dict[str, int] | None = None
    findings: list[Finding] = attrs.Factory(list)

    def add(self, check: str, status: Status, message: str, fix: str | None = None) -> None:
        self.findings.append(Finding(check, status, message, fix))

    def severity(self) -> Status:
        """``fail`` in production, ``warn`` in development."""
        return "fail" if self.settings.production else "warn"


# -- Redis ------------------------------------------------------------------------------------


def _redis_url(settings: Any) -> str | None:
    """The Redis the deployment uses, without starting the development one."""
    from nexus_core import embedded

    if not embedded.wanted(settings):
        return str(settings.redis_url)
    running = embedded.status(settings)
    if running is not None:
        return str(running["url"])
    if settings.embedded_redis == "auto" and embedded._answers("127.0.0.1", 6379):
        return str(settings.redis_url)
    return None


def _shown(url: str) -> str:
    return url.split("@")[-1]


def check_redis(ctx: _Context) -> None:
    from nexus_core.queues import redis_connection

    if ctx.settings.redis_sentinels:  # the master the sentinels name, as every process uses
        url = ctx.settings.redis_location
        client = redis_connection(ctx.settings)
        what = "REDIS_SENTINELS / REDIS_SENTINEL_MASTER and that the sentinels and a master"
    else:
        found = _redis_url(ctx.settings)
        if found is None:
            ctx.add("redis", "fail", "REDIS_URL is not set and the development Redis is not "
                    "running", "set REDIS_URL (production), or start the development Redis "
                    "with any command that needs it (`nexus run-worker`)")
            return
        url = found
        client = redis_connection(ctx.settings, url=url)
        what = "REDIS_URL and that Redis"
    try:
        info = client.info()
    except Exception as exc:
        ctx.add("redis", "fail", f"Redis at {_shown(url)} is unreachable: "
                f"{type(exc).__name__}: {exc}", f"check {what} is running and "
                "reachable from this machine (firewall, password, TLS: rediss://)")
        client.close()
        return
    ctx.redis = client
    version = str(info.get("redis_version", "?"))
    ctx.add("redis", "ok", f"Redis {version} at {_shown(url)} answers")
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        parts = MIN_REDIS
    if parts < MIN_REDIS:
        ctx.add("redis.version", "fail", f"Redis {version} is older than "
                f"{'.'.join(map(str, MIN_REDIS))}", "upgrade Redis (7.x recommended)")
    else:
        ctx.add("redis.version", "ok", f"Redis {version} (>= {'.'.join(map(str, MIN_REDIS))})")
    policy = str(info.get("maxmemory_policy") or _config_get(client, "maxmemory-policy") or "")
    if not policy:
        ctx.add("redis.eviction", "warn", "could not read maxmemory-policy (INFO and CONFIG "
                "do not say)", "make sure it is noeviction (your Redis provider's settings)")
    elif policy != "noeviction":
        ctx.add("redis.eviction", "fail",
                f"maxmemory-policy is {policy}: when Redis fills up it deletes keys, which "
                "here are queued jobs, retries, leases and locks (lost silently)",
                "set `maxmemory-policy noeviction` (redis.conf, or `CONFIG SET "
                "maxmemory-policy noeviction` and `CONFIG REWRITE`; managed Redis: its "
                "parameter group); Redis then refuses writes when full, which nexus reports")
    else:
        ctx.add("redis.eviction", "ok", "maxmemory-policy is noeviction")
    _check_persistence(ctx, client, info)


def _config_get(client: Any, name: str) -> str | None:
    """CONFIG GET, or None where CONFIG is disabled (many managed Redis services)."""
    try:
        value = client.config_get(name).get(name)
    except Exception:
        return None
    return None if value is None else str(value)


def _check_persistence(ctx: _Context, client: Any, info: Any) -> None:
    fix = ("turn on AOF: `appendonly yes` and `appendfsync everysec` (redis.conf, or "
           "`CONFIG SET appendonly yes` and `CONFIG REWRITE`; managed Redis: enable AOF or "
           "durability in its settings)")
    if str(info.get("aof_enabled", "0")) == "1":
        ctx.add("redis.persistence", "ok", "AOF is on: queued jobs survive a Redis restart")
        return
    save = _config_get(client, "save")
    where = "production (NEXUS_ENV=production)" if ctx.settings.production else "development"
    if save:
        ctx.add("redis.persistence", ctx.severity(),
                f"AOF is off; only RDB snapshots (save {save}): a restart loses the jobs "
                f"queued since the last snapshot ({where})", fix)
    else:
        ctx.add("redis.persistence", ctx.severity(),
                "persistence is off (no AOF" + ("" if save is None else ", no RDB")
                + f"): a Redis restart loses every queued job, retry and schedule ({where})",
                fix)


# -- database and keys -------------------------------------------------------------------------


def check_database(ctx: _Context) -> None:
    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.store import Store
    from nexus_core.store.schema import LATEST_VERSION

    url = ctx.settings.database_url
    missing = _missing_sqlite_file(url)
    if missing is not None:  # connecting would create it: the doctor only looks
        ctx.add("database", "fail", f"the SQLite database {missing} does not exist",
                "check NEXUS_DATABASE_URL (and the working directory: a relative path is "
                "relative to it); any `nexus` command that opens the store creates it")
        return
    # The store's key ring is checked on its own (check_keys); a placeholder lets the schema be
    # read without creating a development key file.
    store = Store.from_url(url, ctx.keyring or KeyRing.from_string(generate_key()),
                           migrate=False)
    try:
        version = store.schema_version()
    except Exception as exc:
        from nexus_core.errors import NexusError

        message = exc.message if isinstance(exc, NexusError) else f"{type(exc).__name__}: {exc}"
        ctx.add("database", "fail", message, "check NEXUS_DATABASE_URL and that the database "
                "server is running and reachable")
        store.close()
        return
    ctx.store = store
    ctx.add("database", "ok", f"database {store.url} answers")
    if version == LATEST_VERSION:
        ctx.add("database.schema", "ok", f"schema version {version} (current)")
        with suppress(Exception):
            ctx.installations = store.count_installations()
    elif version > LATEST_VERSION:
        ctx.add("database.schema", "fail", f"schema version {version} is newer than this "
                f"nexus-core knows ({LATEST_VERSION})", "upgrade nexus-core on this machine "
                "to the release the other machines run")
    else:
        ctx.add("database.schema", "fail",
                f"schema version {version}, this nexus-core needs {LATEST_VERSION}"
                + (" (empty database)" if version == 0 else ""),
                "migrate it: every `nexus` command that opens the store does (for example "
                "`nexus installs list`), as do `nexus serve` and `nexus run-worker` at start")


def _missing_sqlite_file(url: str) -> str | None:
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else str(path)


def _load_keyring(ctx: _Context) -> None:
    from nexus_core.crypto import KeyRing

    settings = ctx.settings
    configured = (settings.encryption_keys or "").strip()
    if configured:
        try:
            ctx.keyring = KeyRing.from_string(configured)
        except Exception as exc:
            ctx.add("keys", "fail", f"NEXUS_ENCRYPTION_KEYS is malformed: "
                    f"{getattr(exc, 'message', exc)}", "generate a key with `nexus keys "
                    "generate`; several keys are comma-separated, newest first")
            return
        ctx.add("keys", "ok", f"NEXUS_ENCRYPTION_KEYS: {len(ctx.keyring.key_ids)} key(s), "
                f"primary {ctx.keyring.primary_id}")
        return
    if settings.production:
        ctx.add("keys", "fail", "NEXUS_ENV=production and NEXUS_ENCRYPTION_KEYS is not set: "
                "nexus serve, run-worker and scheduler refuse to start",
                "set NEXUS_ENCRYPTION_KEYS to a key from `nexus keys generate` (keep it in "
                "your secret manager)")
        return
    path = Path(settings.key_file).expanduser()
    if not path.is_file():
        ctx.add("keys", "warn", f"no NEXUS_ENCRYPTION_KEYS and no development key file {path} "
                "yet (the first command that stores credentials creates it)",
                "for production set NEXUS_ENCRYPTION_KEYS (`nexus keys generate`)")
        return
    try:
        ctx.keyring = KeyRing.from_string(path.read_text().strip(), source=str(path))
    except Exception as exc:
        ctx.add("keys", "fail", f"the development key file {path} is unreadable or malformed: "
                f"{getattr(exc, 'message', exc)}", "restore it from your backup; without it "
                "stored credentials cannot be decrypted")
        return
    ctx.add("keys", "warn", f"credentials are encrypted with the development key file {path}",
            "for production set NEXUS_ENCRYPTION_KEYS (`nexus keys generate`) and re-encrypt "
            "with `nexus keys rotate`")


def check_key_sample(ctx: _Context) -> None:
    """Decrypt one stored credential per key id in use: a key ring that cannot is a deployment
    whose every sync will fail."""
    import sqlalchemy as sa

    from nexus_core.crypto import associated_data
    from nexus_core.store import schema as t

    if ctx.store is None or ctx.keyring is None:
        ctx.add("keys.decrypt", "skip", "needs the database and a key ring (see above)")
        return
    creds = t.credentials
    try:
        with ctx.store.engine.connect() as conn:
            in_use = conn.execute(sa.select(creds.c.key_id).distinct()).scalars().all()
            samples = [conn.execute(sa.select(creds.c.tenant_id, creds.c.install_id,
                                              creds.c.ciphertext)
                                    .where(creds.c.key_id == kid).limit(1)).one()
                       for kid in in_use]
    except Exception as exc:
        ctx.add("keys.decrypt", "skip", f"could not read stored credentials: "
                f"{type(exc).__name__}")
        return
    if not samples:
        if _round_trip(ctx.keyring):
            ctx.add("keys.decrypt", "ok", "no stored credentials yet; the key ring encrypts "
                    "and decrypts a test value")
        else:
            ctx.add("keys.decrypt", "fail", "the key ring cannot decrypt what it encrypts",
                    "replace the key with one from `nexus keys generate`")
        return
    bad = []
    for kid, (tenant_id, install_id, sealed) in zip(in_use, samples, strict=True):
        try:
            ctx.keyring.decrypt(sealed, associated_data(tenant_id, install_id))
        except Exception:
            bad.append(kid)
    if bad:
        ctx.add("keys.decrypt", "fail", f"stored credentials encrypted under key(s) "
                f"{', '.join(bad)} cannot be decrypted with the configured keys",
                "add the key(s) that encrypted them to NEXUS_ENCRYPTION_KEYS (after the "
                "primary), then `nexus keys rotate`; `nexus keys status` shows the key ids")
    else:
        ctx.add("keys.decrypt", "ok", f"decrypted a stored credential under each key in use "
                f"({', '.join(in_use)})")


def _round_trip(keyring: Any) -> bool:
    from nexus_core.crypto import associated_data

    aad = associated_data("doctor", "doctor")
    try:
        return bool(keyring.decrypt(keyring.encrypt(b"nexus doctor", aad), aad)
                    == b"nexus doctor")
    except Exception:
        return False


# -- plugins and providers ----------------------------------------------------------------------


def check_plugins(ctx: _Context) -> None:
    if ctx.registry is None:
        from nexus_core.plugins import load_plugins

        ctx.registry = load_plugins()
    infos = ctx.registry.infos
    for info in infos:
        if info.status == "ok":
            continue
        ctx.add(f"plugin.{info.name}", "fail", f"plugin {info.name} "
                f"({info.distribution or 'no distribution'}) was not loaded: {info.reason}",
                "fix or upgrade the plugin (`nexus plugins list` shows every plugin), or "
                f"leave it out with NEXUS_DISABLE_PLUGINS={info.name}")
    loaded = [i.name for i in infos if i.status == "ok"]
    if not ctx.registry.providers:
        ctx.add("plugins", "warn", f"{len(loaded)} plugin(s) loaded, none is a provider",
                "install a provider plugin (`pip install nexus-<provider>`)")
    else:
        ctx.add("plugins", "ok", f"{len(loaded)} plugin(s) loaded: {', '.join(loaded)}")


def _has_installations(ctx: _Context, provider: str) -> bool | None:
    if ctx.store is None or ctx.installations is None:
        return None
    try:
        return bool(ctx.store.page_installations(limit=1, provider=provider))
    except Exception:
        return None


def check_providers(ctx: _Context) -> None:
    for pid, provider in sorted(ctx.registry.providers.items()):
        missing = [v for v in provider.variables()
                   if v.required and not ctx.settings.get(v.name)]
        problems = [f"{v.name} ({v.help})" for v in missing]
        webhook = provider.webhook
        if webhook is not None and webhook.secret_envs and not any(
                ctx.settings.get(name) for name in webhook.secret_envs):
            problems.append(f"{' or '.join(webhook.secret_envs)} (webhook signing secret: "
                            "every delivery is rejected without it)")
        if not problems:
            ctx.add(f"provider.{pid}", "ok", f"{pid}: its required variables are set")
            continue
        used = _has_installations(ctx, pid)
        status: Status = "fail" if used or used is None and ctx.settings.production else "warn"
        whose = "it has installations" if used else "no installation uses it yet"
        ctx.add(f"provider.{pid}", status, f"{pid}: not set: {'; '.join(problems)} ({whose})",
                "set them in the environment or .env of every `nexus serve` and `nexus "
                f"run-worker` (`nexus providers show {pid}` lists its variables)")


# -- workers, scheduler, dead-letter queue -----------------------------------------------------


def check_workers(ctx: _Context) -> None:
    from nexus_core import queues

    if ctx.redis is None:
        for check in ("workers", "scheduler", "scheduler.retries", "dlq"):
            ctx.add(check, "skip", "needs Redis (see above)")
        return
    stats = queues.queue_stats(ctx.redis, ctx.settings.worker_concurrency)["queues"]
    idle = [name for name, s in stats.items() if not s["workers"]]
    if idle:
        waiting = sum(stats[name]["queued"] for name in idle)
        ctx.add("workers", "fail", f"no worker listens on {', '.join(idle)}"
                + (f" ({waiting} job(s) waiting)" if waiting else ""),
                "start `nexus run-worker` (all queues) or `nexus run-worker --queues "
                + ",".join(n.removeprefix("integration-") for n in idle) + "` on a machine "
                "with the same settings")
    else:
        ctx.add("workers", "ok", "workers listen on every queue: " + ", ".join(
            f"{name.removeprefix('integration-')} {s['workers']}" for name, s in stats.items()))

    from nexus_core.sync.cron import running_schedulers

    active = (ctx.installations or {}).get("active")
    schedulers = running_schedulers(ctx.redis)
    if schedulers:
        ctx.add("scheduler", "ok", f"nexus scheduler running: {', '.join(schedulers)}")
    elif active == 0:
        ctx.add("scheduler", "ok", "no nexus scheduler running (no active installation needs "
                "periodic deltas or health checks yet)")
    else:
        ctx.add("scheduler", "fail", "no `nexus scheduler` is running: periodic deltas (every "
                f"NEXUS_DELTA_INTERVAL={ctx.settings.delta_interval} s) and health checks are "
                "not scheduled" + (f" for {active} active installation(s)" if active else ""),
                "run `nexus scheduler` (one or two, anywhere) or `nexus run-worker "
                "--with-scheduler` on one machine")

    scheduled = sum(s["scheduled"] for s in stats.values())
    rq_scheduler = any(queues.queue(name, ctx.redis).scheduler_pid for name in stats)
    if rq_scheduler:
        ctx.add("scheduler.retries", "ok", "RQ's scheduler runs (retries and rescheduled jobs "
                "return to their queues)")
    elif scheduled or ctx.settings.max_retries:
        ctx.add("scheduler.retries", "fail", "RQ's scheduler is not running: retries with "
                "backoff and jobs rescheduled after a rate limit never return to their queues"
                + (f" ({scheduled} job(s) waiting in the scheduled registries)"
                   if scheduled else ""),
                "start `nexus run-worker` (every worker runs RQ's scheduler, one per Redis)")
    else:
        ctx.add("scheduler.retries", "ok", "no retries configured (INTEGRATION_MAX_RETRIES=0) "
                "and nothing scheduled")

    failed = {name: s["failed"] for name, s in stats.items() if s["failed"]}
    if failed:
        ctx.add("dlq", "warn", f"{sum(failed.values())} job(s) in the dead-letter queue ("
                + ", ".join(f"{n.removeprefix('integration-')} {c}" for n, c in failed.items())
                + ")", "`nexus dlq list` shows why; `nexus dlq requeue JOB_ID|--all` after "
                "the cause is fixed; `nexus dlq purge --older-than 7d` drops old ones")
    else:
        ctx.add("dlq", "ok", "the dead-letter queue is empty")


# -- all of it ---------------------------------------------------------------------------------

CHECKS: tuple[Callable[[_Context], None], ...] = (
    check_redis, _load_keyring, check_database, check_key_sample, check_plugins,
    check_providers, check_workers,
)


def diagnose(settings: Any = None, *, registry: Any = None) -> list[Finding]:
    """Run every check against ``settings`` (default: the process settings) and return the
    findings in order. A check that crashes becomes a ``fail`` naming the exception."""
    if settings is None:
        from nexus_core.config import get_settings

        settings = get_settings()
    ctx = _Context(settings, registry=registry)
    try:
        for check in CHECKS:
            try:
                check(ctx)
            except Exception as exc:  # the doctor reports, it does not crash
                ctx.add(check.__name__.removeprefix("check_").strip("_"), "fail",
                        f"the check itself failed: {type(exc).__name__}: {exc}",
                        "run with --debug and report it")
    finally:
        _close(ctx)
    return ctx.findings


def _close(ctx: _Context) -> None:
    if ctx.store is not None:
        ctx.store.close()
    if ctx.redis is not None:
        with suppress(Exception):
            ctx.redis.close()


def failed(findings: list[Finding]) -> bool:
    return any(f.status == "fail" for f in findings)


def iter_lines(findings: list[Finding]) -> Iterator[str]:
    """The doctor's report for people: one line per finding, the fix indented below."""
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    width = max((len(f.check) for f in findings), default=0)
    for f in findings:
        yield f"{marks[f.status]}  {f.check.ljust(width)}  {f.message}"
        if f.fix and f.status != "ok":
            yield f"{' ' * (8 + width)}fix: {f.fix}"
