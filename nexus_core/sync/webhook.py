"""A webhook delivery's path from the ingress to its job, in one place.

The ingress (:class:`nexus_core.webhooks.WebhookIngress`) verifies, routes and dedupes a
delivery; then the job for each installation is written here, its raw body in a field of the
job's own RQ hash (``queues.WEBHOOK_BODY_FIELD``) rather than in its JSON arguments, and the
job (``nexus_core.jobs.run_webhook`` in RQ) rebuilds the request from both and hands the
provider's events to the ``process_events`` sinks.
"""

from __future__ import annotations

from typing import Any

from nexus_core import queues
from nexus_core import runtime as rt
from nexus_core.errors import NexusError, ProviderUnavailable, RateLimited
from nexus_core.sync.harness import defer, job_env


def run_webhook(provider: str, tenant_id: str, install_id: str, request: dict[str, Any]) -> Any:
    """Normalize one verified delivery with the provider's ``handle_webhook`` and hand the
    events to ``process_events``. ``request`` is ``converters.unstructure(WebhookRequest)``;
    without ``body`` (the ingress's jobs), the raw body is read from the job's own hash."""
    from nexus_core.converters import structure
    from nexus_core.models import WebhookRequest

    if "body" not in request:
        request = {**request, "body": _stored_webhook_body(provider, tenant_id, install_id)}
    req = structure(request, WebhookRequest)
    with job_env(provider, tenant_id, install_id) as env:
        ctx = rt.build_context(env.store, env.registry, tenant_id, install_id, provider=provider,
                               redis=env.redis, settings=env.settings,
                               metadata={"kind": "webhook"})
        try:
            events = env.registry.hook("handle_webhook", provider)(ctx=ctx, request=req) or []
            if events:
                env.registry.pm.hook.process_events(ctx=ctx, events=list(events))
        except (RateLimited, ProviderUnavailable) as exc:
            return defer(env, exc)
        finally:
            rt.close_context(ctx)
        return {"events": len(events)}


def webhook_request_of(job: Any) -> Any:
    """The :class:`~nexus_core.models.WebhookRequest` an RQ webhook job carries: its JSON
    arguments plus the raw body kept in the job's hash (``queues.WEBHOOK_BODY_FIELD``)."""
    from nexus_core.converters import structure
    from nexus_core.models import WebhookRequest

    request = job.kwargs["request"]
    if "body" not in request:
        request = {**request, "body": _hash_body(job) or b""}
    return structure(request, WebhookRequest)


def _hash_body(job: Any) -> bytes | None:
    """The body field of ``job``'s hash: kept by a nexus worker's job class from the dequeue's
    HGETALL, else one HGET."""
    body = getattr(job, "webhook_body", None)
    if body is None:
        body = job.connection.hget(job.key, queues.WEBHOOK_BODY_FIELD)
    return body


def _stored_webhook_body(provider: str, tenant_id: str, install_id: str) -> bytes:
    from rq import get_current_job

    job = get_current_job()
    body = _hash_body(job) if job is not None else None
    if body is None:
        where = f"job {job.id}" if job is not None else "a call outside an RQ job"
        raise NexusError(
            f"webhook {provider} {tenant_id}/{install_id}: {where} has no delivery body (field "
            f"{queues.WEBHOOK_BODY_FIELD!r} of its RQ hash); it cannot be processed — the "
            "provider's own retry or redelivery is the way to get it again"
        )
    return body
