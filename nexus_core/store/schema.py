"""The store's tables and its schema migrations.

Why a small migration table instead of Alembic: the schema is a few tables that must be created
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
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    #: Opaque, unguessable routing key of the per-installation webhook URL (v2).
    sa.Column("webhook_key", sa.String(64)),
    sa.Index("ix_nexus_installations_account", "provider", "account_id"),
    sa.Index("ux_nexus_installations_webhook_key", "webhook_key", unique=True),
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
    #: The installation config the flow was started with (JSON; NULL: keep the stored one) (v2).
    sa.Column("config", sa.Text),
    #: connect or reconnect (may bind another provider account) (v2).
    sa.Column("intent", sa.String(20)),
)

connect_links = sa.Table(
    "nexus_connect_links",
    metadata,
    #: sha256 of the link's token: the token is a bearer secret and is never stored.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("tenant_id", sa.String(200), nullable=False),
    sa.Column("install_id", sa.String(200), nullable=False),
    sa.Column("intent", sa.String(20), nullable=False),
    sa.Column("config", sa.Text),
    sa.Column("redirect_uri", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Index("ix_nexus_connect_links_expires", "expires_at"),
)

installation_health = sa.Table(
    "nexus_installation_health",
    metadata,
    #: The last health check of each installation (v3): one row, replaced by every check.
    sa.Column("tenant_id", sa.String(200), primary_key=True),
    sa.Column("install_id", sa.String(200), primary_key=True),
    sa.Column("healthy", sa.Boolean, nullable=False),
    sa.Column("auth_valid", sa.Boolean, nullable=False),
    sa.Column("api_accessible", sa.Boolean, nullable=False),
    sa.Column("rate_limit_status", sa.Text),
    sa.Column("error_count", sa.Integer, nullable=False),
    sa.Column("checked_at", TS, nullable=False),
    #: Health.details as JSON (the reason when unhealthy; never a secret).
    sa.Column("details", sa.Text, nullable=False),
)


def _v1(conn: sa.Connection) -> None:
    # The version-1 tables exactly as released: a step must not follow later edits of the
    # live table definitions above, or a fresh database and an upgraded one would differ.
    v1 = sa.MetaData()
    sa.Table("nexus_installations", v1,
             sa.Column("tenant_id", sa.String(200), primary_key=True),
             sa.Column("install_id", sa.String(200), primary_key=True),
             sa.Column("provider", sa.String(100), nullable=False),
             sa.Column("account_id", sa.String(200)),
             sa.Column("status", sa.String(20), nullable=False),
             sa.Column("config", sa.Text, nullable=False),
             sa.Column("created_at", TS, nullable=False),
             sa.Column("updated_at", TS, nullable=False),
             sa.Index("ix_nexus_installations_account", "provider", "account_id"))
    for table in (credentials, checkpoints, sync_runs):
        table.to_metadata(v1)
    sa.Table("nexus_oauth_states", v1,
             sa.Column("state_hash", sa.String(64), primary_key=True),
             sa.Column("tenant_id", sa.String(200), nullable=False),
             sa.Column("install_id", sa.String(200), nullable=False),
             sa.Column("provider", sa.String(100), nullable=False),
             sa.Column("redirect_uri", sa.Text, nullable=False),
             sa.Column("code_verifier", sa.Text),
             sa.Column("created_at", TS, nullable=False),
             sa.Column("expires_at", TS, nullable=False))
    v1.create_all(conn)


def new_webhook_key() -> str:
    """An opaque, unguessable routing key for an installation's webhook URL (192 bits)."""
    import secrets

    return secrets.token_urlsafe(24)


def _v2(conn: sa.Connection) -> None:
    """Webhook keys (filled in for existing installations), longer status values
    (pending_authorization), config and intent on OAuth states, connect links."""
    conn.execute(sa.text("ALTER TABLE nexus_installations ADD COLUMN webhook_key VARCHAR(64)"))
    rows = conn.execute(sa.text("SELECT tenant_id, install_id FROM nexus_installations")).all()
    update = sa.text("UPDATE nexus_installations SET webhook_key = :k "
                     "WHERE tenant_id = :t AND install_id = :i")
    for tenant_id, install_id in rows:
        conn.execute(update, {"k": new_webhook_key(), "t": tenant_id, "i": install_id})
    conn.execute(sa.text("CREATE UNIQUE INDEX ux_nexus_installations_webhook_key "
                         "ON nexus_installations (webhook_key)"))
    if conn.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        conn.execute(sa.text(
            "ALTER TABLE nexus_installations ALTER COLUMN status TYPE VARCHAR(32)"))
    conn.execute(sa.text("ALTER TABLE nexus_oauth_states ADD COLUMN config TEXT"))
    conn.execute(sa.text("ALTER TABLE nexus_oauth_states ADD COLUMN intent VARCHAR(20)"))
    metadata.create_all(conn, tables=[connect_links])


def _v3(conn: sa.Connection) -> None:
    """The last health check of each installation."""
    v3 = sa.MetaData()
    installation_health.to_metadata(v3).create(conn)


#: (version, description, step). Append only; never edit a released step.
MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "installations, credentials, checkpoints, sync runs, oauth states", _v1),
    (2, "webhook keys, pending_authorization, OAuth config/intent, connect links", _v2),
    (3, "the last health check of each installation", _v3),
]
LATEST_VERSION = MIGRATIONS[-1][0]
