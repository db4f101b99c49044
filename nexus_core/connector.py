"""``BaseConnector``: the seed's class style over the same hooks.

Subclass it, set ``provider`` and implement any of the hook methods (``backfill``, ``delta``,
``authorize``, ``refresh``, ``handle_webhook``, ``health_check``, ...) as plain methods — no
decorators needed: the plugin manager treats every method named after a hook as its
implementation. Point the ``nexus`` entry point at the class; it is instantiated once on load.

    class MyConnector(BaseConnector):
        provider = Provider(id="my-provider", name="My Provider", version="1.0.0",
                            streams=(Stream("widgets", cursor_field="updated_at"),))

        def backfill(self, ctx, stream, cursor):
            ...
            return SyncPage(records=[...], next_cursor=..., done=...)
"""

from __future__ import annotations

from typing import ClassVar

from nexus_core.hookspecs import CORE_API_VERSION
from nexus_core.models import Provider


class BaseConnector:
    #: The provider's metadata; required.
    provider: ClassVar[Provider]
    #: The core hook API this connector was written for.
    nexus_api_version: ClassVar[int] = CORE_API_VERSION

    def nexus_provider(self) -> Provider:
        try:
            return type(self).provider
        except AttributeError:
            raise TypeError(
                f"{type(self).__name__} must set the class attribute `provider = Provider(...)`"
            ) from None

    def __repr__(self) -> str:
        provider = getattr(type(self), "provider", None)
        return f"<{type(self).__name__} provider={getattr(provider, 'id', '?')}>"
