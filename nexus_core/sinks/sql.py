"""The SQL sink (``NEXUS_SINK=sql``): records and events into tables the product queries.

SQLAlchemy Core on PostgreSQL or SQLite (``NEXUS_SINK_DATABASE_URL``, default: the store's
database). One row per record, keyed by (tenant, provider, stream, record id), upserted with one
statement per page. **Convergence**: a row is only replaced by a version at least as new
(``updated_at``), so a page re-delivered after a crash, or a webhook-triggered fetch racing a
delta, ends with the newest version whatever the arrival order; a record without
``updated_at`` (no version known) replaces what is there. A deletion is a soft delete
(``deleted_at``), ordered the same way: an older version arriving later does not resurrect it.
Webhook events are appended once per (tenant, provider, event id).

Schema (``nexus_sink_schema_version`` tracks it, migrated like the store's)::

    nexus_records (tenant_id, provider, stream, record_id)  PRIMARY KEY
        install_id, data (JSON), updated_at, deleted_at, synced_at
    nexus_events  (tenant_id, provider, event_id)           PRIMARY KEY
        install_id, type, object_id, account_id, occurred_at, payload (JSON), received_at

The product queries them directly, e.g. a tenant's live contacts::

    SELECT record_id, data FROM nexus_records
     WHERE tenant_id = :t AND provider = :provider AND stream = 'contacts'
       AND deleted_at IS NULL
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from nexus_core.hookspecs import hookimpl
from nexus_core.models import utcnow

if TYPE_CHECKING:
    from nexus_core.models import ConnectorContext, Record, WebhookEvent

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

schema_version = sa.Table(
    "nexus_sink_schema_version", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)
record_table = sa.Table(
    "nexus_records", metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("provider", sa.String(100), primary_key=True),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("record_id", sa.String(512), primary_key=True),
    sa.Column("install_id", sa.String(200), nullable=False),
    sa.Column("data", JSON, nullable=False),
    sa.Column("updated_at", TS),
    sa.Column("deleted_at", TS),
    sa.Column("synced_at", TS, nullable=False),
    sa.Index("ix_nexus_records_updated", "tenant_id", "provider", "stream", "updated_at"),
)
event_table = sa.Table(
    "nexus_events", metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("provider", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(512), primary_key=True),
    sa.Column("install_id", sa.String(200), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("object_id", sa.String(512)),
    sa.Column("account_id", sa.String(200)),
    sa.Column("occurred_at", TS),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("received_at", TS, nullable=False),
    sa.Index("ix_nexus_events_type", "tenant_id", "provider", "type", "occurred_at"),
)


def _v1(conn: sa.Connection) -> None:
    # Version 1 as released: own definitions, so later edits of the live tables never change
    # what an old step creates.
    v1 = sa.MetaData()
    for table in (record_table, event_table):
        table.to_metadata(v1)
    v1.create_all(conn)


#: (version, description, step); append only.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "records and events", _v1),
]


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


_UPSERTS: dict[tuple[str, bool], Any] = {}


def _upsert(dialect: str, deleted: bool) -> Any:
    """The upsert of a page's live (or deleted) records, built once per dialect: only a
    version at least as new replaces a row (no version known: always); a deletion keeps the
    row's last data."""
    stmt = _UPSERTS.get((dialect, deleted))
    if stmt is None:
        ins = _insert(dialect)(record_table)
        new = ins.excluded
        changes: dict[str, Any] = {"install_id": new.install_id, "updated_at": new.updated_at,
                                   "deleted_at": new.deleted_at, "synced_at": new.synced_at}
        if not deleted:
            changes["data"] = new.data
        newer = sa.or_(new.updated_at.is_(None), record_table.c.updated_at.is_(None),
                       new.updated_at >= record_table.c.updated_at)
        stmt = ins.on_conflict_do_update(
            index_elements=[record_table.c.tenant_id, record_table.c.provider,
                            record_table.c.stream, record_table.c.record_id],
            set_=changes, where=newer)
        _UPSERTS[(dialect, deleted)] = stmt
    return stmt


