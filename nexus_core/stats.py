"""Per-tenant sync statistics from the store's run history (``nexus stats --tenant``,
``IntegrationService.get_connector_stats(tenant_id=...)``)."""

from __future__ import annotations

import math
from typing import Any

#: Runs that ended: the denominator of the success rate and the population of the percentiles.
FINISHED = ("succeeded", "failed")


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _summary(runs: list[Any]) -> dict[str, Any]:
    finished = [r for r in runs if r.status in FINISHED and r.finished_at is not None]
    durations = [max(0.0, (r.finished_at - r.started_at).total_seconds()) for r in finished]
    succeeded = sum(r.status == "succeeded" for r in runs)
    failed = sum(r.status == "failed" for r in runs)
    errors = [r for r in runs if r.error]  # newest first, like the runs
    last = errors[0] if errors else None
    p50, p95 = percentile(durations, 50), percentile(durations, 95)
    return {
        "runs": len(runs),
        "succeeded": succeeded,
        "failed": failed,
        "running": sum(r.status == "running" for r in runs),
        "success_rate": round(succeeded / (succeeded + failed), 4) if succeeded + failed else None,
        "p50_seconds": round(p50, 3) if p50 is not None else None,
        "p95_seconds": round(p95, 3) if p95 is not None else None,
        "records": sum(r.records for r in runs),
        "pages": sum(r.pages for r in runs),
        "last_run_at": runs[0].started_at.isoformat() if runs else None,
        "last_error": None if last is None else {
            "error": last.error, "run_id": last.run_id, "status": last.status,
            "at": (last.finished_at or last.started_at).isoformat()},
    }


def tenant_stats(store: Any, tenant_id: str, *, limit: int = 1000) -> dict[str, Any]:
    """See :meth:`nexus_core.service.IntegrationService.get_tenant_stats`."""
    installations = store.list_installations(tenant_id)
    runs = store.list_runs(tenant_id=tenant_id, limit=limit)
    grouped: dict[tuple[str, str], list[Any]] = {}
    for run in runs:
        grouped.setdefault((run.install_id, run.kind), []).append(run)
    rows = []
    for inst in sorted(installations, key=lambda i: i.install_id):
        kinds = sorted({k for (i, k) in grouped if i == inst.install_id})
        rows.append({
            "install_id": inst.install_id, "provider": inst.provider, "status": inst.status,
            "operations": {k: _summary(grouped[(inst.install_id, k)]) for k in kinds},
        })
    return {
        "tenant_id": tenant_id,
        "installations": store.count_installations(tenant_id=tenant_id),
        "runs_considered": len(runs),
        "overall": _summary(runs),
        "by_installation": rows,
    }
