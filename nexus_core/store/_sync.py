"""Checkpoints and sync runs: what the sync engine commits page by page."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from nexus_core.errors import NotFound
from nexus_core.models import utcnow
from nexus_core.store import schema as t
from nexus_core.store._base import (
    CHECKPOINT_KINDS,
    RUN_STATUSES,
    Checkpoint,
    StoreBase,
    SyncRun,
    _aware,
    _check,
)


class SyncMixin(StoreBase):
    """Checkpoints (compare-and-set cursors) and sync runs (mixed into ``Store``)."""

    # -- checkpoints -----------------------------------------------------------------------

    def get_checkpoint(self, tenant_id: str, install_id: str, stream: str, kind: str) -> Checkpoint:
        _check(kind, CHECKPOINT_KINDS, "kind")
        with self._tx() as conn:
            row = conn.execute(
                sa.select(t.checkpoints).where(
                    self._where(t.checkpoints, tenant_id, install_id),
                    t.checkpoints.c.stream == stream,
                    t.checkpoints.c.kind == kind,
                )
            ).first()
            if row is None:
                self._get(conn, tenant_id, install_id)
                return Checkpoint(None, 0, None)
        return Checkpoint(row.cursor, row.seq, _aware(row.updated_at))

    def list_checkpoints(
        self, tenant_id: str, install_id: str
    ) -> dict[tuple[str, str], Checkpoint]:
        with self._tx() as conn:
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
        key = {"tenant_id": tenant_id, "install_id": install_id, "stream": stream, "kind": kind}
        with self._tx() as conn:
            self._get(conn, tenant_id, install_id)
            done = conn.execute(
                sa.update(t.checkpoints)
                .where(*(t.checkpoints.c[k] == v for k, v in key.items()))
                .where(t.checkpoints.c.seq == seq - 1)
                .values(cursor=cursor, seq=seq, updated_at=now)
            ).rowcount
            if not done and seq == 1:
                insert = _insert_ignore(conn, t.checkpoints).values(
                    cursor=cursor, seq=seq, updated_at=now, **key
                )
                # rowcount is not reliable for INSERT on every driver; RETURNING is.
                done = conn.execute(insert.returning(t.checkpoints.c.seq)).first() is not None
            if not done:
                return False
            if run_id is not None:
                updated = conn.execute(
                    sa.update(t.sync_runs)
                    .where(t.sync_runs.c.run_id == run_id, t.sync_runs.c.tenant_id == tenant_id)
                    .values(pages=t.sync_runs.c.pages + 1,
                            records=t.sync_runs.c.records + int(records))
                ).rowcount
                if not updated:
                    raise NotFound(
                        f"sync run {run_id!r} not found for tenant {tenant_id!r}",
                        tenant_id=tenant_id, install_id=install_id,
                    )
        return True

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
        job_id: str | None = None,
    ) -> str:
        run_id = uuid.uuid4().hex
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
        with self._tx() as conn:
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
        with self._tx() as conn:
            return [self._run(r) for r in conn.execute(query).all()]


def _insert_ignore(conn: sa.Connection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the two dialects we support."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


