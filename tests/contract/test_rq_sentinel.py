"""RQ rebuilds a worker's Redis client in its scheduler and WorkerPool processes from
``connection.connection_pool.connection_kwargs`` (rq.connections.parse_connection). For the
Sentinel master client of nexus_core.queues.redis_connection, the rebuilt client must still
follow a failover: the sentinel-managed connection class and its pool proxy come along."""

import time

import pytest
from redis import ConnectionPool

from nexus_core.config import load_settings
from nexus_core.doctor import diagnose
from nexus_core.queues import redis_connection
from nexus_core.testing.redis_server import RedisUnavailable
from nexus_core.testing.sentinel import SentinelCluster, sentinel_command

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sentinel_command() is None,
                       reason="needs redis-sentinel, or redis-server (which runs a sentinel with "
                              "--sentinel): apt-get install -y redis-server / brew install redis"),
]


def _as_rq_rebuilds_it(client):
    from rq.connections import parse_connection

    connection_class, pool_class, pool_kwargs = parse_connection(client)
    return connection_class(connection_pool=ConnectionPool(connection_class=pool_class,
                                                           **pool_kwargs))


def test_a_client_rebuilt_the_way_rq_does_follows_a_sentinel_failover():
    try:
        cluster = SentinelCluster().start()
    except RedisUnavailable as exc:
        pytest.skip(f"could not start a Sentinel deployment: {exc}")
    try:
        settings = load_settings({"REDIS_SENTINELS": cluster.sentinels_setting,
                                  "REDIS_SENTINEL_MASTER": cluster.name}, env_file=None)
        ours = redis_connection(settings)
        found = {f.check: f for f in diagnose(settings)}  # `nexus doctor` asks the same master
        assert found["redis"].status == "ok", found["redis"]
        assert f"at sentinel master '{cluster.name}' via" in found["redis"].message
        rebuilt = _as_rq_rebuilds_it(ours)
        rebuilt.set("before", b"1")
        assert ours.get("before") == b"1"
        old = cluster.kill_master()
        new = cluster.wait_for_failover(old)
        deadline = time.monotonic() + 30
        while True:
            try:
                rebuilt.set("after", b"2")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert ours.get("after") == b"2" and ours.get("before") == b"1"
        assert ours.connection_pool.get_master_address() == new
        conn = rebuilt.connection_pool.get_connection()
        try:
            assert (conn.host, conn.port) == new
        finally:
            rebuilt.connection_pool.release(conn)
    finally:
        cluster.cleanup()
