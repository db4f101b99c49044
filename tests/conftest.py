"""Core test configuration. Fixtures for everyone live in nexus_core.testing.plugin (pytest11)."""

import logging
import os
import sys
import tempfile

import pytest
from loguru import logger


def pytest_configure(config):
    """A test that falls back to the default store or key file must not write into the working
    tree (nexus.db, .nexus/encryption.key): point the defaults at a session temp dir."""
    scratch = tempfile.mkdtemp(prefix="nexus-tests-")
    os.environ.setdefault("NEXUS_DATABASE_URL", f"sqlite:///{scratch}/nexus.db")
    os.environ.setdefault("NEXUS_KEY_FILE", f"{scratch}/encryption.key")
    os.environ.setdefault("NEXUS_SINK_DIR", f"{scratch}/sink")
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
