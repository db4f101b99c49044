"""Telling long-running processes that an installation changed.

Workers keep the installations their jobs use in memory (:mod:`nexus_core.sync.installations`)
instead of reading the store for every job. Every write to an installation or its credentials
made through a :class:`~nexus_core.store.Store` calls ``store.on_change(tenant_id, install_id)``
after it committed; a store built from settings (``Store.from_settings``: the CLI, the web app,
the workers) publishes that on Redis, and the workers drop their copy.

The writers are listed here, around the store's own methods, so that the methods themselves stay
plain transactions: a new write method of installations or credentials must be added to
``_WRITES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from typing import Self

    from nexus_core.config import Settings

#: The Redis channel of installation changes; the message is ``<tenant id>\x1f<install id>``.
CHANNEL = "nexus:installation-changed"

#: The Store methods that change an installation or its credentials (first two arguments:
#: tenant id, install id).
_WRITES = ("add_installation", "set_status", "update_installation", "remove_installation",
           "rotate_webhook_key", "save_credentials", "connect_installation")


def message(tenant_id: str, install_id: str) -> bytes:
    return f"{tenant_id}\x1f{install_id}".encode()


def parse(data: bytes | str) -> tuple[str, str] | None:
    text = data.decode() if isinstance(data, bytes) else data
    tenant, sep, install = text.partition("\x1f")
    return (tenant, install) if sep else None


class RedisPublisher:
    """``on_change`` for a store built from settings: one PUBLISH per change, on a client
    connected at the first change. Never fails the write it reports (it is committed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None

    def __call__(self, tenant_id: str, install_id: str) -> None:
        try:
            if self._client is None:
                from nexus_core.queues import redis_connection

                self._client = redis_connection(self.settings)
            self._client.publish(CHANNEL, message(tenant_id, install_id))
        except Exception as exc:  # the workers' copies expire on their own (max age)
            logger.warning("installation {}/{} changed but the workers could not be told "
                           "(Redis: {}); they see it within a minute", tenant_id, install_id,
                           exc)


def _notifying(name: str) -> Callable[..., Any]:
    def method(self: Any, tenant_id: str, install_id: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(super(ChangeFeedMixin, self), name)(tenant_id, install_id, *args,
                                                             **kwargs)
        if self.on_change is not None:
            self.on_change(tenant_id, install_id)
        return result

    method.__name__ = name
    return method


class ChangeFeedMixin:
    """Calls ``on_change`` after each committed write of ``_WRITES`` (first in ``Store``'s
    bases); ``from_settings`` wires the Redis publisher."""

    #: Called with (tenant id, install id) after a committed change; None: nobody to tell.
    on_change: Callable[[str, str], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, migrate: bool = True) -> Self:
        if settings is None:
            from nexus_core.config import get_settings

            settings = get_settings()
        store = super().from_settings(settings, migrate=migrate)  # type: ignore[misc]
        store.on_change = RedisPublisher(settings)
        return store


for _name in _WRITES:
    setattr(ChangeFeedMixin, _name, _notifying(_name))
