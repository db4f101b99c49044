"""Health checks: the provider's ``health_check`` hook, turned into a :class:`Health` whatever
happens — an unreachable provider or a revoked grant is an answer, not an exception."""

from __future__ import annotations

from typing import Any

from loguru import logger

from nexus_core.errors import AuthError, ProviderError, ProviderUnavailable, RateLimited
from nexus_core.models import ConnectorContext, Health


def format_rate_limit(status: dict[str, Any] | None) -> str | None:
    """``{"remaining": 90, "max": 110}`` → ``"max=110 remaining=90"`` (the seed's string)."""
    if not status:
        return None
    return " ".join(f"{k}={v}" for k, v in sorted(status.items()))


def check_health(registry: Any, ctx: ConnectorContext) -> Health:
    """Run ``health_check`` for ``ctx``'s provider and classify failures.

    The plugin's answer wins; the core only fills ``rate_limit_status`` from the shared
    limiter's last reading of the provider's headers when the plugin leaves it empty.
    """
    hook = registry.hook("health_check", ctx.provider)
    error: dict[str, Any] = {}
    try:
        health = hook(ctx=ctx)
    except AuthError as exc:
        health = Health(healthy=False, auth_valid=False, api_accessible=True, error_count=1)
        error = {"error": exc.message, "needs_reauth": exc.needs_reauth}
    except RateLimited as exc:
        # Reachable and authorised, just busy: healthy, with the wait to report.
        health = Health(healthy=True, auth_valid=True, api_accessible=True)
        error = {"rate_limited_for": exc.retry_after, "rate_limited": exc.message}
    except (ProviderUnavailable, ProviderError) as exc:
        health = Health(healthy=False, api_accessible=False, error_count=1)
        error = {"error": exc.message}
    if health is None:
        health = Health(
            healthy=False,
            details={"error": f"provider {ctx.provider!r} implements no health_check hook"},
        )
    if error:
        # DEBUG: the WARNING is :func:`record`'s, once when an installation turns unhealthy.
        logger.debug("health check of {}/{} failed: {}", ctx.tenant_id, ctx.install_id, error)
        health = _with(health, details={**health.details, **error})
    if health.rate_limit_status is None and ctx.http is not None:
        reader = getattr(ctx.http, "rate_limit_status", None)
        status = format_rate_limit(reader()) if callable(reader) else None
        if status:
            health = _with(health, rate_limit_status=status)
    return health


def _with(health: Health, **changes: Any) -> Health:
    import attrs

    return attrs.evolve(health, **changes)


def reason(health: Health) -> str:
    """Why ``health`` is unhealthy, in one line an operator can act on."""
    error = health.details.get("error")
    if health.details.get("needs_reauth"):
        return f"{error or 'credentials rejected'} (needs reauthorization)"
    if error:
        return str(error)
    if not health.auth_valid:
        return "the provider did not accept its credentials"
    if not health.api_accessible:
        return "the provider's API could not be reached"
    return "the provider's health check reported it unhealthy"


def describe(health: Health | None) -> str:
    """``ok 2026-12-03 12:00:00`` / ``BAD 2026-12-03 12:00:00: <reason>`` / ``-`` (never
    checked): the HEALTH column of ``nexus installs list``."""
    if health is None:
        return "-"
    when = health.checked_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"ok {when}" if health.healthy else f"BAD {when}: {reason(health)}"


def record(store: Any, provider: str, tenant_id: str, install_id: str, health: Health) -> Health:
    """Store ``health`` as the installation's last check and log a change of state: WARNING
    (with the reason) when it turns unhealthy — once, not on every check while it stays so —
    and INFO when it is healthy again."""
    previous = store.record_health(tenant_id, install_id, health)
    was_healthy = previous is None or previous.healthy
    whose = f"{provider} installation {install_id} of tenant {tenant_id}"
    if was_healthy and not health.healthy:
        hint = (f"; the tenant must connect it again: `nexus auth link {provider} --tenant "
                f"{tenant_id} --install {install_id}`") if health.details.get("needs_reauth") \
            else ""
        logger.warning("{} is unhealthy: {}{}", whose, reason(health), hint)
    elif not was_healthy and health.healthy:
        logger.info("{} is healthy again", whose)
    return health
