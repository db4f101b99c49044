"""The store's tables and its schema migrations.

Why a small migration table instead of Alembic: the schema is five tables that must be created
and upgraded by the application itself (``Store.migrate()``, run on startup) on both an embedded
SQLite file and PostgreSQL, with no ini file or ``env.py`` to ship. A list of numbered steps in a
``nexus_schema_version`` table, applied under a lock in one transaction, gives the same
guarantees (ordered, idempotent, refuses a database newer than the code) in ~60 lines that the
tests exercise directly.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)

schema_version = sa.Table(
    "nexus_schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

installations = sa.Table(
    "nexus_installations",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("install_id", sa.String(200), primary_key=True),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("account_id", sa.String(200)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("ix_nexus_installations_account", "provider", "account_id"),
)

credentials = sa.Table(
    "nexus_credentials",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("install_id", sa.String(200), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),
    #: nx1.<key id>.<AES-GCM sealed JSON>, bound to tenant_id+install_id.
    sa.Column("ciphertext", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

checkpoints = sa.Table(
    "nexus_checkpoints",
    metadata,
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("install_id", sa.String(200), primary_key=True),
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

sync_runs = sa.Table(
    "nexus_sync_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("install_id", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("stream", sa.String(200)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("job_id", sa.String(300)),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("pages", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ix_nexus_sync_runs_install", "tenant_id", "install_id", "started_at"),
    sa.Index("ix_nexus_sync_runs_started", "started_at"),
)

oauth_states = sa.Table(
    "nexus_oauth_states",
    metadata,
    #: sha256 of the state: the state itself is a bearer secret and is never stored.
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("install_id", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    #: PKCE verifier, encrypted and bound to tenant+install like credentials.
    sa.Column("code_verifier", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
)


def _v1(conn: sa.Connection) -> None:
    metadata.create_all(
        conn, tables=[installations, credentials, checkpoints, sync_runs, oauth_states]
    )


#: (version, description, step). Append only; never edit a released step.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "installations, credentials, checkpoints, sync runs, oauth states", _v1),
]
LATEST_VERSION = MIGRATIONS[-1][0]
