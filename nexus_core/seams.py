"""Typed seams where modules meet: the Redis client and the store, as the sync engine, the
webhook path and the runtime use them.

Import these names under ``if TYPE_CHECKING:`` only. The modules that cross these seams import
neither redis nor SQLAlchemy at module level (CLI start-up, forked job children), so they used
to say ``Any``; with the aliases below mypy checks every call across the seam instead.

``SyncStore`` is the narrow part of :class:`nexus_core.store.Store` the engine depends on: a
different backend (or a test's store over another database) implements these methods and
nothing else. ``_store_is_a_sync_store`` makes mypy prove that ``Store`` satisfies it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    import redis

    from nexus_core.models import Credentials, Installation
    from nexus_core.store import Store
    from nexus_core.store._base import Checkpoint, SyncRun, SyncState

#: A redis-py client (a plain ``Redis`` or a Sentinel-managed master: same class).
RedisClient: TypeAlias = "redis.Redis"


class SyncStore(Protocol):
    """What sync jobs, webhook routing and connector contexts read and write in the store.
    Every method is scoped by tenant."""

    #: The database URL without its password (names the store in caches and messages).
    url: str

    def get_installation(self, tenant_id: str, install_id: str) -> Installation: ...

    def get_credentials(self, tenant_id: str, install_id: str) -> Credentials | None: ...

    def save_credentials(
        self, tenant_id: str, install_id: str, credentials: Credentials
    ) -> None: ...

    def set_status(self, tenant_id: str, install_id: str, status: str) -> Installation: ...

    def load_installation_state(
        self, tenant_id: str, install_id: str, *, credentials: bool = False
    ) -> SyncState: ...

    def load_sync_state(
        self, tenant_id: str, install_id: str, kind: str, *, credentials: bool = False
    ) -> SyncState: ...

    def get_checkpoint(
        self, tenant_id: str, install_id: str, stream: str, kind: str
    ) -> Checkpoint: ...

    def reset_checkpoint(self, tenant_id: str, install_id: str, stream: str, kind: str) -> None: ...

    def commit_page(
        self, tenant_id: str, install_id: str, stream: str, kind: str, cursor: str | None, *,
        seq: int, run_id: str | None = None, records: int = 0,
    ) -> bool: ...

    def page_committer(
        self, tenant_id: str, install_id: str, stream: str, kind: str
    ) -> AbstractContextManager[Callable[..., bool]]: ...

    def start_run(
        self, tenant_id: str, install_id: str, kind: str, stream: str | None, *,
        job_id: str | None = None, run_id: str | None = None,
    ) -> str: ...

    def finish_run(
        self, tenant_id: str, run_id: str, status: str, error: str | None = None
    ) -> SyncRun: ...

    def get_run(self, tenant_id: str, run_id: str) -> SyncRun: ...

    def find_installations_by_account(
        self, provider: str, account_id: str
    ) -> list[Installation]: ...

    def find_installation_by_webhook_key(
        self, provider: str, key: str
    ) -> Installation | None: ...


def _store_is_a_sync_store(store: Store) -> SyncStore:  # pragma: no cover - checked by mypy
    return store


__all__ = ["RedisClient", "SyncStore"]
