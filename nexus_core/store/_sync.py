"""Checkpoints and sync runs: what the sync engine commits page by page."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from nexus_core.errors import NotFound, StoreError
from nexus_core.models import utcnow
from nexus_core.store import schema as t
from nexus_core.store._base import (
    _SELECT_CIPHERTEXT,
    _SELECT_INSTALLATION,
    CHECKPOINT_KINDS,
    RUN_STATUSES,
    Checkpoint,
    StoreBase,
    SyncRun,
    SyncState,
    _aware,
    _check,
    _key,
)

_cp = t.checkpoints.c
# Built once (see nexus_core.store._base): the statements a sync job runs per page.
_SELECT_CHECKPOINT = sa.select(t.checkpoints).where(
    _key(t.checkpoints), _cp.stream == sa.bindparam("k_stream"), _cp.kind == sa.bindparam("k_kind")
)
_SELECT_CHECKPOINTS_OF_KIND = sa.select(t.checkpoints).where(
    _key(t.checkpoints), _cp.kind == sa.bindparam("k_kind")
)
#: The compare-and-set: the row moves to page ``v_seq`` only from page ``k_prev``.
_ADVANCE_CHECKPOINT = (
    sa.update(t.checkpoints)
    .where(_key(t.checkpoints), _cp.stream == sa.bindparam("k_stream"),
           _cp.kind == sa.bindparam("k_kind"), _cp.seq == sa.bindparam("k_prev"))
    .values(cursor=sa.bindparam("v_cursor"), seq=sa.bindparam("v_seq"),
            updated_at=sa.bindparam("v_now"))
)
#: The same two statements for a raw sqlite3 connection (Store.page_committer).
_ADVANCE_SQL = (
    "UPDATE nexus_checkpoints SET cursor = ?, seq = ?, updated_at = ? WHERE tenant_id = ? "
    "AND install_id = ? AND stream = ? AND kind = ? AND seq = ?"
)
_COUNT_SQL = (
    "UPDATE nexus_sync_runs SET pages = pages + 1, records = records + ? WHERE run_id = ? "
    "AND tenant_id = ?"
)
_COUNT_PAGE = (
    sa.update(t.sync_runs)
    .where(t.sync_runs.c.run_id == sa.bindparam("k_run"),
           t.sync_runs.c.tenant_id == sa.bindparam("k_tenant"))
    .values(pages=t.sync_runs.c.pages + 1,
            records=t.sync_runs.c.records + sa.bindparam("v_records", type_=sa.BigInteger))
)


class SyncMixin(StoreBase):
    """Checkpoints (compare-and-set cursors) and sync runs (mixed into ``Store``)."""

    # -- checkpoints -----------------------------------------------------------------------

    def get_checkpoint(self, tenant_id: str, install_id: str, stream: str, kind: str) -> Checkpoint:
        _check(kind, CHECKPOINT_KINDS, "kind")
        with self._tx(readonly=True) as conn:
            row = conn.execute(_SELECT_CHECKPOINT, {
                "k_tenant": tenant_id, "k_install": install_id, "k_stream": stream, "k_kind": kind,
            }).first()
            if row is None:
                self._get(conn, tenant_id, install_id)
                return Checkpoint(None, 0, None)
        return Checkpoint(row.cursor, row.seq, _aware(row.updated_at))

    def load_sync_state(
        self, tenant_id: str, install_id: str, kind: str, *, credentials: bool = False
    ) -> SyncState:
        """Everything a sync job reads before its first page, in one read transaction: the
        installation, its credentials (when ``credentials``) and its ``kind`` checkpoints.
        NotFound if the installation does not exist for this tenant."""
        _check(kind, CHECKPOINT_KINDS, "kind")
        key = {"k_tenant": tenant_id, "k_install": install_id}
        with self._tx(readonly=True) as conn:
            inst = self._get(conn, tenant_id, install_id)
            creds = self._read_credentials(conn, tenant_id, install_id) if credentials else None
            rows = conn.execute(_SELECT_CHECKPOINTS_OF_KIND, {**key, "k_kind": kind}).all()
        return SyncState(
            installation=inst, credentials=creds,
            checkpoints={r.stream: Checkpoint(r.cursor, r.seq, _aware(r.updated_at)) for r in rows},
        )

    def warm_up(self) -> None:
        """Run a sync job's statements once against a tenant that cannot exist, so their
        compiled form is in the engine's cache: a worker calls this before it forks, and its
        work-horses inherit the cache instead of each compiling the same SQL again."""
        tenant = "(nexus warm-up)"  # no such installation, and seq 0 is never stored
        # The compiled cache is keyed by the statement *and* the names of the parameters
        # passed: exactly the ones the real calls pass.
        key = {"k_tenant": tenant, "k_install": tenant}
        cp = {**key, "k_stream": tenant, "k_kind": "delta"}
        with self._tx(readonly=True) as conn:
            conn.execute(_SELECT_INSTALLATION, key).all()
            conn.execute(_SELECT_CIPHERTEXT, key).all()
            conn.execute(_SELECT_CHECKPOINTS_OF_KIND, {**key, "k_kind": "delta"}).all()
            conn.execute(_SELECT_CHECKPOINT, cp).all()
        with self._tx() as conn:
            conn.execute(_ADVANCE_CHECKPOINT,
                         {**cp, "k_prev": 0, "v_cursor": None, "v_seq": 1, "v_now": utcnow()})
            conn.execute(_COUNT_PAGE, {"k_run": tenant, "k_tenant": tenant, "v_records": 0})

    def list_checkpoints(
        self, tenant_id: str, install_id: str
    ) -> dict[tuple[str, str], Checkpoint]:
        with self._tx(readonly=True) as conn:
            self._get(conn, tenant_id, install_id)
            rows = conn.execute(
                sa.select(t.checkpoints)
                .where(self._where(t.checkpoints, tenant_id, install_id))
                .order_by(t.checkpoints.c.stream, t.checkpoints.c.kind)
            ).all()
        return {(r.stream, r.kind): Checkpoint(r.cursor, r.seq, _aware(r.updated_at)) for r in rows}

    def commit_page(
        self,
        tenant_id: str,
        install_id: str,
        stream: str,
        kind: str,
        cursor: str | None,
        *,
        seq: int,
        run_id: str | None = None,
        records: int = 0,
    ) -> bool:
        """Compare-and-set the checkpoint to ``cursor``/``seq`` if the stored seq is ``seq - 1``,
        and count the page in the run, in one transaction. False (nothing written) when stale:
        another worker committed this page already, so this one must stop."""
        _check(kind, CHECKPOINT_KINDS, "kind")
        if seq < 1:
            raise ValueError(f"seq must be >= 1, got {seq}")
        now = utcnow()
        with self._tx(checkpoint=True) as conn:
            # One statement does the compare-and-set; its WHERE is tenant-scoped, so a row of
            # another tenant never matches. Only when it matches nothing do we look further.
            done = conn.execute(_ADVANCE_CHECKPOINT, {
                "k_tenant": tenant_id, "k_install": install_id, "k_stream": stream,
                "k_kind": kind, "k_prev": seq - 1, "v_cursor": cursor, "v_seq": seq, "v_now": now,
            }).rowcount
            if not done:
                self._get(conn, tenant_id, install_id)  # NotFound for an unknown installation
            if not done and seq == 1:
                key = {"tenant_id": tenant_id, "install_id": install_id, "stream": stream,
                       "kind": kind}
                insert = _insert_ignore(conn, t.checkpoints).values(
                    cursor=cursor, seq=seq, updated_at=now, **key
                )
                # rowcount is not reliable for INSERT on every driver; RETURNING is.
                done = conn.execute(insert.returning(t.checkpoints.c.seq)).first() is not None
            if not done:
                return False
            if run_id is not None:
                updated = conn.execute(_COUNT_PAGE, {
                    "k_run": run_id, "k_tenant": tenant_id, "v_records": int(records),
                }).rowcount
                if not updated:
                    raise NotFound(
                        f"sync run {run_id!r} not found for tenant {tenant_id!r}",
                        tenant_id=tenant_id, install_id=install_id,
                    )
        return True

    @contextmanager
    def page_committer(
        self, tenant_id: str, install_id: str, stream: str, kind: str
    ) -> Iterator[Callable[..., bool]]:
        """A stream's :meth:`commit_page`, for a job that commits page after page:
        ``commit(cursor, seq=..., run_id=..., records=...)`` with the same compare-and-set, run
        counters, transaction and answer.

        On SQLite it keeps one connection for the whole stream and runs the two UPDATEs on it
        directly: SQLAlchemy's per-statement machinery and a pool checkout per page cost more
        CPU than SQLite itself, and that CPU is taken from the thread fetching the next page.
        Anything but the common case (the compare-and-set misses: first page, stale, unknown
        installation) goes through :meth:`commit_page`."""
        _check(kind, CHECKPOINT_KINDS, "kind")

        def fallback(cursor: str | None, *, seq: int, run_id: str | None = None,
                     records: int = 0) -> bool:
            return self.commit_page(tenant_id, install_id, stream, kind, cursor, seq=seq,
                                    run_id=run_id, records=records)

        if self.engine.dialect.name != "sqlite":
            yield fallback
            return
        stamp = t.checkpoints.c.updated_at.type.bind_processor(self.engine.dialect)
        held: list[Any] = []  # the raw connection, taken at the first page that needs it

        def connection() -> Any:
            if not held:
                raw = self.engine.raw_connection()
                held.append(raw)
                # This connection's commits are checkpoint commits (see make_engine); the
                # flag makes the next ordinary transaction on it switch back to FULL.
                driver: Any = raw.driver_connection  # the sqlite3 connection (never None here)
                driver.execute("PRAGMA synchronous=NORMAL")
                raw.info["nexus_synchronous"] = "NORMAL"
            return held[0].driver_connection

        def commit(cursor: str | None, *, seq: int, run_id: str | None = None,
                   records: int = 0) -> bool:
            if seq < 2:
                return fallback(cursor, seq=seq, run_id=run_id, records=records)
            now = utcnow()
            try:
                dbapi = connection()
                dbapi.execute("BEGIN IMMEDIATE")
                try:
                    done = dbapi.execute(_ADVANCE_SQL, (
                        cursor, seq, stamp(now) if stamp else now, tenant_id, install_id,
                        stream, kind, seq - 1)).rowcount
                    if done and run_id is not None:
                        done = dbapi.execute(
                            _COUNT_SQL, (int(records), run_id, tenant_id)).rowcount
                except BaseException:
                    dbapi.execute("ROLLBACK")
                    raise
                dbapi.execute("COMMIT" if done else "ROLLBACK")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"database {self.url} refused a checkpoint commit: {exc}",
                    hint="check NEXUS_DATABASE_URL and the disk; nothing was written",
                    tenant_id=tenant_id, install_id=install_id,
                ) from exc
            if done:
                return True
            # Stale, an unknown installation or run: the full path says which.
            return fallback(cursor, seq=seq, run_id=run_id, records=records)

        try:
            yield commit
        finally:
            for raw in held:
                raw.close()

    def reset_checkpoint(self, tenant_id: str, install_id: str, stream: str, kind: str) -> None:
        """Forget a stream's cursor: the next run starts from the beginning (seq 0)."""
        _check(kind, CHECKPOINT_KINDS, "kind")
        with self._tx() as conn:
            self._get(conn, tenant_id, install_id)
            conn.execute(
                sa.delete(t.checkpoints).where(
                    self._where(t.checkpoints, tenant_id, install_id),
                    t.checkpoints.c.stream == stream,
                    t.checkpoints.c.kind == kind,
                )
            )

    # -- sync runs -------------------------------------------------------------------------

    @staticmethod
    def _run(row: Any) -> SyncRun:
        return SyncRun(
            run_id=row.run_id, tenant_id=row.tenant_id, install_id=row.install_id,
            kind=row.kind, stream=row.stream, status=row.status,
            started_at=_aware(row.started_at), finished_at=_aware(row.finished_at),
            records=row.records, pages=row.pages, error=row.error, job_id=row.job_id,
        )

    def start_run(
        self, tenant_id: str, install_id: str, kind: str, stream: str | None, *,
        job_id: str | None = None, run_id: str | None = None,
    ) -> str:
        """Record a running sync run; ``run_id`` (default: a new one) lets a job's log lines
        name the run before it is recorded."""
        run_id = run_id or uuid.uuid4().hex
        with self._tx() as conn:
            self._get(conn, tenant_id, install_id)
            conn.execute(
                sa.insert(t.sync_runs).values(
                    run_id=run_id, tenant_id=tenant_id, install_id=install_id, kind=kind,
                    stream=stream, status="running", job_id=job_id, started_at=utcnow(),
                    records=0, pages=0,
                )
            )
        return run_id

    def finish_run(
        self, tenant_id: str, run_id: str, status: str, error: str | None = None
    ) -> SyncRun:
        _check(status, RUN_STATUSES, "status")
        finished = None if status == "running" else utcnow()
        with self._tx() as conn:
            done = conn.execute(
                sa.update(t.sync_runs)
                .where(t.sync_runs.c.run_id == run_id, t.sync_runs.c.tenant_id == tenant_id)
                .values(status=status, error=error, finished_at=finished)
            ).rowcount
            if not done:
                raise NotFound(f"sync run {run_id!r} not found for tenant {tenant_id!r}",
                               tenant_id=tenant_id)
            row = conn.execute(sa.select(t.sync_runs).where(t.sync_runs.c.run_id == run_id)).one()
        return self._run(row)

    def get_run(self, tenant_id: str, run_id: str) -> SyncRun:
        with self._tx(readonly=True) as conn:
            row = conn.execute(
                sa.select(t.sync_runs).where(
                    t.sync_runs.c.run_id == run_id, t.sync_runs.c.tenant_id == tenant_id
                )
            ).first()
        if row is None:
            raise NotFound(f"sync run {run_id!r} not found for tenant {tenant_id!r}",
                           tenant_id=tenant_id)
        return self._run(row)

    def list_runs(
        self, tenant_id: str | None = None, install_id: str | None = None, limit: int = 50
    ) -> list[SyncRun]:
        """Newest first. ``tenant_id`` None is operator scope (every tenant)."""
        if install_id is not None and tenant_id is None:
            raise ValueError("install_id needs tenant_id: install ids are only unique per tenant")
        query = sa.select(t.sync_runs)
        if tenant_id is not None:
            query = query.where(t.sync_runs.c.tenant_id == tenant_id)
        if install_id is not None:
            query = query.where(t.sync_runs.c.install_id == install_id)
        query = query.order_by(t.sync_runs.c.started_at.desc(), t.sync_runs.c.run_id).limit(limit)
        with self._tx(readonly=True) as conn:
            return [self._run(r) for r in conn.execute(query).all()]


def _insert_ignore(conn: sa.Connection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the two dialects we support."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


