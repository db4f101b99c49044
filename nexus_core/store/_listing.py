"""Listing installations at scale: keyset pages, batched iteration and counts.

With 100,000 installations nothing may load them all at once: the scheduler iterates them in
batches (one short read transaction per batch, so no transaction or cursor stays open while it
works), ``nexus installs list`` shows a page at a time, and statistics count in SQL. Pages are
keyset-paginated on the primary key (tenant id, install id): each page is an index range scan
whatever its depth, and rows added or removed meanwhile never shift a page.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import sqlalchemy as sa

from nexus_core.models import Installation
from nexus_core.store import schema as t
from nexus_core.store._base import StoreBase, SyncState

_inst = t.installations.c


class InstallationKey(NamedTuple):
    """What the scheduler needs of an installation (cheaper than a whole
    :class:`~nexus_core.models.Installation`: no config decoded)."""

    tenant_id: str
    install_id: str
    provider: str


def _filtered(query: Any, *, after: tuple[str, str] | None, tenant_id: str | None,
              provider: str | None, status: str | None) -> Any:
    if tenant_id is not None:
        query = query.where(_inst.tenant_id == tenant_id)
    if provider is not None:
        query = query.where(_inst.provider == provider)
    if status is not None:
        query = query.where(_inst.status == status)
    if after is not None:
        query = query.where(sa.tuple_(_inst.tenant_id, _inst.install_id) >
                            sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
    return query.order_by(_inst.tenant_id, _inst.install_id)


class ListingMixin(StoreBase):
    """Keyset pages and batched iteration over installations (mixed into ``Store``)."""

    def page_installations(
        self, *, limit: int, after: tuple[str, str] | None = None,
        tenant_id: str | None = None, provider: str | None = None, status: str | None = None,
    ) -> list[Installation]:
        """Up to ``limit`` installations ordered by (tenant id, install id), starting after the
        installation ``after`` = (tenant id, install id). One tenant's with ``tenant_id``;
        every tenant's otherwise (operator and scheduler scope)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        query = _filtered(sa.select(t.installations), after=after, tenant_id=tenant_id,
                          provider=provider, status=status).limit(limit)
        with self._tx(readonly=True) as conn:
            rows = conn.execute(query).all()
        return [self._installation(r) for r in rows]

    def iter_installations(
        self, *, batch_size: int = 1000, tenant_id: str | None = None,
        provider: str | None = None, status: str | None = None,
    ) -> Iterator[Installation]:
        """Every matching installation, read ``batch_size`` at a time (see the module doc)."""
        after: tuple[str, str] | None = None
        while True:
            page = self.page_installations(limit=batch_size, after=after, tenant_id=tenant_id,
                                           provider=provider, status=status)
            yield from page
            if len(page) < batch_size:
                return
            after = (page[-1].tenant_id, page[-1].install_id)

    def iter_installation_keys(
        self, *, batch_size: int = 1000, provider: str | None = None, status: str | None = None,
    ) -> Iterator[list[InstallationKey]]:
        """Batches of (tenant id, install id, provider) of every tenant's matching
        installations, in key order: what the periodic-delta fan-out walks."""
        after: tuple[str, str] | None = None
        columns = sa.select(_inst.tenant_id, _inst.install_id, _inst.provider)
        while True:
            query = _filtered(columns, after=after, tenant_id=None, provider=provider,
                              status=status).limit(batch_size)
            with self._tx(readonly=True) as conn:
                batch = [InstallationKey(*row) for row in conn.execute(query)]
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            after = (batch[-1].tenant_id, batch[-1].install_id)

    def load_installation_state(
        self, tenant_id: str, install_id: str, *, credentials: bool = False
    ) -> SyncState:
        """The installation and (when ``credentials``) its credentials in one read transaction,
        as a :class:`SyncState` without checkpoints: what a webhook or health job needs."""
        with self._tx(readonly=True) as conn:
            inst = self._get(conn, tenant_id, install_id)
            creds = self._read_credentials(conn, tenant_id, install_id) if credentials else None
        return SyncState(installation=inst, credentials=creds, checkpoints={})

    def count_installations(self, *, tenant_id: str | None = None) -> dict[str, int]:
        """Installations by status (one tenant's, or every tenant's), counted in SQL."""
        query = sa.select(_inst.status, sa.func.count()).group_by(_inst.status)
        if tenant_id is not None:
            query = query.where(_inst.tenant_id == tenant_id)
        with self._tx(readonly=True) as conn:
            return {status: int(n) for status, n in conn.execute(query)}
