"""A webhook delivery's path from the ingress to its job, in one place.

The ingress (:class:`nexus_core.webhooks.WebhookIngress`) verifies, routes and dedupes a
delivery; then the job for each installation is written here, its raw body in a field of the
job's own RQ hash (``queues.WEBHOOK_BODY_FIELD``) rather than in its JSON arguments, and the
job (``nexus_core.jobs.run_webhook`` in RQ) rebuilds the request from both and hands the
provider's events to the ``process_events`` sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from nexus_core import metrics, queues
from nexus_core import runtime as rt
from nexus_core.errors import NexusError, ProviderUnavailable, RateLimited
from nexus_core.sync.harness import defer, installation_state, job_env

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient


class Delivery(NamedTuple):
    """One job to write: a verified delivery for one installation."""

    tenant_id: str
    install_id: str
    #: The job id (one per delivery and installation) and the Redis key remembering that this
    #: delivery was enqueued for this installation (the ingress names both).
    job_id: str
    seen_key: str


def enqueue_deliveries(
    redis: RedisClient, queue: Any, provider: str, request: Any, deliveries: Sequence[Delivery], *,
    dedupe_ttl: int, retry: Any,
) -> tuple[list[str], list[str]]:
    """Enqueue the deliveries not seen before; returns (new job ids, job ids of replays).

    One round trip: per delivery, :func:`~nexus_core.sync.rq_adapter.enqueue_unless_marked`
    sets the dedupe mark and writes the RQ job atomically, or does nothing for a replay. A crash
    can therefore never leave a mark without its job (a delivery acknowledged but lost) nor a job
    without its mark.

    The raw body goes into each job's own Redis hash (``queues.WEBHOOK_BODY_FIELD``), not into
    its JSON arguments: RQ would base64-encode, JSON-encode and zlib-compress ~30 KB per delivery
    (most of the ingress's CPU). The field lives and expires with the job hash (RQ's saves only
    add fields), so a retried or requeued job still has its body."""
    if not deliveries:
        return [], []
    from rq import Callback
    from rq.job import JobStatus

    from nexus_core.converters import unstructure
    from nexus_core.sync.rq_adapter import enqueue_unless_marked

    meta = {"method": request.method, "url": request.url, "headers": request.headers,
            "received_at": unstructure(request.received_at)}
    body = {queues.WEBHOOK_BODY_FIELD: request.body}
    # One delivery (the common case): a plain EVALSHA. Several: one pipelined round trip
    # (redis-py checks the script is loaded first, one more).
    pipe = redis.pipeline(transaction=False) if len(deliveries) > 1 else None
    client = pipe if pipe is not None else redis
    fresh = []
    for d in deliveries:
        job = queue.create_job(
            queues.JOB_WEBHOOK,
            kwargs={"provider": provider, "tenant_id": d.tenant_id, "install_id": d.install_id,
                    "request": meta},
            job_id=d.job_id,
            description=f"webhook {provider} {d.tenant_id}/{d.install_id}",
            retry=retry,
            on_failure=Callback(queues.ON_FAILURE),
            status=JobStatus.QUEUED,
        )
        fresh.append(enqueue_unless_marked(client, queue, job, mark_key=d.seen_key,
                                           mark_ttl=dedupe_ttl, extra=body))
    if pipe is not None:
        with pipe:
            fresh = pipe.execute()
    jobs = [d.job_id for d, ok in zip(deliveries, fresh, strict=True) if ok]
    duplicates = [d.job_id for d, ok in zip(deliveries, fresh, strict=True) if not ok]
    return jobs, duplicates


def run_webhook(provider: str, tenant_id: str, install_id: str, request: dict[str, Any]) -> Any:
    """Normalize one verified delivery with the provider's ``handle_webhook`` and hand the
    events to ``process_events``. ``request`` is ``converters.unstructure(WebhookRequest)``;
    without ``body`` (the ingress's jobs), the raw body is read from the job's own hash."""
    from nexus_core.converters import structure
    from nexus_core.models import WebhookRequest

    if "body" not in request:
        request = {**request, "body": _stored_webhook_body(provider, tenant_id, install_id)}
    req = structure(request, WebhookRequest)
    with metrics.Operation(provider, "webhook", tenant_id) as op, \
            job_env(provider, tenant_id, install_id) as env:
        state = installation_state(env, provider, tenant_id, install_id)
        ctx = rt.build_context(env.store, env.registry, tenant_id, install_id, provider=provider,
                               redis=env.redis, settings=env.settings, state=state,
                               metadata={"kind": "webhook"})
        try:
            result = env.registry.hook("handle_webhook", provider)(ctx=ctx, request=req)
            events, records = _split(result)
            by_stream: dict[str, list[Any]] = {}
            for record in records:
                by_stream.setdefault(record.stream, []).append(record)
            for stream, page in by_stream.items():
                env.registry.pm.hook.process_records(ctx=ctx, stream=stream, records=page)
            if events:
                env.registry.pm.hook.process_events(ctx=ctx, events=events)
        except (RateLimited, ProviderUnavailable) as exc:
            op.outcome = "deferred"
            return defer(env, exc, "webhook")
        finally:
            rt.close_context(ctx)
        metrics.count_pages(provider, "webhook", tenant_id, 0, len(records))
        if events:
            metrics.WEBHOOK_EVENTS.labels(provider, metrics.tenant_label(tenant_id)).inc(
                len(events))
        out = {"events": len(events)}
        if records:
            out["records"] = len(records)
        return out


def _split(result: Any) -> tuple[list[Any], list[Any]]:
    """(events, records) of what ``handle_webhook`` returned: a list of events, a
    :class:`~nexus_core.models.WebhookResult`, or None."""
    from nexus_core.models import WebhookResult

    if result is None:
        return [], []
    if isinstance(result, WebhookResult):
        return list(result.events), list(result.records)
    return list(result), []


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
    HGETALL (:func:`~nexus_core.sync.rq_adapter.job_class_keeping`), else one HGET."""
    body = getattr(job, "extra_fields", {}).get(queues.WEBHOOK_BODY_FIELD)
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
