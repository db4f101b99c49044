"""Token rotation (addendum 2.4): every refresh answers a NEW refresh token and kills the old
one, so two processes refreshing at once would strand the installation (the loser's reuse of
the old token is refused for good). Eight real worker processes (fork) hit the same expired
token at the same moment; the core's single-flight refresh must make exactly one refresh."""

from __future__ import annotations

import multiprocessing
import os
from datetime import timedelta

import pytest

from nexus_core.models import utcnow

WORKERS = 8


def _check(barrier, results, tenant, install):
    """In a forked process: wait for every sibling, then call the API with the stored (expired)
    token through the real path — store, Redis lock, ProviderSession — and report."""
    from nexus_core import runtime
    from nexus_core.config import get_settings
    from nexus_core.service import IntegrationService

    try:
        runtime.reset()  # connections are never shared across a fork
        settings = get_settings()
        service = IntegrationService(settings).initialize()
        barrier.wait(timeout=30)
        health = service.health_check_immediate("slack", tenant, install)
        results.put((os.getpid(), health.healthy, health.details.get("error")))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((os.getpid(), False, f"{type(exc).__name__}: {exc}"))
    finally:
        results.close()
        results.join_thread()  # the feeder thread has written the result before we exit
        os._exit(0)


def _run_workers(n, target, args):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(barrier, results, *args)) for _ in range(n)]
    for p in procs:
        p.start()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    return out


def slow_token_endpoint(sim, seconds):
    """oauth.v2.access answers after ``seconds`` (a refresh in flight stays in flight)."""
    import time

    for i, (method, regex, fn, auth) in enumerate(sim.app.routes):
        if regex.pattern.endswith("oauth.v2.access$"):
            def slow(req, fn=fn):
                time.sleep(seconds)
                return fn(req)
            sim.app.routes[i] = (method, regex, slow, auth)


def test_eight_processes_on_an_expired_token_make_exactly_one_refresh(nexus, sim):
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    before = nexus.store.get_credentials("tenant-1", "main")
    sim.oauth.expire_access_tokens()  # the stored token still looks fresh: the API says not
    slow_token_endpoint(sim, 1.0)  # every process meets the expired token before it is fixed
    sim.app.log.clear()

    results = _run_workers(WORKERS, _check, ("tenant-1", "main"))

    assert len({pid for pid, _, _ in results}) == WORKERS
    assert all(healthy for _, healthy, _ in results), results
    assert sim.oauth.refreshes == 1, f"{sim.oauth.refreshes} refreshes"
    assert sim.oauth.refused_reuse == 0, "an old refresh token was sent again"
    after = nexus.store.get_credentials("tenant-1", "main")
    assert after.refresh_token != before.refresh_token
    assert after.refresh_token == sim.oauth.current_refresh_token(account)
    # every process answered token_expired once, then used the one new token
    expired = [r for r in sim.requests("/api/auth.test") if r.account is None]
    assert len(expired) == WORKERS and len(sim.requests("/api/auth.test")) == 2 * WORKERS


def test_eight_processes_refresh_ahead_of_expiry_once(nexus, sim):
    """The proactive path: the stored expiry has passed (12 h tokens), nobody has called yet."""
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    creds = nexus.store.get_credentials("tenant-1", "main")
    import attrs

    nexus.store.save_credentials("tenant-1", "main",
                                attrs.evolve(creds, expires_at=utcnow() - timedelta(minutes=1)))
    results = _run_workers(WORKERS, _check, ("tenant-1", "main"))
    assert all(healthy for _, healthy, _ in results), results
    assert sim.oauth.refreshes == 1 and sim.oauth.refused_reuse == 0
    assert nexus.store.get_credentials("tenant-1", "main").refresh_token == \
        sim.oauth.current_refresh_token(account)


def test_the_simulator_refuses_a_reused_refresh_token_for_good(sim):
    """What the single flight prevents: the old token is dead after one refresh."""
    import requests

    account = sim.default_account
    issued = sim.oauth.issue_tokens(account)
    url = sim.url + "/api/oauth.v2.access"
    auth = (sim.oauth.client_id, sim.oauth.client_secret)
    form = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    first = requests.post(url, data=form, auth=auth, timeout=10).json()
    assert first["ok"] is True and first["refresh_token"] != issued["refresh_token"]
    assert first["expires_in"] == 43200 and first["team"]["id"] == account
    again = requests.post(url, data=form, auth=auth, timeout=10)
    assert again.status_code == 200
    assert again.json() == {"ok": False, "error": "invalid_refresh_token"}
    assert sim.oauth.refused_reuse == 1


def test_a_refused_refresh_token_marks_the_installation_needs_reauth(nexus, sim):
    account = sim.default_account
    nexus.connect("tenant-1", "main", account)
    sim.oauth.revoke(account)
    from nexus_core import oauth
    from nexus_core.errors import AuthError

    stale = nexus.store.get_credentials("tenant-1", "main")
    with pytest.raises(AuthError) as err:
        oauth.refresh_credentials(nexus.store, nexus.redis, nexus.registry, "tenant-1", "main",
                                  stale=stale, settings=nexus.settings)
    assert err.value.needs_reauth and "invalid_refresh_token" in str(err.value)
    assert nexus.store.get_installation("tenant-1", "main").status == "needs_reauth"
