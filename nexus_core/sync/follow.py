"""Following a sync as it happens: a Redis stream of its progress, read with a blocking XREAD.

Every job of a sync (its chunks, continuations and retries) appends its progress to one stream,
``nexus:progress:<first job id>`` (the key travels in the jobs' meta, ``nexus_follow``):
committed pages and records so far (at most every ``PROGRESS_EVERY`` seconds), a continuation,
a retry or reschedule, and the end (``done``: succeeded, failed, cancelled). A follower
(``nexus sync ... --wait``) blocks on the stream and is woken by each event — no polling, and
nothing missed: a stream keeps what was written before the follower arrived. The stream
expires a day after its last event.

This module imports neither RQ nor SQLAlchemy at import time: the CLI follows a sync with Redis
alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient

PREFIX = "nexus:progress:"
#: Seconds between two progress events of one job (the end is always sent at once).
PROGRESS_EVERY = 0.25
TTL = 24 * 3600
MAXLEN = 200
#: Job meta: the stream key, and the totals of the chunks before this one.
META_KEY = "nexus_follow"
META_PAGES = "nexus_pages"
META_RECORDS = "nexus_records"
#: When the sync's first chunk started (epoch seconds): followers compute its rate from it.
META_STARTED = "nexus_started"


def key_of(job: Any) -> str:
    """The progress stream of the sync ``job`` belongs to."""
    return PREFIX + str((job.meta or {}).get(META_KEY) or job.id)


def publish(redis: RedisClient, key: str, event: dict[str, Any]) -> None:
    """Append ``event`` to stream ``key``; never fails the job (progress is a courtesy)."""
    try:
        with redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"e": json.dumps(event, separators=(",", ":"))}, maxlen=MAXLEN,
                      approximate=True)
            pipe.expire(key, TTL)
            pipe.execute()
    except Exception as exc:
        logger.debug("progress of {} not published: {}", key, exc)


class Reporter:
    """What a sync job tells its followers (one per job; ``None`` outside an RQ job)."""

    def __init__(
        self, redis: RedisClient, job: Any, clock: Callable[[], float] = time.monotonic
    ) -> None:
        meta = job.meta or {}
        self.redis = redis
        self.job_id = job.id
        self.key = key_of(job)
        self.base_pages = int(meta.get(META_PAGES, 0))
        self.base_records = int(meta.get(META_RECORDS, 0))
        started = meta.get(META_STARTED)
        self.started = float(started) if isinstance(started, int | float) else time.time()
        self._clock = clock
        self._last = clock()

    def totals(self, pages: int, records: int) -> dict[str, Any]:
        """The sync's pages and records so far, with how long it has taken (``seconds``)."""
        return {"pages": self.base_pages + pages, "records": self.base_records + records,
                "seconds": round(time.time() - self.started, 3)}

    def progress(self, pages: int, records: int) -> None:
        now = self._clock()
        if now - self._last >= PROGRESS_EVERY:
            self._last = now
            publish(self.redis, self.key, {"type": "progress", "job_id": self.job_id,
                                           **self.totals(pages, records)})

    def continued(self, pages: int, records: int, next_job_id: str) -> dict[str, Any]:
        """Publish the continuation; returns the meta the next chunk carries."""
        totals = self.totals(pages, records)
        publish(self.redis, self.key, {"type": "continued", "job_id": self.job_id,
                                       "next_job_id": next_job_id, **totals})
        return {META_KEY: self.key.removeprefix(PREFIX), META_PAGES: totals["pages"],
                META_RECORDS: totals["records"], META_STARTED: self.started}

    def done(self, status: str, pages: int, records: int, *, run_id: str | None = None,
             error: str | None = None, release: str | None = None) -> None:
        """The end; with ``release`` (an active-sync marker key, ``queues.active_key``), also
        clear the marker if it still names this job — in the same round trip."""
        event = {"type": "done", "job_id": self.job_id, "status": status, "run_id": run_id,
                 "error": error, **self.totals(pages, records)}
        if release is None:
            publish(self.redis, self.key, event)
            return
        try:
            _end_script()(keys=[release, self.key],
                          args=[self.job_id, json.dumps(event, separators=(",", ":")), MAXLEN,
                                TTL], client=self.redis)
        except Exception as exc:  # the marker names a finished job: inactive all the same
            logger.debug("end of {} not published: {}", self.job_id, exc)


#: A sync job's end in one round trip: clear its active-sync marker if it still names this job
#: (as ``queues.HANDOVER_ACTIVE_LUA`` to nobody) and append the ``done`` event.
#: KEYS: marker, stream. ARGV: job id, event JSON, stream max length, stream TTL.
END_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

_end: Any = None


def _end_script() -> Any:
    global _end
    if _end is None:
        from nexus_core.queues import lua_script

        _end = lua_script(END_LUA)
    return _end


def job_failed(redis: RedisClient, job: Any, *, final: bool, error: str,
               run_id: str | None) -> None:
    """From the failure policy: a retry follows (``final`` False) or the job is dead-lettered."""
    meta = job.meta or {}
    totals = {"pages": int(meta.get(META_PAGES, 0)), "records": int(meta.get(META_RECORDS, 0))}
    event = {"type": "done" if final else "retrying", "job_id": job.id, "error": error,
             **({"status": "failed", "run_id": run_id} if final else {}), **totals}
    publish(redis, key_of(job), event)


def events(
    redis: RedisClient, key: str, *, block_ms: int = 2000
) -> Iterator[dict[str, Any] | None]:
    """The stream's events from its start, as they come; ``None`` after ``block_ms`` without
    one (the caller may check that the job still exists)."""
    last = "0-0"
    while True:
        answer: Any = redis.xread({key: last}, block=block_ms, count=100)
        if not answer:
            yield None
            continue
        for entry_id, fields in answer[0][1]:
            last = entry_id
            raw = fields.get(b"e") or fields.get("e")
            if raw is not None:
                yield json.loads(raw)
