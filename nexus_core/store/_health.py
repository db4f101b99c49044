"""The last health check of each installation (``nexus health``, the scheduled checks).

One row per installation, replaced by every check: the store keeps the current answer, not a
history (the logs and metrics have that). :meth:`HealthMixin.record_health` returns the answer it
replaced, so the caller can tell a change (healthy → unhealthy) from a repeat.

These writes are not in ``_changes._WRITES``: a worker's copy of an installation
(:mod:`nexus_core.sync.installations`) holds no health, so a check need not make every worker
drop its copies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from nexus_core.models import Health
from nexus_core.store import schema as t
from nexus_core.store._base import StoreBase, _aware

_h = t.installation_health.c


def _health(row: Any) -> Health:
    return Health(
        healthy=bool(row.healthy), auth_valid=bool(row.auth_valid),
        api_accessible=bool(row.api_accessible), rate_limit_status=row.rate_limit_status,
        error_count=int(row.error_count), checked_at=_aware(row.checked_at),
        details=json.loads(row.details or "{}"),
    )


class HealthMixin(StoreBase):
    """Store and read installations' last health checks (mixed into ``Store``)."""

    def record_health(self, tenant_id: str, install_id: str, health: Health) -> Health | None:
        """Store ``health`` as the installation's last check; returns the check it replaced
        (None for the first). Raises NotFound for an unknown installation."""
        values = {
            "healthy": health.healthy, "auth_valid": health.auth_valid,
            "api_accessible": health.api_accessible,
            "rate_limit_status": health.rate_limit_status, "error_count": health.error_count,
            "checked_at": health.checked_at,
            "details": json.dumps(health.details, sort_keys=True, default=str),
        }
        where = self._where(t.installation_health, tenant_id, install_id)
        with self._tx() as conn:
            self._get(conn, tenant_id, install_id)
            row = conn.execute(sa.select(t.installation_health).where(where)).first()
            if row is None:
                conn.execute(sa.insert(t.installation_health).values(
                    tenant_id=tenant_id, install_id=install_id, **values))
                return None
            conn.execute(sa.update(t.installation_health).where(where).values(**values))
            return _health(row)

    def get_health(self, tenant_id: str, install_id: str) -> Health | None:
        """The installation's last health check, None if it was never checked."""
        where = self._where(t.installation_health, tenant_id, install_id)
        with self._tx(readonly=True) as conn:
            row = conn.execute(sa.select(t.installation_health).where(where)).first()
        return None if row is None else _health(row)

    def health_of(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Health]:
        """The last checks of the (tenant id, install id) pairs given (one page of a listing),
        in one read; pairs never checked are absent."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        query = sa.select(t.installation_health).where(
            sa.tuple_(_h.tenant_id, _h.install_id).in_(wanted))
        with self._tx(readonly=True) as conn:
            rows = conn.execute(query).all()
        return {(r.tenant_id, r.install_id): _health(r) for r in rows}
