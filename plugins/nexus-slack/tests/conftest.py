"""The Slack connector's own tests run the real path, as the standard suite does: the plugin
from its entry point, a real Redis, a SQLite store, RQ workers and the web app — against the
Slack simulator (`nexus_slack.simulator`), never a patched HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nexus_slack.simulator import SlackSimulator

from nexus_core.testing.suite import Harness

#: Tests run Slack's per-minute tiers on a one-second "minute".
MINUTE = 1.0


@pytest.fixture
def make_sim() -> Iterator[Any]:
    """``make_sim(**kw)``: a simulator with one workspace, stopped after the test."""
    started: list[SlackSimulator] = []

    def factory(**kw: Any) -> SlackSimulator:
        kw.setdefault("minute", MINUTE)
        simulator = SlackSimulator(**kw).start()
        simulator.add_account()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sim(make_sim: Any) -> SlackSimulator:
    return make_sim()


@pytest.fixture
def harness(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``harness(sim, **env)``: one test's world pointed at ``sim``."""
    made: list[Harness] = []

    def factory(simulator: SlackSimulator, **env: str) -> Harness:
        made.append(Harness("slack", simulator, redis_url, tmp_path, monkeypatch, env=env))
        return made[-1]

    yield factory
    for h in made:
        h.close()


@pytest.fixture
def nexus(sim: SlackSimulator, harness: Any) -> Harness:
    return harness(sim)
