"""The Salesforce connector's own tests run the real path, as the standard suite does: the
plugin from its entry point, a real Redis, a SQLite store, RQ workers and the web app —
against the Salesforce simulator (`nexus_salesforce.simulator`), never a patched HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nexus_salesforce.simulator import SalesforceSimulator

from nexus_core.testing.suite import Harness


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """``make_sim(sizes={...})``: a started simulator with one production org."""
    started: list[SalesforceSimulator] = []

    def factory(**kw: Any) -> SalesforceSimulator:
        simulator = SalesforceSimulator(**kw).start()
        simulator.add_account()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sim(make_sim: Any) -> SalesforceSimulator:
    return make_sim()


@pytest.fixture
def harness(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``harness(sim, **env)``: one test's world (settings, registry, store, Redis, the service,
    the web app) pointed at ``sim``."""
    made: list[Harness] = []

    def factory(simulator: SalesforceSimulator, **env: str) -> Harness:
        made.append(Harness("salesforce", simulator, redis_url, tmp_path, monkeypatch, env=env))
        return made[-1]

    yield factory
    for h in made:
        h.close()


@pytest.fixture
def nexus(sim: SalesforceSimulator, harness: Any) -> Harness:
    return harness(sim)
