"""Test support for nexus-core and for plugin authors (also a pytest plugin, see ``plugin``).

* :func:`registered` — register a plugin (module, object or ``BaseConnector`` subclass) for a
  ``with`` block on a registry, unregistered afterwards.
* :class:`RedisServer` — a throwaway real ``redis-server`` on a free port.
* :class:`SentinelCluster` — a throwaway master, replica and three sentinels (failover tests).
* Fixtures (``nexus_registry``, ``redis_server``, ``redis_url``, ``redis_client``,
  ``sqlite_url``) come from :mod:`nexus_core.testing.plugin`, loaded through ``pytest11``.
"""

from nexus_core.plugins import registered
from nexus_core.testing.redis_server import RedisServer, RedisUnavailable, free_port
from nexus_core.testing.sentinel import SentinelCluster

__all__ = ["RedisServer", "RedisUnavailable", "SentinelCluster", "free_port", "registered"]
