"""The health-check job (``nexus_core.jobs.run_health_check`` in RQ)."""

from __future__ import annotations

from typing import Any

from nexus_core import runtime as rt
from nexus_core.sync.harness import installation_state, job_env


def run_health_check(provider: str, tenant_id: str, install_id: str) -> Any:
    """Check an installation (the provider's ``health_check`` hook, failures classified by
    :func:`nexus_core.health.check_health`), store the answer as its last check (shown by
    ``nexus installs list/show``; a change to unhealthy is logged once at WARNING); the result
    is the Health as JSON. Revoked credentials mark the installation ``needs_reauth``, as a
    failing sync would."""
    from nexus_core.converters import unstructure
    from nexus_core.errors import AuthError
    from nexus_core.health import check_health, record
    from nexus_core.models import Health

    with job_env(provider, tenant_id, install_id) as env:
        state = installation_state(env, provider, tenant_id, install_id)
        try:
            ctx = rt.build_context(env.store, env.registry, tenant_id, install_id,
                                   provider=provider, redis=env.redis, settings=env.settings,
                                   state=state, metadata={"kind": "health"})
        except AuthError as exc:  # the proactive refresh was refused: an answer, as in the CLI
            health = Health(healthy=False, auth_valid=False, error_count=1,
                            details={"error": exc.message, "needs_reauth": exc.needs_reauth})
        else:
            try:
                health = check_health(env.registry, ctx)
            finally:
                rt.close_context(ctx)
        record(env.store, provider, tenant_id, install_id, health)
        if health.details.get("needs_reauth"):
            from nexus_core import metrics

            # a refresh during the check may have marked it already (and counted it)
            if env.store.get_installation(tenant_id, install_id).status != "needs_reauth":
                metrics.NEEDS_REAUTH.labels(provider, "health").inc()
            env.store.set_status(tenant_id, install_id, "needs_reauth")
        return unstructure(health)
