"""The store's foundation: connection, transactions, schema migration and installations.

Records returned by the store (:class:`Checkpoint`, :class:`SyncRun`, :class:`OAuthState`) and
the engine set-up for SQLite and PostgreSQL live here too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

import attrs
import sqlalchemy as sa

from nexus_core.converters import from_json, to_json
from nexus_core.crypto import KeyRing, associated_data, keyring_from_settings
from nexus_core.errors import NexusError, NotFound, StoreError
from nexus_core.ids import check_id
from nexus_core.models import INSTALL_STATUSES, Credentials, Installation, utcnow
from nexus_core.store import schema as t

if TYPE_CHECKING:
    from typing import Self

    from nexus_core.config import Settings

CHECKPOINT_KINDS = ("backfill", "delta")
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
_UNSET: Any = object()


class Conflict(StoreError):
    """A write was refused because it contradicts what is stored (the row already exists)."""


@attrs.frozen
class Checkpoint:
    """Where a stream's backfill or delta resumes. ``seq`` counts committed pages; 0 = never."""

    cursor: str | None
    seq: int
    updated_at: datetime | None = None


@attrs.frozen
class SyncState:
    """What a sync job reads before its first page, in one transaction
    (:meth:`~nexus_core.store.Store.load_sync_state`)."""

    installation: Installation
    #: Decrypted credentials; None when the installation has none or they were not asked for.
    credentials: Credentials | None
    #: The checkpoint of the job's kind per stream (streams never committed are absent).
    checkpoints: dict[str, Checkpoint]


@attrs.frozen
class SyncRun:
    run_id: str
    tenant_id: str
    install_id: str
    kind: str
    stream: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    records: int = 0
    pages: int = 0
    error: str | None = None
    job_id: str | None = None


INTENTS = ("connect", "reconnect")


@attrs.frozen
class OAuthState:
    """A consumed OAuth ``state``: what the callback needs to finish the flow."""

    tenant_id: str
    install_id: str
    provider: str
    redirect_uri: str
    code_verifier: str | None
    expires_at: datetime
    #: The installation config to store with the connection (None: keep the stored one).
    config: dict[str, Any] | None = None
    #: ``connect``, or ``reconnect``: may bind the installation to another provider account.
    intent: str = "connect"


