"""Fixtures for the store and OAuth tests: both databases, a key ring, a token endpoint.

PostgreSQL: NEXUS_TEST_POSTGRES_URL (CI sets it), else the local default. Every test gets its own
freshly created schema (``search_path`` in the URL, so child processes see it too), dropped at
the end — other engineers may run the suite against the same server at the same time. With the
variable unset and no server listening, the postgres variants skip with the reason; with it set,
an unreachable server is a failure.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HERE = Path(__file__).parent

_spec = importlib.util.spec_from_file_location("nexus_store_test_fakes", HERE / "fakes.py")
assert _spec is not None and _spec.loader is not None
fakes_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes_module)


@pytest.fixture(scope="session")
def fakes() -> Any:
    return fakes_module


@pytest.fixture
def keys() -> str:
    from nexus_core.crypto import generate_key

    return generate_key()


@pytest.fixture
def keyring(keys: str) -> Any:
    from nexus_core.crypto import KeyRing

    return KeyRing.from_string(keys)


@pytest.fixture
def store(db_url: str, keyring: Any) -> Iterator[Any]:
    from nexus_core.store import Store

    s = Store.from_url(db_url, keyring)
    yield s
    s.close()


@pytest.fixture
def token_server(fakes: Any) -> Iterator[Any]:
    server = fakes.TokenServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(fakes: Any, token_server: Any, keys: str) -> Any:
    from nexus_core.config import load_settings

    return load_settings(environ=fakes.settings_env(token_server.url, keys), env_file=None)


@pytest.fixture
def acme_registry(nexus_registry: Any, fakes: Any) -> Iterator[Any]:
    from nexus_core.plugins import registered

    with registered(fakes.AcmeConnector, "acme", registry=nexus_registry):
        yield nexus_registry


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every loguru line (message and bound extras) emitted during the test."""
    from loguru import logger

    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="TRACE",
                         format="{level} {message} {extra} {exception}")
    yield lines
    logger.remove(handler)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Run the real ``nexus`` CLI in-process with settings from a given environment."""
    from click.testing import CliRunner
    from loguru import logger

    from nexus_core.cli import cli
    from nexus_core.config import reset_settings

    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def run(args: list[str], env: dict[str, str], input: str | None = None) -> Any:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_settings()
        result = CliRunner().invoke(cli, args, input=input, catch_exceptions=False)
        logger.remove()  # the CLI logged to CliRunner's (now closed) stderr
        return result

    yield run
    reset_settings()
    # `nexus` configures process-wide logging; leave it as the next test expects it.
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    logger.configure(patcher=lambda _record: None)
    logger.add(sys.stderr)
