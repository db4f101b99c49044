"""The health-check job (``nexus_core.jobs.run_health_check`` in RQ)."""

from __future__ import annotations

from typing import Any

from nexus_core import runtime as rt
from nexus_core.sync.harness import installation_state, job_env


def run_health_check(provider: str, tenant_id: str, install_id: str) -> Any:
    """Check an installation (the provider's ``health_check`` hook, failures classified by
    :func:`nexus_core.health.check_health`); the result is the Health as JSON. Revoked
    credentials mark the installation ``needs_reauth``, as a failing sync would."""
    from nexus_core.converters import unstructure
    from nexus_core.health import check_health

    with job_env(provider, tenant_id, install_id) as env:
        state = installation_state(env, provider, tenant_id, install_id)
        ctx = rt.build_context(env.store, env.registry, tenant_id, install_id, provider=provider,
                               redis=env.redis, settings=env.settings, state=state,
                               metadata={"kind": "health"})
        try:
            health = check_health(env.registry, ctx)
        finally:
            rt.close_context(ctx)
        if health.details.get("needs_reauth"):
            from nexus_core import metrics

            # a refresh during the check may have marked it already (and counted it)
            if env.store.get_installation(tenant_id, install_id).status != "needs_reauth":
                metrics.NEEDS_REAUTH.labels(provider, "health").inc()
            env.store.set_status(tenant_id, install_id, "needs_reauth")
        return unstructure(health)