@attrs.frozen
class ConnectLink:
    """A consumed connect link: which flow the public authorize route may start."""

    provider: str
    tenant_id: str
    install_id: str
    intent: str
    config: dict[str, Any] | None
    redirect_uri: str | None
    expires_at: datetime


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class StoreBase:
    """Connection, transactions, schema and installations; see :class:`nexus_core.store.Store`."""

    def __init__(self, engine: sa.Engine, keyring: KeyRing) -> None:
        self.engine = engine
        self.keyring = keyring
        self.url = engine.url.render_as_string(hide_password=True)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        keyring: KeyRing | None = None,
        *,
        settings: Settings | None = None,
        migrate: bool = True,
    ) -> Self:
        """Connect to ``url`` and (by default) bring the schema up to date.

        ``keyring`` None reads NEXUS_ENCRYPTION_KEYS (or the development key file) from
        ``settings`` / the process settings.
        """
        if keyring is None:
            keyring = keyring_from_settings(settings)
        store = cls(make_engine(url), keyring)
        if migrate:
            try:
                store.migrate()
            except BaseException:
                store.close()
                raise
        return store

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate: bool = True) -> Self:
        """The store at NEXUS_DATABASE_URL with the configured key ring."""
        if settings is None:
            from nexus_core.config import get_settings

            settings = get_settings()
        return cls.from_url(
            settings.database_url, keyring_from_settings(settings), migrate=migrate
        )

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self, *, readonly: bool = False, checkpoint: bool = False) -> Iterator[sa.Connection]:
        """One transaction. ``readonly`` (a method that only reads) starts it deferred on
        SQLite: a snapshot under WAL that does not queue behind a committing writer.
        ``checkpoint``: a page's checkpoint commit, which SQLite syncs to disk less eagerly
        (see :func:`make_engine`); every other write keeps synchronous=FULL."""
        try:
            with self.engine.connect() as conn:
                if readonly:
                    conn.execution_options(nexus_readonly=True)
                elif checkpoint:
                    conn.execution_options(nexus_checkpoint=True)
                with conn.begin():
                    yield conn
        except NexusError:
            raise
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"the store refused a write: {exc.orig}") from exc
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreError(
                f"database {self.url} is unreachable or refused the operation: "
                f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}",
                hint="check NEXUS_DATABASE_URL and that the database server is running; "
                "nothing was written",
            ) from exc
        except sa.exc.DBAPIError as exc:
            raise StoreError(
                f"database {self.url} failed: {type(exc.orig).__name__}: {exc.orig}",
                hint="nothing was written",
            ) from exc

    # -- schema ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        """The applied schema version (0 for an empty database)."""
        with self._tx() as conn:
            if not sa.inspect(conn).has_table(t.schema_version.name):
                return 0
            return conn.execute(sa.select(t.schema_version.c.version)).scalar() or 0

    def migrate(self) -> int:
        """Apply pending migrations in one locked transaction; returns the schema version."""
        current = self.schema_version()
        if current == t.LATEST_VERSION:
            return current
        with self._tx() as conn:
            return apply_migrations(conn, t.schema_version, t.MIGRATIONS, lock_id=7391022345,
                                    where=self.url)

    # -- installations ---------------------------------------------------------------------

    @staticmethod
    def _installation(row: Any) -> Installation:
        return Installation(
            tenant_id=row.tenant_id,
            install_id=row.install_id,
            provider=row.provider,
            account_id=row.account_id,
            status=row.status,
            config=json.loads(row.config),
            created_at=_aware(row.created_at),
            updated_at=_aware(row.updated_at),
            webhook_key=row.webhook_key,
        )

    @staticmethod
    def _where(table: sa.Table, tenant_id: str, install_id: str) -> Any:
        return sa.and_(table.c.tenant_id == tenant_id, table.c.install_id == install_id)

    def _not_found(self, conn: sa.Connection, tenant_id: str, install_id: str) -> NotFound:
        ids = conn.execute(
            sa.select(t.installations.c.install_id)
            .where(t.installations.c.tenant_id == tenant_id)
            .order_by(t.installations.c.install_id)
        ).scalars().all()
        existing = (
            f"this tenant has: {', '.join(ids)}" if ids else "this tenant has no installations"
        )
        return NotFound(
            f"installation {install_id!r} not found for tenant {tenant_id!r}; {existing}",
            tenant_id=tenant_id,
            install_id=install_id,
            hint="`nexus installs list --tenant <tenant>` lists a tenant's installations",
        )

    def _get(self, conn: sa.Connection, tenant_id: str, install_id: str) -> Installation:
        row = conn.execute(
            _SELECT_INSTALLATION, {"k_tenant": tenant_id, "k_install": install_id}
        ).first()
        if row is None:
            raise self._not_found(conn, tenant_id, install_id)
        return self._installation(row)

    def add_installation(
        self,
        tenant_id: str,
        install_id: str,
        provider: str,
        *,
        account_id: str | None = None,
        config: dict[str, Any] | None = None,
        credentials: Credentials | None = None,
        status: str = "active",
    ) -> Installation:
        """Create an installation (and its credentials) in one transaction, with a fresh
        webhook key."""
        check_id("tenant_id", tenant_id)
        check_id("install_id", install_id)
        _check(status, INSTALL_STATUSES, "status")
        if credentials is not None and account_id is None:
            account_id = credentials.extra.get("account_id")
        now = utcnow()
        with self._tx() as conn:
            existing = conn.execute(
                sa.select(t.installations.c.provider).where(
                    self._where(t.installations, tenant_id, install_id)
                )
            ).first()
            if existing is not None:
                raise Conflict(
                    f"installation {install_id!r} already exists for tenant {tenant_id!r} "
                    f"(provider {existing.provider})",
                    tenant_id=tenant_id,
                    install_id=install_id,
                    hint="pick another --install id, or remove the existing one first",
                )
            conn.execute(
                sa.insert(t.installations).values(
                    tenant_id=tenant_id, install_id=install_id, provider=provider,
                    account_id=account_id, status=status,
                    config=json.dumps(config or {}, sort_keys=True),
                    created_at=now, updated_at=now, webhook_key=t.new_webhook_key(),
                )
            )
            if credentials is not None:
                self._put_credentials(conn, tenant_id, install_id, credentials)
            return self._get(conn, tenant_id, install_id)

    def get_installation(self, tenant_id: str, install_id: str) -> Installation:
        with self._tx(readonly=True) as conn:
            return self._get(conn, tenant_id, install_id)

    def list_installations(self, tenant_id: str) -> list[Installation]:
        with self._tx(readonly=True) as conn:
            rows = conn.execute(
                sa.select(t.installations)
                .where(t.installations.c.tenant_id == tenant_id)
                .order_by(t.installations.c.install_id)
            ).all()
        return [self._installation(r) for r in rows]

    def list_all_installations(
        self, *, provider: str | None = None, status: str | None = None
    ) -> list[Installation]:
        """Every tenant's installations: operator and scheduler scope only."""
        query = sa.select(t.installations)
        if provider is not None:
            query = query.where(t.installations.c.provider == provider)
        if status is not None:
            query = query.where(t.installations.c.status == status)
        with self._tx(readonly=True) as conn:
            rows = conn.execute(
                query.order_by(t.installations.c.tenant_id, t.installations.c.install_id)
            ).all()
        return [self._installation(r) for r in rows]

    def find_installations_by_account(self, provider: str, account_id: str) -> list[Installation]:
        """Installations connected to a provider account (webhook routing)."""
        with self._tx(readonly=True) as conn:
            rows = conn.execute(
                sa.select(t.installations)
                .where(t.installations.c.provider == provider)
                .where(t.installations.c.account_id == str(account_id))
                .order_by(t.installations.c.tenant_id, t.installations.c.install_id)
            ).all()
        return [self._installation(r) for r in rows]

    def find_installation_by_webhook_key(self, provider: str, key: str) -> Installation | None:
        """The installation a per-installation webhook URL names (webhook routing: by its
        unique, indexed key, so the cost does not grow with the number of installations)."""
        if not key or len(key) > 64:
            return None
        with self._tx(readonly=True) as conn:
            row = conn.execute(
                sa.select(t.installations).where(t.installations.c.webhook_key == key)
            ).first()
        if row is None or row.provider != provider:
            return None
        return self._installation(row)

    def rotate_webhook_key(self, tenant_id: str, install_id: str) -> Installation:
        """A new webhook key: the old per-installation URL stops working at once."""
        return self._update(tenant_id, install_id, webhook_key=t.new_webhook_key())

    def _update(self, tenant_id: str, install_id: str, **values: Any) -> Installation:
        values["updated_at"] = utcnow()
        with self._tx() as conn:
            done = conn.execute(
                sa.update(t.installations)
                .where(self._where(t.installations, tenant_id, install_id))
                .values(**values)
            ).rowcount
            if not done:
                raise self._not_found(conn, tenant_id, install_id)
            return self._get(conn, tenant_id, install_id)

    def set_status(self, tenant_id: str, install_id: str, status: str) -> Installation:
        _check(status, INSTALL_STATUSES, "status")
        return self._update(tenant_id, install_id, status=status)

    def update_installation(
        self, tenant_id: str, install_id: str, *, account_id: Any = _UNSET, config: Any = _UNSET
    ) -> Installation:
        values: dict[str, Any] = {}
        if account_id is not _UNSET:
            values["account_id"] = None if account_id is None else str(account_id)
        if config is not _UNSET:
            values["config"] = json.dumps(config or {}, sort_keys=True)
        return self._update(tenant_id, install_id, **values)

    def remove_installation(self, tenant_id: str, install_id: str) -> None:
        """Remove an installation with its credentials, checkpoints, pending OAuth states and
        last health check. Sync-run history is kept (it holds no secrets) until pruned."""
        with self._tx() as conn:
            for table in (t.credentials, t.checkpoints, t.oauth_states, t.installation_health):
                conn.execute(sa.delete(table).where(self._where(table, tenant_id, install_id)))
            where = self._where(t.installations, tenant_id, install_id)
            done = conn.execute(sa.delete(t.installations).where(where)).rowcount
            if not done:
                raise self._not_found(conn, tenant_id, install_id)

    # -- sealing credentials (used by every writer of credentials) -------------------------

    def _put_credentials(
        self, conn: sa.Connection, tenant_id: str, install_id: str, creds: Credentials
    ) -> None:
        sealed = self.keyring.encrypt(
            to_json(creds).encode(), associated_data(tenant_id, install_id)
        )
        values = {"key_id": self.keyring.primary_id, "ciphertext": sealed, "updated_at": utcnow()}
        where = self._where(t.credentials, tenant_id, install_id)
        done = conn.execute(
            sa.update(t.credentials).where(where).values(version=t.credentials.c.version + 1,
                                                         **values)
        ).rowcount
        if not done:
            conn.execute(
                sa.insert(t.credentials).values(
                    tenant_id=tenant_id, install_id=install_id, version=1, **values
                )
            )

    def _read_credentials(
        self, conn: sa.Connection, tenant_id: str, install_id: str
    ) -> Credentials | None:
        row = conn.execute(
            _SELECT_CIPHERTEXT, {"k_tenant": tenant_id, "k_install": install_id}
        ).first()
        if row is None:
            return None
        plain = self.keyring.decrypt(row.ciphertext, associated_data(tenant_id, install_id))
        return from_json(plain, Credentials)



