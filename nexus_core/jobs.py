"""RQ job functions: backfill, delta, webhook and health (the enqueue side is
:mod:`nexus_core.sync`).

Every job is a module-level function taking plain ids (JSON serializer, never pickle). A sync job
works page by page: ``backfill``/``delta`` hook → ``process_records`` sinks → *then* the cursor is
committed with a compare-and-set on the page sequence (:meth:`Store.commit_page`). A crash loses at
most the page in flight (delivered again on resume); a stale commit means another runner owns the
sync and this one stops. After NEXUS_BACKFILL_TIME_BUDGET seconds — or on SIGTERM — a job commits
its page, enqueues its continuation and returns, so long backfills interleave with other work.

Failure policy (see :func:`on_job_failure`): retries with RQ's ``Retry`` (exponential backoff with
jitter); ``RateLimited``/``ProviderUnavailable`` return a ``Retry`` for ``retry_after`` instead
(RQ counts those separately, so no retry is consumed); auth and other permanent errors fail fast
into the FailedJobRegistry, which is the dead-letter queue.
"""

from __future__ import annotations

import contextvars
import math
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from nexus_core import queues
from nexus_core import runtime as rt
from nexus_core.errors import (
    AuthError,
    ConfigError,
    NexusError,
    NotFound,
    PluginError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
)
from nexus_core.models import ConnectorContext, SyncPage
from nexus_core.sync import BACKFILL_DONE, SyncOptions, enqueue_sync, sync_streams

if TYPE_CHECKING:
    from nexus_core.store import Checkpoint

_stop = threading.Event()


class StaleCheckpoint(NexusError):
    """Another runner committed this page first: it owns the sync, this job stops."""


# -- the job harness -------------------------------------------------------------------------


class _Lease:
    """``nexus:lease:<job id>`` kept alive by a thread while the job runs. When the process
    dies the key expires within NEXUS_JOB_LEASE_TTL and the next worker requeues the job
    (nexus_core.worker.recover_abandoned) — RQ alone would notice only after its heartbeat TTL
    (+60 s hard-coded) and its 10-minute maintenance interval."""

    def __init__(self, connection: Any, job_id: str, ttl: float) -> None:
        self.connection = connection
        self.key = queues.lease_key(job_id)
        self.ttl_ms = int(ttl * 1000)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nexus-lease", daemon=True)

    def _beat(self) -> None:
        try:
            self.connection.set(self.key, b"1", px=self.ttl_ms)
        except Exception as exc:  # Redis down: the job fails or finishes on its own
            logger.debug("lease heartbeat failed: {}", exc)

    def _run(self) -> None:
        while not self._done.wait(self.ttl_ms / 3000):
            self._beat()

    def __enter__(self) -> _Lease:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)
        try:
            self.connection.delete(self.key)
        except Exception as e:  # expires anyway
            logger.debug("lease release failed: {}", e)


@contextmanager
def _sigterm_finishes_page() -> Iterator[None]:
    """SIGTERM during a job asks it to finish its page, commit and leave a continuation.
    In a forked work-horse the previous handler is SIG_DFL; in-process (SimpleWorker) it is the
    worker's warm-shutdown handler, which is chained."""
    _stop.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        _stop.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def request_stop() -> None:
    """Ask the running sync job (this process) to stop after its current page."""
    _stop.set()


class _ProcessStore:
    """The process's store (:func:`nexus_core.runtime.get_store`), fetched at its first use: a
    work-horse whose job reads nothing from the store (an empty delta with a preloaded state)
    never sets up a connection pool of its own."""

    def __init__(self, settings: Any) -> None:
        self._settings = settings

    def __getattr__(self, name: str) -> Any:
        return getattr(rt.get_store(self._settings), name)


#: (job id, SyncState) read by the worker just before it forked this job's work-horse.
_preloaded: tuple[str, Any] | None = None


def preload(job: Any) -> None:
    """Called by the worker for the job it is about to fork a work-horse for: read the job's
    first store reads (installation, credentials, checkpoints — one transaction) on the
    worker's warm connection, so the horse inherits them instead of opening a database
    connection of its own. Anything unexpected: nothing is preloaded and the job reads (and
    reports) it itself."""
    global _preloaded
    _preloaded = None
    try:
        kind = _KINDS.get(job.func_name)
        if kind is None:
            return
        from nexus_core.plugins import load_plugins

        kw = job.kwargs
        prov = load_plugins().provider(kw["provider"])
        state = rt.get_store().load_sync_state(kw["tenant_id"], kw["install_id"], kind,
                                               credentials=rt.reads_credentials(prov))
    except Exception as exc:
        logger.debug("no preload for job {}: {}", job.id, exc)
        return
    _preloaded = (job.id, state)


