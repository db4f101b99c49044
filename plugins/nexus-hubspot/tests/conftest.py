"""The HubSpot connector's own tests run the real path, as the standard suite does: the plugin
from its entry point, a real Redis, a SQLite store, RQ workers and the web app — against the
HubSpot simulator (`nexus_hubspot.simulator`), never a patched HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nexus_hubspot.simulator import HubSpotSimulator

from nexus_core.testing.suite import Harness


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """``make_sim(sizes={...})``: a simulator with one portal, stopped after the test."""
    started: list[HubSpotSimulator] = []

    def factory(**kw: Any) -> HubSpotSimulator:
        simulator = HubSpotSimulator(**kw).start()
        simulator.add_account()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sim(make_sim: Any) -> HubSpotSimulator:
    return make_sim()


@pytest.fixture
def harness(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``harness(sim, **env)``: one test's world (settings, registry, store, Redis, the service,
    the web app) pointed at ``sim``."""
    made: list[Harness] = []

    def factory(simulator: HubSpotSimulator, **env: str) -> Harness:
        made.append(Harness("hubspot", simulator, redis_url, tmp_path, monkeypatch, env=env))
        return made[-1]

    yield factory
    for h in made:
        h.close()


@pytest.fixture
def nexus(sim: HubSpotSimulator, harness: Any) -> Harness:
    return harness(sim)
