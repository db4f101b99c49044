"""The store: installations, encrypted credentials, checkpoints, sync runs and OAuth states.

SQLAlchemy Core over an embedded SQLite file (the default, ``sqlite:///nexus.db``) or PostgreSQL
(``postgresql+psycopg://``). Every read and write of tenant data takes ``tenant_id`` and filters
on it: there is no call that returns another tenant's row. The two deliberate exceptions are named
for what they are: :meth:`Store.list_all_installations` (operator / scheduler scope) and
:meth:`Store.find_installations_by_account` (webhook routing by the provider's account id).

Each method is one transaction: a failure leaves nothing half-written, and an unreachable
database is a :class:`~nexus_core.errors.StoreError` saying which database and what to check.
A ``Store`` owns a connection pool: create one per process (never share one across ``fork``).
"""

from __future__ import annotations

from nexus_core.store._base import (
    CHECKPOINT_KINDS,
    INTENTS,
    RUN_STATUSES,
    Checkpoint,
    Conflict,
    ConnectLink,
    OAuthState,
    SyncRun,
    SyncState,
    state_hash,
)
from nexus_core.store._changes import ChangeFeedMixin
from nexus_core.store._credentials import CredentialsMixin
from nexus_core.store._health import HealthMixin
from nexus_core.store._listing import InstallationKey, ListingMixin
from nexus_core.store._sync import SyncMixin

__all__ = [
    "CHECKPOINT_KINDS",
    "RUN_STATUSES",
    "Checkpoint",
    "INTENTS",
    "Conflict",
    "ConnectLink",
    "InstallationKey",
    "OAuthState",
    "Store",
    "SyncRun",
    "SyncState",
    "state_hash",
]


class Store(ChangeFeedMixin, CredentialsMixin, SyncMixin, ListingMixin, HealthMixin):
    """The store. Build it with :meth:`from_url` or :meth:`from_settings`; see the module doc."""