def _json_dumps(value: Any) -> str:
    # Provider data may hold datetimes or bytes; the column stores JSON text either way.
    # orjson (a core dependency) is ~5x the stdlib encoder here; what it refuses (integers
    # beyond 64 bits) goes through the stdlib with the same output shape.
    try:
        return orjson.dumps(value, default=_json_default,
                            option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class SqlSink:
    """Upserts pages of records and appends webhook events (see the module docstring)."""

    name = "sink-sql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: tuple[int, sa.Engine] | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> sa.Engine:
        """This process's engine, created (and the schema migrated) at first use; a forked
        work-horse never shares its parent's connections."""
        pid = os.getpid()
        with self._lock:
            if self._engine is not None and self._engine[0] == pid:
                return self._engine[1]
            if self._engine is not None:
                self._engine[1].dispose(close=False)
            from nexus_core.store._base import apply_migrations, make_engine

            engine = make_engine(self.url, json_serializer=_json_dumps)
            try:
                with engine.begin() as conn:
                    current = 0
                    if sa.inspect(conn).has_table(schema_version.name):
                        current = conn.execute(
                            sa.select(schema_version.c.version)).scalar() or 0
                    if current != MIGRATIONS[-1][0]:
                        apply_migrations(conn, schema_version, MIGRATIONS, lock_id=7391022346,
                                         where=engine.url.render_as_string(hide_password=True))
            except BaseException:
                engine.dispose()
                raise
            self._engine = (pid, engine)
            return engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None and self._engine[0] == os.getpid():
                self._engine[1].dispose()
            self._engine = None

    # -- records -----------------------------------------------------------------------------

    @staticmethod
    def _newest(page: list[Record]) -> list[Record]:
        """One row per record id (the newest of a page that holds an id twice): a statement
        may not update one row twice."""
        best: dict[str, Record] = {}
        for record in page:
            seen = best.get(record.id)
            if seen is None or _not_older(record.updated_at, seen.updated_at):
                best[record.id] = record
        return list(best.values())

    @hookimpl
    def process_records(self, ctx: ConnectorContext, stream: str, records: list[Record]
                        ) -> None:
        if not records:
            return
        now = utcnow()
        page = self._newest(records)
        tenant, provider, install = ctx.tenant_id, ctx.provider, ctx.install_id
        with self.engine.begin() as conn:
            for deleted in (False, True):
                values = [{
                    "tenant_id": tenant, "provider": provider, "stream": stream,
                    "record_id": r.id, "install_id": install, "data": r.data,
                    "updated_at": r.updated_at,
                    "deleted_at": (r.updated_at or now) if deleted else None, "synced_at": now,
                } for r in page if r.deleted is deleted]
                if values:
                    # One statement, executemany: SQLAlchemy sends it as multi-row INSERTs
                    # (its "insertmanyvalues"), compiled once per engine.
                    conn.execute(_upsert(conn.dialect.name, deleted), values)

    # -- events --------------------------------------------------------------------------------

    @hookimpl
    def process_events(self, ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
        if not events:
            return
        now = utcnow()
        unique = {e.id: e for e in events}.values()
        values = [{
            "tenant_id": ctx.tenant_id, "provider": ctx.provider, "event_id": e.id,
            "install_id": ctx.install_id, "type": e.type, "object_id": e.object_id,
            "account_id": e.account_id, "occurred_at": e.occurred_at,
            "payload": e.payload, "received_at": now,
        } for e in unique]
        with self.engine.begin() as conn:
            stmt = _insert(conn.dialect.name)(event_table).values(values)
            conn.execute(stmt.on_conflict_do_nothing(
                index_elements=["tenant_id", "provider", "event_id"]))


def _not_older(a: datetime | None, b: datetime | None) -> bool:
    return a is None or b is None or a >= b
