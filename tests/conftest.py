"""Core test configuration. Fixtures for everyone live in nexus_core.testing.plugin (pytest11)."""

import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger


def pytest_configure(config):
    """A test that falls back to the default store or key file must not write into the working
    tree (nexus.db, .nexus/encryption.key): point the defaults at a session temp dir."""
    scratch = tempfile.mkdtemp(prefix="nexus-tests-")
    os.environ.setdefault("NEXUS_DATABASE_URL", f"sqlite:///{scratch}/nexus.db")
    os.environ.setdefault("NEXUS_KEY_FILE", f"{scratch}/encryption.key")
    os.environ.setdefault("NEXUS_SINK_DIR", f"{scratch}/sink")
    os.environ.setdefault("NEXUS_METRICS_DIR", f"{scratch}/metrics")
    # Tests name their Redis; none starts a development server by accident (test_embedded
    # turns it on explicitly).
    os.environ.setdefault("NEXUS_EMBEDDED_REDIS", "off")


@pytest.fixture(autouse=True)
def _restore_logging():
    """Tests that run the CLI in-process call configure_logging(); undo it afterwards so the
    next test sees loguru's and the stdlib's defaults."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logger.remove()
    logger.configure(patcher=lambda record: None)
    logger.add(sys.stderr)


# -- PostgreSQL (moved here from tests/store so every directory can use it) -------------------

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator:
    """A SQLAlchemy engine on the test PostgreSQL server and the session's schema prefix."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    explicit = os.environ.get("NEXUS_TEST_POSTGRES_URL")
    url = sa.make_url(explicit or DEFAULT_POSTGRES_URL)
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        where = url.render_as_string(hide_password=True)
        reason = f"PostgreSQL unreachable at {where}: {str(exc.orig).strip().splitlines()[0]}"
        if explicit:
            pytest.fail(f"NEXUS_TEST_POSTGRES_URL is set but {reason}", pytrace=False)
        pytest.skip(f"{reason} (set NEXUS_TEST_POSTGRES_URL to run the postgres variants)")
    prefix = f"nexus_store_{os.getpid()}_{secrets.token_hex(3)}_"
    yield engine, url, prefix
    with engine.begin() as conn:  # anything a crashed test left behind
        leftovers = conn.execute(
            sa.text("select nspname from pg_namespace where nspname like :p"),
            {"p": prefix + "%"},
        ).scalars().all()
        for name in leftovers:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture
def make_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """A factory of fresh, empty databases of one backend: ``make_db_url("sqlite")``."""
    import sqlalchemy as sa

    created: list[tuple[Any, str]] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'nexus-{secrets.token_hex(3)}.db'}"
        engine, url, prefix = request.getfixturevalue("postgres_server")
        schema = prefix + secrets.token_hex(3)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        created.append((engine, schema))
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        return scoped.render_as_string(hide_password=False)

    yield make
    for engine, schema in created:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, make_db_url: Any) -> str:
    return make_db_url(backend)