def apply_migrations(
    conn: sa.Connection, version_table: sa.Table, migrations: list[Any], *, lock_id: int,
    where: str,
) -> int:
    """Apply the steps of ``migrations`` ((version, description, step), append-only) newer than
    the version recorded in ``version_table``, in the caller's transaction; refuses a database
    newer than the code. The store and the SQL sink keep their schemas this way."""
    latest = migrations[-1][0]
    if conn.dialect.name == "postgresql":
        # Serialize concurrent migrators (several workers starting at once).
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})
    version_table.create(conn, checkfirst=True)
    current = conn.execute(sa.select(version_table.c.version)).scalar() or 0
    if current > latest:
        raise StoreError(
            f"database {where} has {version_table.name} {current}, newer than this nexus-core "
            f"supports ({latest})", hint="upgrade nexus-core on this machine",
        )
    for version, _description, step in migrations:
        if version > current:
            step(conn)
    values = {"version": latest, "updated_at": utcnow()}
    if conn.execute(sa.update(version_table).values(**values)).rowcount == 0:
        conn.execute(sa.insert(version_table).values(id=1, **values))
    return int(latest)


def _key(table: sa.Table) -> Any:
    """``tenant_id = :k_tenant AND install_id = :k_install`` on ``table``."""
    return sa.and_(table.c.tenant_id == sa.bindparam("k_tenant"),
                   table.c.install_id == sa.bindparam("k_install"))


