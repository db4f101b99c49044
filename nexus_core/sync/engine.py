"""The sync engine: page → sinks → commit, chunk after chunk (the jobs ``run_backfill`` and
``run_delta``; RQ stores them as ``nexus_core.jobs.run_backfill``/``run_delta``).

A sync job works page by page: ``backfill``/``delta`` hook → ``process_records`` sinks → *then*
the cursor is committed with a compare-and-set on the page sequence (:meth:`Store.commit_page`).
A crash loses at most the page in flight (delivered again on resume); a stale commit means
another runner owns the sync and this one stops. After NEXUS_BACKFILL_TIME_BUDGET seconds — or
on SIGTERM — a job commits its page, enqueues its continuation and returns, so long backfills
interleave with other work. What runs around it (environment, lease, deferral, failure policy)
is :mod:`nexus_core.sync.harness`.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from nexus_core import metrics, queues
from nexus_core import runtime as rt
from nexus_core.errors import NexusError, ProviderError, ProviderUnavailable, RateLimited
from nexus_core.models import ConnectorContext, SyncPage
from nexus_core.sync.enqueue import (
    BACKFILL_DONE,
    START_META,
    enqueue_sync,
    reset_completed_backfill,
    sync_streams,
)
from nexus_core.sync.follow import Reporter, publish
from nexus_core.sync.harness import (
    Env,
    defer,
    job_env,
    job_run_id,
    stop_event,
    take_preloaded,
)
from nexus_core.sync.lease import exit_if_orphaned

if TYPE_CHECKING:
    from nexus_core.store import Checkpoint


class StaleCheckpoint(NexusError):
    """Another runner committed this page first: it owns the sync, this job stops."""



@attrs.define
class _Progress:
    pages: int = 0
    records: int = 0
    streams_done: list[str] = attrs.Factory(list)
    skipped: list[str] = attrs.Factory(list)


def _ensure_run(env: Env, kind: str, tenant_id: str, install_id: str, stream: str | None,
                run_id: str | None) -> str:
    job = env.job
    if run_id is None and job is not None:
        run_id = job.meta.get("nexus_run_id")
    if run_id is None:
        # The id the job's log lines already carry (job_run_id), so they name this run.
        run_id = env.store.start_run(tenant_id, install_id, kind, stream,
                                     job_id=job.id if job is not None else None,
                                     run_id=job_run_id(job))
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
                    or stop_event.is_set() or time.monotonic() >= deadline):
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
    env: Env, ctx: ConnectorContext, kind: str, stream: str, deadline: float,
    progress: _Progress, run: Callable[[], str], run_ref_id: Callable[[], str | None],
    report: Callable[[], None],
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
                more = not page.done and not stop_event.is_set() and time.monotonic() < deadline
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
                    new_cursor: str | None = BACKFILL_DONE
                elif kind == "delta" and page.next_cursor is None:
                    new_cursor = cursor
                else:
                    new_cursor = page.next_cursor
                if n or new_cursor != cursor:  # an empty delta page that moves nothing is not a run
                    # A periodic delta that reads no records moves its cursor without a run:
                    # run history is for work done (100,000 installations polled every 5 min).
                    counted = run() if n or kind == "backfill" or run_ref_id() else None
                    if not commit(new_cursor, seq=seq + 1, run_id=counted, records=n):
                        raise StaleCheckpoint(
                            f"{kind} checkpoint of stream {stream!r} moved past page {seq + 1}: "
                            "another worker owns this sync", provider=ctx.provider, tenant_id=t,
                            install_id=i)
                    seq += 1
                cursor = new_cursor
                progress.pages += 1
                progress.records += n
                metrics.count_pages(ctx.provider, kind, t, 1, n)
                report()
                if page.done:
                    progress.streams_done.append(stream)
                    return True
                if env.job is not None:
                    exit_if_orphaned(env.job.id)  # this horse's worker died: recovered from here
                if stop_event.is_set():  # SIGTERM: page committed, a prefetched one dropped
                    return False
                if not more:  # out of budget: the job leaves a continuation
                    return False
                page = ahead.next()  # type: ignore[union-attr]
        finally:
            if ahead is not None:
                ahead.close()


def _run_sync(kind: str, provider: str, tenant_id: str, install_id: str, stream: str | None,
              run_id: str | None, chunk: int) -> Any:
    with metrics.Operation(provider, kind, tenant_id) as op:
        result = _run_sync_chunk(kind, provider, tenant_id, install_id, stream, run_id, chunk)
        if isinstance(result, dict):
            op.outcome = {"stale": "stale", "continued": "continued"}.get(
                result.get("status", ""), "succeeded")
        else:  # RQ's Retry: deferred
            op.outcome = "deferred"
        return result


def _run_sync_chunk(kind: str, provider: str, tenant_id: str, install_id: str,
                    stream: str | None, run_id: str | None, chunk: int) -> Any:
    with job_env(provider, tenant_id, install_id) as env:
        started = time.monotonic()
        deadline = started + env.opts.time_budget
        progress = _Progress()
        sync = queues.sync_key(kind, provider, tenant_id, install_id, stream)
        ctx = None
        run_ref: dict[str, Any] = {"id": run_id, "checked": False}
        reporter = Reporter(env.redis, env.job) if env.job is not None else None

        def report() -> None:
            if reporter is not None:
                reporter.progress(progress.pages, progress.records)

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
            state = take_preloaded(env.job)
            if env.job is not None and (env.job.meta or {}).get(START_META):
                # Started with Redis alone (start_sync_by_job): what start_sync does with the
                # store, done here once — check, start a completed backfill over, record the run.
                state = None
                inst = rt.load_installation(env.store, tenant_id, install_id, provider)
                if kind == "backfill":
                    reset_completed_backfill(env.store, inst, stream)
                run()
                env.job.meta[START_META] = False
                env.job.save_meta()
            if state is None:
                state = env.store.load_sync_state(tenant_id, install_id, kind,
                                                  credentials=rt.reads_credentials(prov))
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
                if not _sync_stream(env, ctx, kind, name, deadline, progress, run,
                                    lambda: run_ref["id"], report, read_ahead, known):
                    finished = False
                    break
        except StaleCheckpoint as exc:
            logger.warning("{}", exc.message)
            return {"status": "stale", "pages": progress.pages, "records": progress.records}
        except (RateLimited, ProviderUnavailable) as exc:
            retry = defer(env, exc, kind)
            if reporter is not None:
                publish(env.redis, reporter.key, {
                    "type": "deferred", "job_id": env.job.id, "error": exc.message,
                    **reporter.totals(progress.pages, progress.records)})
            return retry
        finally:
            if ctx is not None:
                rt.close_context(ctx)
        elapsed = time.monotonic() - started
        result = {"pages": progress.pages, "records": progress.records,
                  "seconds": round(elapsed, 3), "run_id": run_ref["id"]}
        if not finished:
            next_id = _continue(env, kind, provider, tenant_id, install_id, stream,
                                run_ref["id"], chunk, sync, reporter, progress)
            logger.info("{} chunk {}: {} pages, {} records in {:.1f} s; continues as {}",
                        kind, chunk, progress.pages, progress.records, elapsed, next_id)
            return {**result, "status": "continued", "next_job_id": next_id}
        status, error = "succeeded", None
        if progress.skipped and not progress.pages:
            status, error = "cancelled", (
                f"no completed backfill yet for {', '.join(progress.skipped)}: "
                "a delta starts from the cursor a backfill leaves")
        if run_ref["id"] is not None:
            env.store.finish_run(tenant_id, run_ref["id"], status, error=error)
        if reporter is not None:  # and the active-sync marker let go, in one round trip
            reporter.done(status, progress.pages, progress.records, run_id=run_ref["id"],
                          error=error, release=queues.active_key(sync))
        logger.info("{} done: {} pages, {} records in {:.1f} s", kind, progress.pages,
                    progress.records, elapsed)
        return {**result, "status": "succeeded"}


def _continue(env: Env, kind: str, provider: str, tenant_id: str, install_id: str,
              stream: str | None, run_id: str | None, chunk: int, sync: str,
              reporter: Reporter | None, progress: _Progress) -> str:
    current = env.job.id if env.job is not None else None
    sep = queues.SEP
    if current and current.startswith(sync + sep) and current.rsplit(sep, 1)[-1].isdigit():
        prefix = current.rsplit(sep, 1)[0]
    else:
        prefix = f"{sync}{sep}{(run_id or uuid.uuid4().hex)[:12]}"
    next_id = f"{prefix}{sep}{chunk + 1}"
    if current is None or not queues.handover_active(env.redis, sync, current, next_id):
        queues.claim_active(env.redis, sync, next_id)
    # The followers' stream and the totals so far travel with the continuation.
    meta = reporter.continued(progress.pages, progress.records, next_id) \
        if reporter is not None else None
    enqueue_sync(env.redis, kind, provider, tenant_id, install_id, stream, job_id=next_id,
                 run_id=run_id, chunk=chunk + 1, opts=env.opts, meta=meta)
    return next_id


def run_backfill(provider: str, tenant_id: str, install_id: str, stream: str | None = None,
                 run_id: str | None = None, chunk: int = 0) -> Any:
    """Backfill ``stream`` (None: every stream of the installation) from its checkpoint."""
    return _run_sync("backfill", provider, tenant_id, install_id, stream, run_id, chunk)


def run_delta(provider: str, tenant_id: str, install_id: str, stream: str | None = None,
              run_id: str | None = None, chunk: int = 0) -> Any:
    """Read changes since the stored delta cursor of ``stream`` (None: every stream)."""
    return _run_sync("delta", provider, tenant_id, install_id, stream, run_id, chunk)
