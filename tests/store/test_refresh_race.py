"""Done-when of the [store] issue: 8 processes hit an expired token at once; exactly one refresh
reaches the provider, every process continues with the new token, and the stored refresh token is
the newest one (each refresh token is valid once at the endpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nexus_core.crypto import KeyRing
from nexus_core.models import Credentials
from nexus_core.store import Store

WORKER = Path(__file__).with_name("refresh_worker.py")
PROCESSES = 8


@pytest.mark.slow
def test_eight_processes_hitting_an_expired_token_refresh_exactly_once(
    db_url, keys, fakes, redis_url, tmp_path
):
    # The endpoint answers refreshes slowly so the 8 requests truly overlap.
    server = fakes.TokenServer(refresh_delay=0.3).start()
    store = Store.from_url(db_url, KeyRing.from_string(keys))
    try:
        seed = server.seed_refresh_token()
        store.add_installation("t", "i", "acme", credentials=Credentials(
            access_token="expired-access-token", refresh_token=seed,
            expires_at=datetime.now(UTC) - timedelta(seconds=60)))
        ready, go = tmp_path / "ready", tmp_path / "go"
        ready.mkdir()
        procs = []
        for n in range(PROCESSES):
            args = {"db_url": db_url, "keys": keys, "redis_url": redis_url,
                    "token_url": server.url, "tenant": "t", "install": "i",
                    "ready_dir": str(ready), "go": str(go),
                    "mode": "reactive" if n % 2 else "proactive"}
            procs.append(subprocess.Popen([sys.executable, str(WORKER), json.dumps(args)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < PROCESSES:
            dead = [p for p in procs if p.poll() not in (None, 0)]
            assert not dead, dead[0].communicate()[1]
            assert time.monotonic() < deadline, "workers did not get ready within 60 s"
            time.sleep(0.01)
        go.touch()  # all 8 hold the expired token: release them at once
        outputs = [p.communicate(timeout=60) for p in procs]
        for p, (out, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
        results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

        assert server.count("refresh_token") == 1
        assert len(server.issued_access) == 1
        new_access, newest_refresh = server.issued_access[0], server.issued_refresh[-1]
        assert [r["access_token"] for r in results] == [new_access] * PROCESSES
        assert len({r["pid"] for r in results}) == PROCESSES
        stored = store.get_credentials("t", "i")
        assert stored.access_token == new_access
        assert stored.refresh_token == newest_refresh != seed
        assert server.valid_refresh == {newest_refresh}  # the seed was spent exactly once
        assert store.get_installation("t", "i").status == "active"
    finally:
        store.close()
        server.stop()