# The statements of a sync job's hot path, built once: building a Core statement costs more
# than executing it, and a statement object built once compiles once per engine (the compiled
# form is cached in the engine, so a work-horse forked after Store.warm_up() compiles nothing).
_SELECT_INSTALLATION = sa.select(t.installations).where(_key(t.installations))
_SELECT_CIPHERTEXT = sa.select(t.credentials.c.ciphertext).where(_key(t.credentials))


def _enable_wal(cur: Any, timeout: float = 30.0) -> bool:
    """Switch the database file to WAL, waiting while another connection holds it.

    Changing the journal mode needs an exclusive lock and SQLite answers SQLITE_BUSY at once
    instead of using the busy timeout, so several processes opening a fresh database together
    (workers starting side by side) would fail; retried here by hand for up to ``timeout``.
    """
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return cur.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def make_engine(url: str, **options: Any) -> sa.Engine:
    """An engine for the store (or the SQL sink: ``options`` go to ``create_engine``)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # ``timeout`` is SQLite's busy timeout (sqlite3 sets it on every connection).
        engine = sa.create_engine(parsed, connect_args={"timeout": 30}, **options)
        file_backed = bool(parsed.database) and parsed.database != ":memory:"
        wal = {"set": False}

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # We issue BEGIN ourselves (below); WAL lets readers run beside one writer.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if file_backed and not wal["set"]:
                # WAL is a property of the database file: set once per engine, it holds for
                # every later connection (a forked work-horse's too).
                wal["set"] = _enable_wal(cur)
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA secure_delete=ON")  # deleted secrets are zeroed in the file
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            options = conn.get_execution_options()
            if options.get("nexus_readonly"):
                conn.exec_driver_sql("BEGIN")
                return
            # Durability. Every write is synchronous=FULL (the WAL is fsynced at each commit)
            # except a page's checkpoint commit (Store.commit_page), which is NORMAL: in WAL
            # mode a NORMAL commit is in the OS's hands when COMMIT returns, so every committed
            # cursor survives a crash or SIGKILL of any process; only an OS crash or power loss
            # may roll the last few checkpoint commits back (to the last fsync: the next FULL
            # commit or WAL checkpoint). That re-delivers pages (sinks upsert by record id) and
            # never skips one: a cursor is still committed only after its page reached the
            # sinks, and the compare-and-set still decides who owns the sync. Credentials,
            # installations, runs and OAuth states stay FULL. Saves an fsync per page (~0.4 ms
            # on a fast disk, several on a slow one).
            mode = "NORMAL" if options.get("nexus_checkpoint") else "FULL"
            info = conn.connection.info
            if info.get("nexus_synchronous") != mode:
                conn.exec_driver_sql(f"PRAGMA synchronous={mode}")
                info["nexus_synchronous"] = mode
            # IMMEDIATE takes the write lock up front: read-then-write transactions from
            # several processes wait on busy_timeout instead of failing with SQLITE_BUSY.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        args = {"connect_timeout": 5} if parsed.get_driver_name() == "psycopg" else {}
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=args, **options)
    raise StoreError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)}",
        hint="use sqlite:///path.db or postgresql+psycopg://user@host/db",
    )