def forget_preload() -> None:
    """The worker's side, once the horse is forked: credentials stay in the horse only."""
    global _preloaded
    _preloaded = None


def _take_preloaded(job: Any) -> Any:
    global _preloaded
    found, _preloaded = _preloaded, None
    if found is None or job is None or found[0] != job.id:
        return None
    return found[1]


_KINDS = {queues.JOB_BACKFILL: "backfill", queues.JOB_DELTA: "delta"}


@attrs.define
class _Env:
    settings: Any
    opts: SyncOptions
    registry: Any
    store: Any
    redis: Any
    job: Any


@contextmanager
def _job_env(provider: str, tenant_id: str, install_id: str) -> Iterator[_Env]:
    from rq import get_current_job

    from nexus_core.plugins import load_plugins

    settings = rt.get_settings()
    opts = SyncOptions.from_settings(settings)
    job = get_current_job()
    redis = job.connection if job is not None else rt.get_redis(settings)
    env = _Env(settings, opts, load_plugins(), _ProcessStore(settings), redis, job)
    with logger.contextualize(provider=provider, tenant_id=tenant_id, install_id=install_id):
        if job is None:
            yield env
            return
        with _Lease(redis, job.id, opts.lease_ttl), _sigterm_finishes_page():
            yield env


def _defer(env: _Env, exc: RateLimited | ProviderUnavailable) -> Any:
    """Reschedule the job after ``retry_after`` by returning RQ's ``Retry``: RQ counts those in
    ``number_of_retries``, not in the ``retries_left`` of the failure policy."""
    from rq import Retry

    done = (env.job.number_of_retries or 0) if env.job is not None else 0
    if env.job is None or done >= env.opts.max_deferrals:
        raise ProviderError(
            f"deferred {done} times ({type(exc).__name__}: {exc.message}); giving up",
            retryable=False, provider=exc.provider, tenant_id=exc.tenant_id,
            install_id=exc.install_id,
        ) from exc
    delay = max(1, math.ceil(exc.retry_after))
    logger.info("{}: rescheduled in {} s (not counted as a retry)", type(exc).__name__, delay)
    return Retry(max=env.opts.max_deferrals, interval=delay)


# -- sync ----------------------------------------------------------------------------------


@attrs.define
class _Progress:
    pages: int = 0
    records: int = 0
    streams_done: list[str] = attrs.Factory(list)
    skipped: list[str] = attrs.Factory(list)


def _ensure_run(env: _Env, kind: str, tenant_id: str, install_id: str, stream: str | None,
                run_id: str | None) -> str:
    job = env.job
    if run_id is None and job is not None:
        run_id = job.meta.get("nexus_run_id")
    if run_id is None:
        run_id = env.store.start_run(tenant_id, install_id, kind, stream,
                                     job_id=job.id if job is not None else None)
        if job is not None:
            job.meta["nexus_run_id"] = run_id
            job.save_meta()
    else:
        run = env.store.get_run(tenant_id, run_id)
        if run.status != "running":  # requeued from the dead-letter queue
            env.store.finish_run(tenant_id, run_id, "running")
    return run_id


class _ReadAhead:
    """Reads a stream's next pages in one thread while the job delivers and commits the current
    one. Each fetch starts as soon as the previous page is in (the thread never waits for the
    job to ask), and at most one fetched page waits to be taken: memory stays at ~3 pages.

    Pages are handed over in order; a page that is never taken (the job stopped, failed or ran
    out of budget) is dropped — it was not committed, so it is simply fetched again later."""

    def __init__(self, fetch: Callable[[str | None], SyncPage | None], cursor: str | None,
                 deadline: float) -> None:
        self._queue: queue.Queue[tuple[SyncPage | None, BaseException | None]] = \
            queue.Queue(maxsize=1)
        self._halt = threading.Event()
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run, fetch, cursor, deadline),
            name="nexus-prefetch", daemon=True)
        self._thread.start()

    def _run(self, fetch: Callable[[str | None], SyncPage | None], cursor: str | None,
             deadline: float) -> None:
        while not self._halt.is_set():
            item: tuple[SyncPage | None, BaseException | None]
            try:
                item = (fetch(cursor), None)
            except BaseException as exc:  # handed to the job, raised there
                item = (None, exc)
            while not self._halt.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            page, error = item
            # The same conditions as the job's: it takes no page after this one.
            if (error is not None or page is None or page.done or page.next_cursor == cursor
                    or _stop.is_set() or time.monotonic() >= deadline):
                return
            cursor = page.next_cursor

    def next(self) -> SyncPage | None:
        while True:
            try:
                page, error = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._thread.is_alive() or not self._queue.empty():
                    continue
                raise RuntimeError("the prefetch thread ended without a page") from None
            if error is not None:
                raise error
            return page

    def close(self) -> None:
        self._halt.set()
        with suppress(queue.Empty):
            self._queue.get_nowait()  # unblocks a put in progress
        self._thread.join()


