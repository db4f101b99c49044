"""A worker's copies of the installations its webhook and health jobs use.

Reading the installation (and, for API-key or basic-auth providers, its credentials) from the
store was most of a webhook job's own cost. A worker process keeps what it read, keyed by tenant
and installation, and drops a copy when told that the installation changed: every write through
a :class:`~nexus_core.store.Store` built from settings is published on Redis
(:mod:`nexus_core.store._changes`), and one thread per worker process listens. Since a message
missed while that thread was disconnected is lost, the copies are all dropped whenever it
(re)subscribes, and none is used for longer than ``MAX_AGE`` seconds whatever happens. With
Redis unreachable nothing is kept: every job reads the store.

A forking worker reads through its copies just before the fork (:func:`nexus_core.sync.harness.
preload`); the work-horse gets the result and never touches the cache. Sync jobs do not use it:
their checkpoints must be read fresh anyway, in the same transaction.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from nexus_core.store._changes import CHANNEL, parse

if TYPE_CHECKING:
    from nexus_core.seams import RedisClient, SyncStore

#: Seconds a copy is used at most, even if no change was announced.
MAX_AGE = 60.0
#: Copies kept at most (all are dropped when full: simple, and rare).
MAX_ENTRIES = 10_000


class InstallationCache:
    """See the module doc. ``state(store, ...)`` returns a
    :class:`~nexus_core.store.SyncState` without checkpoints."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[float, bool, Any]] = {}
        self._ready = threading.Event()
        self._stopped = threading.Event()
        #: Changes received (tests wait on it).
        self.changes_seen = 0
        #: Bumped by every change and every reset: a read that overlaps one is not kept.
        self._generation = 0
        self._thread = threading.Thread(target=self._listen, name="nexus-installations",
                                        daemon=True)
        self._thread.start()

    # -- the listener ----------------------------------------------------------------------

    def _listen(self) -> None:
        delay = 0.5
        while not self._stopped.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
            try:
                pubsub.subscribe(CHANNEL)
                while not self._stopped.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self.clear()  # whatever happened while not subscribed is unknown
                        self._ready.set()
                        delay = 0.5
                    elif msg["type"] == "message":
                        self._changed(msg["data"])
            except Exception as exc:
                self._ready.clear()
                self.clear()
                logger.debug("installation change feed interrupted ({}); retrying", exc)
                self._stopped.wait(delay)
                delay = min(delay * 2, 10.0)
            finally:
                try:
                    pubsub.close()
                except Exception as exc:  # the connection is gone anyway
                    logger.debug("closing the change feed failed: {}", exc)

    def _changed(self, data: Any) -> None:
        changed = parse(data)
        if changed is None:
            return
        with self._lock:
            for key in [k for k in self._entries if k[1:] == changed]:  # any store's copy
                del self._entries[key]
            self.changes_seen += 1
            self._generation += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the change feed is subscribed (copies are kept only from then on)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        self._stopped.set()
        self._ready.clear()

    # -- reads -------------------------------------------------------------------------------

    def state(self, store: SyncStore, tenant_id: str, install_id: str, *, credentials: bool) -> Any:
        """The installation (with its credentials when ``credentials``): the copy if there is a
        fresh one, else read from the store (and kept, while the change feed is up)."""
        key = (store.url, tenant_id, install_id)
        now = time.monotonic()
        if self._ready.is_set():
            with self._lock:
                hit = self._entries.get(key)
            if hit is not None and now - hit[0] < MAX_AGE and (hit[1] or not credentials):
                return hit[2]
        ready = self._ready.is_set()
        generation = self._generation  # a change announced during the read: do not keep it
        state = store.load_installation_state(tenant_id, install_id, credentials=credentials)
        if ready:
            with self._lock:
                if self._generation != generation or not self._ready.is_set():
                    return state
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (now, credentials, state)
        return state


_cache: InstallationCache | None = None
_cache_lock = threading.Lock()


def cache(redis: RedisClient) -> InstallationCache:
    """This process's cache (a new one after a fork), listening on ``redis``'s server. A new
    cache waits (up to 2 s) for its change feed: copies are kept only from then on."""
    global _cache
    with _cache_lock:
        if _cache is None or _cache.pid != os.getpid():
            _cache = InstallationCache(redis)
            _cache.wait_ready(2.0)
        return _cache


def reset() -> None:
    """Forget this process's cache (tests switch Redis servers between cases)."""
    global _cache
    with _cache_lock:
        if _cache is not None and _cache.pid == os.getpid():
            _cache.stop()
        _cache = None
