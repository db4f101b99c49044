"""Every use of RQ beyond its public API, in one place.

The rest of the engine talks to RQ through its public API (``Queue.enqueue_call``,
``create_job``, ``schedule_job``, ``enqueue_job``, registries, ``Retry``, ``RateLimit``,
``Worker(maintenance_interval=..., job_class=...)``). What RQ offers no public way to do is here,
each piece with a contract test in ``tests/contract/test_rq_contract.py`` that compares what we
do with what RQ itself does, so an RQ upgrade that changes any of it fails those tests (run
against the newest RQ release by ``tox -e contract-latest``):

1. :func:`enqueue_unless_marked` — the webhook ingress writes an RQ job with a Lua script
   (dedupe mark + job in one round trip, plus a raw field RQ does not know: the body). The job
   hash comes from RQ's own ``Job.to_dict`` after ``Queue._prepare_for_queue``; the script does
   what ``Queue._enqueue_async_job`` does with it (HSET, EXPIRE, RPUSH, SADD). Contract: the hash,
   the queue list and the queue registration equal those of ``enqueue_call`` for the same job.
2. :func:`job_class_keeping` — a ``Job`` subclass whose ``restore`` keeps extra fields of the
   hash the worker's dequeue already read with HGETALL (the body, without a second read).
   Contract: RQ builds dequeued jobs through ``restore(raw hash)``.
3. :func:`fail_abandoned` — a job whose worker died is failed the way RQ fails an abandoned job
   (``record_job_failure`` + ``release_slot``, as ``StartedJobRegistry.cleanup`` does), without
   RQ's retry bookkeeping (our recovery requeues it without consuming a retry). Contract: the
   job's status, registries, failure result and rate-limit slot equal RQ's cleanup's.
4. :class:`TracebackOncePerJob` — RQ's ``Worker.handle_exception`` logs the whole traceback at
   every failed attempt; ours logs it at a job's first failure, then one line per retry, and
   still runs the worker's exception handlers (``_exc_handlers``). Contract: a handler
   registered on the worker sees every attempt.

The hand-written Lua that reads a job's ``status`` field (``queues.CLAIM_ACTIVE_LUA``, the cron
fan-out's claim) depends on RQ's hash layout too; its contract test is in the same file.

Importing this module is cheap; RQ is imported by the functions that use it.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

#: Writes one RQ job unless the dedupe mark exists, in one atomic step (RQ's own
#: ``UNIQUE_ENQUEUE_SCRIPT`` does the same HSET/EXPIRE/RPUSH keyed on the job hash; this one is
#: keyed on a mark that outlives the job). The mark is written last: Redis does not roll a script
#: back, so a failing write (a key of the wrong type) leaves no mark and a retry enqueues.
#: KEYS: mark, job hash, queue list, RQ's set of queues.
#: ARGV: job id, mark TTL, job TTL (-1: none), then field/value pairs (extra fields first).
ENQUEUE_UNLESS_MARKED_LUA = """
if redis.call("EXISTS", KEYS[1]) == 1 then
    return 0
end
redis.call("HSET", KEYS[2], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl and ttl > 0 then
    redis.call("EXPIRE", KEYS[2], ttl)
end
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("SADD", KEYS[4], KEYS[3])
redis.call("SET", KEYS[1], "done", "EX", ARGV[2])
return 1
"""

_script: Any = None


def _enqueue_script() -> Any:
    global _script
    if _script is None:
        from nexus_core.queues import lua_script

        _script = lua_script(ENQUEUE_UNLESS_MARKED_LUA)  # EVALSHA, per client
    return _script


def job_hash(queue: Any, job: Any) -> dict[str, Any]:
    """The hash RQ saves for ``job`` when ``queue`` enqueues it (``Queue._prepare_for_queue``
    sets origin, enqueued_at, the default timeout and the queued status; ``Job.to_dict`` is what
    ``Job.save`` writes; RQ leaves out None values)."""
    queue._prepare_for_queue(job)
    return {k: v for k, v in job.to_dict().items() if v is not None}


def enqueue_unless_marked(
    client: Any, queue: Any, job: Any, *, mark_key: str, mark_ttl: int,
    extra: dict[str, bytes | str] | None = None,
) -> Any:
    """Enqueue ``job`` on ``queue`` unless ``mark_key`` exists, setting the mark for
    ``mark_ttl`` seconds, atomically; ``extra`` fields are written into the job's hash too.
    Returns 1 (enqueued) or 0 (marked already) — or, on a pipeline ``client``, nothing until
    the pipeline executes."""
    pairs: list[Any] = []
    for name, value in (extra or {}).items():
        pairs += (name, value)
    for name, value in job_hash(queue, job).items():
        pairs += (name, value if isinstance(value, bytes | str) else str(value))
    return _enqueue_script()(
        keys=[mark_key, job.key, queue.key, queue.redis_queues_keys],
        args=[job.id, int(mark_ttl), job.ttl if job.ttl else -1, *pairs],
        client=client,
    )


_job_classes: dict[tuple[str, ...], type] = {}


def job_class_keeping(*fields: str) -> type:
    """RQ's ``Job`` that keeps ``fields`` of the raw hash in ``job.extra_fields`` (bytes, or
    absent) when RQ restores a job from Redis — the dequeue's HGETALL, so no second read."""
    key = tuple(sorted(fields))
    cls = _job_classes.get(key)
    if cls is None:
        from rq.job import Job

        raw_names = tuple(f.encode() for f in key)

        class NexusJob(Job):
            extra_fields: dict[str, bytes]

            def restore(self, raw_data: Any) -> Any:
                out = super().restore(raw_data)
                self.extra_fields = {
                    name.decode(): value for name in raw_names
                    if isinstance(value := raw_data.get(name), bytes)
                }
                return out

        NexusJob.__module__ = __name__
        cls = _job_classes[key] = NexusJob
    return cls