def _sync_stream(
    env: _Env, ctx: ConnectorContext, kind: str, stream: str, deadline: float,
    progress: _Progress, run: Callable[[], str],
    read_ahead: Callable[[Callable[[str | None], SyncPage | None], str | None], _ReadAhead],
    cp: Checkpoint | None = None,
) -> bool:
    """Sync one stream until done (True) or out of budget / asked to stop (False).

    From the second page on, pages are fetched ahead (:class:`_ReadAhead`) while this page goes
    to the sinks and its cursor is committed: network and database waits overlap, the order of
    sink calls and commits does not change, and a crash loses nothing (a fetched page that was
    not delivered is simply fetched again). ``cp`` is the stream's checkpoint when the caller
    has just read it."""
    t, i = ctx.tenant_id, ctx.install_id
    if cp is None:
        cp = env.store.get_checkpoint(t, i, stream, kind)
    if kind == "backfill" and cp.cursor == BACKFILL_DONE:
        return True
    if kind == "delta" and cp.seq == 0:
        ctx.log.info("delta of stream {} skipped: no backfill has completed yet", stream)
        progress.skipped.append(stream)
        return True
    if kind == "backfill":
        run()  # a backfill is a run from its first page on
    hook = env.registry.hook(kind, ctx.provider)
    sinks = env.registry.pm.hook.process_records

    def fetch(at: str | None) -> SyncPage | None:
        return hook(ctx=ctx, stream=stream, cursor=at)

    cursor, seq = cp.cursor, cp.seq
    page: SyncPage | None = fetch(cursor)  # most deltas: 1 page, no thread
    ahead: _ReadAhead | None = None
    with ExitStack() as stack:
        # The store's page committer, opened at the first commit: a delta that reads nothing
        # new never touches the store in this process (a work-horse would set up its own pool).
        opened: list[Callable[..., bool]] = []

        def commit(cursor: str | None, **kw: Any) -> bool:
            if not opened:
                opened.append(stack.enter_context(env.store.page_committer(t, i, stream, kind)))
            return opened[0](cursor, **kw)

        try:
            while True:
                if page is None:
                    raise ProviderError(f"the {kind} hook returned nothing for stream {stream!r}",
                                        provider=ctx.provider, tenant_id=t, install_id=i,
                                        hint=f"implement `{kind}` in the provider plugin")
                if not page.done and page.next_cursor == cursor:
                    raise ProviderError(
                        f"{kind} of stream {stream!r} returned its own cursor {cursor!r} again "
                        "without finishing (paging loop)", provider=ctx.provider, tenant_id=t,
                        install_id=i)
                more = not page.done and not _stop.is_set() and time.monotonic() < deadline
                if more and ahead is None:
                    ahead = read_ahead(fetch, page.next_cursor)
                n = len(page.records)
                if page.records:
                    sinks(ctx=ctx, stream=stream, records=page.records)
                if kind == "backfill" and page.done:
                    # Hand over the first delta cursor before marking the backfill complete: a
                    # crash in between re-delivers this last page once, it never loses the delta
                    # cursor.
                    d = env.store.get_checkpoint(t, i, stream, "delta")
                    env.store.commit_page(t, i, stream, "delta", page.next_cursor, seq=d.seq + 1)
                    new_cursor = BACKFILL_DONE
                elif kind == "delta" and page.next_cursor is None:
                    new_cursor = cursor
                else:
                    new_cursor = page.next_cursor
                if n or new_cursor != cursor:  # an empty delta page that moves nothing is not a run
                    if not commit(new_cursor, seq=seq + 1, run_id=run(), records=n):
                        raise StaleCheckpoint(
                            f"{kind} checkpoint of stream {stream!r} moved past page {seq + 1}: "
                            "another worker owns this sync", provider=ctx.provider, tenant_id=t,
                            install_id=i)
                    seq += 1
                cursor = new_cursor
                progress.pages += 1
                progress.records += n
                if page.done:
                    progress.streams_done.append(stream)
                    return True
                if _stop.is_set():  # SIGTERM: this page is committed; a prefetched one is dropped
                    return False
                if not more:  # out of budget: the job leaves a continuation
                    return False
                page = ahead.next()  # type: ignore[union-attr]
        finally:
            if ahead is not None:
                ahead.close()


