"""pytest plugin (entry point ``pytest11: nexus``): fixtures for nexus-core and plugin authors.

Kept cheap to import: it is loaded by every pytest run in an environment with nexus-core.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from nexus_core.testing.redis_server import RedisServer, RedisUnavailable


@pytest.fixture
def nexus_registry() -> Iterator[Any]:
    """A fresh, empty plugin registry installed as the process-wide one for the test."""
    from nexus_core.plugins import PluginRegistry, set_registry

    registry = PluginRegistry()
    previous = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


class LogCapture:
    """Loguru messages captured during a test: ``.records`` (level, message, extra) and
    ``.text`` (one ``LEVEL message`` line each)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def sink(self, message: Any) -> None:
        from nexus_core.log import redact

        record = message.record
        self.records.append((record["level"].name, redact(record["message"]),
                             dict(record["extra"])))

    @property
    def text(self) -> str:
        return "\n".join(f"{level} {msg}" for level, msg, _ in self.records)


@pytest.fixture
def nexus_logs() -> Iterator[LogCapture]:
    """What the SDK logged during the test (loguru, every level), secrets already redacted."""
    from loguru import logger

    capture = LogCapture()
    handler = logger.add(capture.sink, level="TRACE", format="{message}")
    try:
        yield capture
    finally:
        logger.remove(handler)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a real Redis for this test session: a throwaway ``redis-server`` on a free port,
    or NEXUS_TEST_REDIS_URL when set (that Redis is flushed between tests)."""
    external = os.environ.get("NEXUS_TEST_REDIS_URL")
    if external:
        yield external
        return
    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session Redis, flushed before the test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite database file in the test's temp dir."""
    return f"sqlite:///{tmp_path / 'nexus.db'}"