def fail_abandoned(job: Any, reason: str, pipeline: Any) -> None:
    """Record ``job`` (status STARTED, its worker gone) as failed with ``reason``: status,
    FailedJobRegistry and failure result, as RQ's ``StartedJobRegistry.cleanup`` does for a job
    without retries left. Call :func:`release_rate_limit_slot` after the pipeline executed."""
    from rq.job_lifecycle import record_job_failure

    record_job_failure(job, reason, pipeline)


#: Lua: put a job taken off its queue but never started back at the front of the queue, unless
#: it started, ended or is queued again meanwhile. KEYS: job hash, queue list, intermediate
#: list, started registry, first-seen marker; ARGV: job id, registry member or "".
REQUEUE_UNSTARTED_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then return 0 end
redis.call('LREM', KEYS[3], 0, ARGV[1])
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[4], ARGV[2]) end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[5])
return 1
"""


def requeue_unstarted(connection: Any, queue: Any, job_id: str, member: str | None,
                      marker: str) -> bool:
    """Atomically move ``job_id`` (status ``queued``, taken off ``queue`` by a worker that
    never started it) from RQ's intermediate list and StartedJobRegistry (``member``:
    ``<job id>:<execution id>``) back to the front of the queue, as ``enqueue(at_front=True)``
    leaves a queued job; False if it started, ended or is queued already."""
    global _requeue_unstarted
    if _requeue_unstarted is None:
        from nexus_core.queues import lua_script

        _requeue_unstarted = lua_script(REQUEUE_UNSTARTED_LUA)
    keys = [queue.job_class.key_for(job_id), queue.key, queue.intermediate_queue_key,
            queue.started_job_registry.key, marker]
    return bool(_requeue_unstarted(keys=keys, args=[job_id, member or ""], client=connection))


_requeue_unstarted: Any = None


def release_rate_limit_slot(job: Any) -> list[str]:
    """Free ``job``'s RQ ``RateLimit`` slot (if it has one and its cached status is final) and
    promote the next waiting jobs, as RQ does after a job ends; returns the promoted ids."""
    from rq.rate_limit import release_slot

    return release_slot(job)


#: ``job.meta`` key counting a job's failed attempts (across workers and work-horses).
FAILURES_META = "nexus_failures"


class TracebackOncePerJob:
    """Worker mixin: the traceback of a failing job is logged at its first failure only; every
    later attempt (a retry, on any worker) is one line. The count lives in the job's meta."""

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        count = 0
        try:
            count = int((job.meta or {}).get(FAILURES_META, 0)) + 1
            job.meta[FAILURES_META] = count
            job.save_meta()
        except Exception as exc:  # bookkeeping only: never hide the job's own failure
            logger.debug("could not count the failures of job {}: {}", job.id, exc)
        if count <= 1:
            super().handle_exception(job, *exc_info)  # type: ignore[misc]
            return
        exc_type, exc_value = exc_info[0], exc_info[1]
        name = getattr(exc_type, "__name__", str(exc_type))
        logger.error("job {} failed again, attempt {} ({}: {}); {}; traceback logged at its "
                     "first failure", job.id, count, name, exc_value, _retries(job))
        from rq.job_lifecycle import call_exception_handlers

        call_exception_handlers(self._exc_handlers, job, *exc_info)  # type: ignore[attr-defined]


def _retries(job: Any) -> str:
    left = job.retries_left
    if not left:
        return "no retries left"
    return f"{left} retr{'y' if left == 1 else 'ies'} left"