def _run_sync(kind: str, provider: str, tenant_id: str, install_id: str, stream: str | None,
              run_id: str | None, chunk: int) -> Any:
    with _job_env(provider, tenant_id, install_id) as env:
        started = time.monotonic()
        deadline = started + env.opts.time_budget
        progress = _Progress()
        sync = queues.sync_key(kind, provider, tenant_id, install_id, stream)
        ctx = None
        run_ref: dict[str, Any] = {"id": run_id, "checked": False}

        def run() -> str:
            # Lazily, at the first page: a delta with nothing to read records no run.
            if not run_ref["checked"]:
                run_ref["id"] = _ensure_run(env, kind, tenant_id, install_id, stream, run_ref["id"])
                run_ref["checked"] = True
            return run_ref["id"]

        try:
            from nexus_core.store import Checkpoint

            never = Checkpoint(None, 0, None)
            prov = env.registry.provider(provider)
            # The installation, its credentials and checkpoints: one read transaction (done by
            # the worker just before the fork when it could, see preload).
            state = _take_preloaded(env.job) or env.store.load_sync_state(
                tenant_id, install_id, kind, credentials=rt.reads_credentials(prov))
            ctx = rt.build_context(
                env.store, env.registry, tenant_id, install_id, provider=provider,
                redis=env.redis, settings=env.settings, state=state,
                metadata={"kind": kind, "job_id": env.job.id if env.job else None,
                          "chunk": chunk},
            )
            names = sync_streams(ctx.config, prov, stream)
            finished = True

            def read_ahead(fetch: Callable[[str | None], SyncPage | None],
                           at: str | None) -> _ReadAhead:  # from the second page only
                # The GIL's default 5 ms switch interval is kept: with a fetch thread that never
                # waits for this one, a shorter one only adds switches (0.5 ms: ~10% fewer
                # pages/s against a local server).
                return _ReadAhead(fetch, at, deadline)

            for n, name in enumerate(names):
                # The first stream starts from the checkpoint just read; later ones re-read
                # theirs (another job may have moved it meanwhile).
                known = state.checkpoints.get(name, never) if n == 0 else None
                if not _sync_stream(env, ctx, kind, name, deadline, progress, run, read_ahead,
                                    known):
                    finished = False
                    break
        except StaleCheckpoint as exc:
            logger.warning("{}", exc.message)
            return {"status": "stale", "pages": progress.pages, "records": progress.records}
        except (RateLimited, ProviderUnavailable) as exc:
            return _defer(env, exc)
        finally:
            if ctx is not None:
                rt.close_context(ctx)
        elapsed = time.monotonic() - started
        result = {"pages": progress.pages, "records": progress.records,
                  "seconds": round(elapsed, 3), "run_id": run_ref["id"]}
        if not finished:
            next_id = _continue(env, kind, provider, tenant_id, install_id, stream,
                                run_ref["id"], chunk, sync)
            logger.info("{} chunk {}: {} pages, {} records in {:.1f} s; continues as {}",
                        kind, chunk, progress.pages, progress.records, elapsed, next_id)
            return {**result, "status": "continued", "next_job_id": next_id}
        if run_ref["id"] is not None:
            if progress.skipped and not progress.pages:
                env.store.finish_run(
                    tenant_id, run_ref["id"], "cancelled",
                    error=f"no completed backfill yet for {', '.join(progress.skipped)}: "
                    "a delta starts from the cursor a backfill leaves")
            else:
                env.store.finish_run(tenant_id, run_ref["id"], "succeeded")
        if env.job is not None:
            queues.handover_active(env.redis, sync, env.job.id, None)
        logger.info("{} done: {} pages, {} records in {:.1f} s", kind, progress.pages,
                    progress.records, elapsed)
        return {**result, "status": "succeeded"}


def _continue(env: _Env, kind: str, provider: str, tenant_id: str, install_id: str,
              stream: str | None, run_id: str | None, chunk: int, sync: str) -> str:
    current = env.job.id if env.job is not None else None
    sep = queues.SEP
    if current and current.startswith(sync + sep) and current.rsplit(sep, 1)[-1].isdigit():
        prefix = current.rsplit(sep, 1)[0]
    else:
        prefix = f"{sync}{sep}{(run_id or uuid.uuid4().hex)[:12]}"
    next_id = f"{prefix}{sep}{chunk + 1}"
    if current is None or not queues.handover_active(env.redis, sync, current, next_id):
        queues.claim_active(env.redis, sync, next_id)
    enqueue_sync(env.redis, kind, provider, tenant_id, install_id, stream, job_id=next_id,
                 run_id=run_id, chunk=chunk + 1, opts=env.opts)
    return next_id


def run_backfill(provider: str, tenant_id: str, install_id: str, stream: str | None = None,
                 run_id: str | None = None, chunk: int = 0) -> Any:
    """Backfill ``stream`` (None: every stream of the installation) from its checkpoint."""
    return _run_sync("backfill", provider, tenant_id, install_id, stream, run_id, chunk)


def run_delta(provider: str, tenant_id: str, install_id: str, stream: str | None = None,
              run_id: str | None = None, chunk: int = 0) -> Any:
    """Read changes since the stored delta cursor of ``stream`` (None: every stream)."""
    return _run_sync("delta", provider, tenant_id, install_id, stream, run_id, chunk)


def run_webhook(provider: str, tenant_id: str, install_id: str, request: dict[str, Any]) -> Any:
    """Normalize one verified delivery with the provider's ``handle_webhook`` and hand the
    events to ``process_events``. ``request`` is ``converters.unstructure(WebhookRequest)``;
    without ``body`` (the ingress's jobs), the raw body is read from the job's own hash."""
    from nexus_core.converters import structure
    from nexus_core.models import WebhookRequest

    if "body" not in request:
        request = {**request, "body": _stored_webhook_body(provider, tenant_id, install_id)}
    req = structure(request, WebhookRequest)
    with _job_env(provider, tenant_id, install_id) as env:
        ctx = rt.build_context(env.store, env.registry, tenant_id, install_id, provider=provider,
                               redis=env.redis, settings=env.settings,
                               metadata={"kind": "webhook"})
        try:
            events = env.registry.hook("handle_webhook", provider)(ctx=ctx, request=req) or []
            if events:
                env.registry.pm.hook.process_events(ctx=ctx, events=list(events))
        except (RateLimited, ProviderUnavailable) as exc:
            return _defer(env, exc)
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


def run_health_check(provider: str, tenant_id: str, install_id: str) -> Any:
    """Check an installation (the provider's ``health_check`` hook, failures classified by
    :func:`nexus_core.health.check_health`); the result is the Health as JSON. Revoked
    credentials mark the installation ``needs_reauth``, as a failing sync would."""
    from nexus_core.converters import unstructure
    from nexus_core.health import check_health

    with _job_env(provider, tenant_id, install_id) as env:
        ctx = rt.build_context(env.store, env.registry, tenant_id, install_id, provider=provider,
                               redis=env.redis, settings=env.settings,
                               metadata={"kind": "health"})
        try:
            health = check_health(env.registry, ctx)
        finally:
            rt.close_context(ctx)
        if health.details.get("needs_reauth"):
            env.store.set_status(tenant_id, install_id, "needs_reauth")
        return unstructure(health)


# -- failure policy --------------------------------------------------------------------------


def is_permanent(exc: BaseException | None) -> bool:
    """Errors that retrying cannot fix: they skip the remaining retries (fail fast)."""
    if isinstance(exc, RateLimited | ProviderUnavailable):
        return False
    if isinstance(exc, ProviderError):
        return not exc.retryable
    return isinstance(exc, AuthError | PluginError | NotFound | ConfigError) or (
        type(exc) is NexusError
    )


def on_job_failure(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ ``on_failure`` callback of every sync job (runs before RQ decides to retry).

    Permanent errors set ``retries_left`` to 0 so RQ moves the job straight to the
    FailedJobRegistry; ``AuthError(needs_reauth)`` also marks the installation. When the job
    will not run again, its sync run is recorded as failed."""
    kwargs = job.kwargs or {}
    tenant_id, install_id = kwargs.get("tenant_id"), kwargs.get("install_id")
    try:
        if is_permanent(exc_value):
            job.retries_left = 0
        store = rt.get_store()
        if isinstance(exc_value, AuthError) and exc_value.needs_reauth and tenant_id:
            with suppress(NotFound):
                store.set_status(tenant_id, install_id, "needs_reauth")
        if job.should_retry:
            logger.warning("job {} failed ({}: {}); {} retries left", job.id,
                           getattr(exc_type, "__name__", exc_type), exc_value, job.retries_left)
            return
        run_id = kwargs.get("run_id") or (job.meta or {}).get("nexus_run_id")
        if run_id and tenant_id:
            error = f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}"[:2000]
            store.finish_run(tenant_id, run_id, "failed", error=error)
        logger.error("job {} failed for good and is in the dead-letter queue: {}", job.id,
                     exc_value)
    except Exception as exc:  # a callback that raises would replace the job's own error
        logger.exception("on_job_failure for {} failed: {}", job.id, exc)
