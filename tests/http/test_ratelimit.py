"""The shared rate limiter: GCRA in Redis, 429 cool-downs, several processes, Redis faults."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

from nexus_core.errors import RateLimited
from nexus_core.models import RateLimits
from nexus_core.ratelimit import RateLimiter
from nexus_core.testing import RedisServer, free_port

WORKER = Path(__file__).with_name("storm_worker.py")


def limiter(client, rate=10.0, burst=5, **kw) -> RateLimiter:
    kw.setdefault("headroom", 0)
    return RateLimiter(client, provider_id="acme", account="acct-1",
                       requests_per_second=rate, burst_size=burst, **kw)


def test_a_burst_goes_through_at_once_then_requests_are_spaced(redis_client):
    lim = limiter(redis_client, rate=10, burst=5)
    started = time.monotonic()
    waits = [lim.acquire().waited for _ in range(7)]
    assert waits[:5] == [0, 0, 0, 0, 0]
    assert waits[5] == pytest.approx(0.1, abs=0.03)
    assert waits[6] == pytest.approx(0.1, abs=0.03)
    assert time.monotonic() - started == pytest.approx(0.2, abs=0.05)


def test_headroom_keeps_requests_of_the_burst_unused(redis_client):
    lim = limiter(redis_client, rate=10, burst=5, headroom=1)
    waits = [lim.acquire().waited for _ in range(5)]
    assert waits[:4] == [0, 0, 0, 0] and waits[4] > 0.05


def test_a_wait_over_the_threshold_raises_rate_limited_and_books_nothing(redis_client):
    lim = limiter(redis_client, rate=1, burst=1, max_wait=0.3)
    lim.acquire()
    for _ in range(2):  # the refused call did not push the schedule further out
        with pytest.raises(RateLimited) as err:
            lim.acquire()
        assert err.value.retry_after == pytest.approx(1.0, abs=0.1)
        assert err.value.retryable is True
    assert "provider=acme" in str(err.value)


def _evalsha_calls(client) -> int:
    return client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def test_seed_limits_ask_redis_for_every_request(redis_client):
    lim = limiter(redis_client, rate=4, burst=10, headroom=1)
    assert lim.lease_size == 1
    # Count this client's script calls (the server's commandstats also count other tests'
    # threads still winding down on the same Redis).
    lim.acquire()  # loads the script into this server (a first EVALSHA may meet NOSCRIPT)
    calls = []
    real = redis_client.evalsha
    redis_client.evalsha = lambda *a, **kw: (calls.append(a[0]), real(*a, **kw))[1]
    before = _evalsha_calls(redis_client)
    for _ in range(5):
        lim.acquire()
    assert len(calls) == 5 and _evalsha_calls(redis_client) >= before + 5


def test_high_limits_lease_slots_so_most_requests_skip_redis(redis_client):
    lim = limiter(redis_client, rate=10_000, burst=10_000, headroom=1)
    assert lim.lease_size == 16
    before = _evalsha_calls(redis_client)
    for _ in range(64):
        assert lim.acquire().waited == 0
    assert _evalsha_calls(redis_client) - before <= 16  # ~4 when nothing stalls for 10 ms


def test_leases_never_let_more_than_the_burst_through(redis_client):
    # 1000 req/s: a leased slot may leave up to 10 ms late, so 10 more slots stay unused.
    lim = limiter(redis_client, rate=1000, burst=100, headroom=1, max_wait=0)
    assert lim.lease_size == 10
    admitted = 0
    started = time.monotonic()
    with pytest.raises(RateLimited):
        for _ in range(200):
            lim.acquire()
            admitted += 1
    # The bucket refills at 1 slot per ms while the loop runs (slowly, on a loaded machine):
    # what may pass is the burst plus what the elapsed time refilled — never more.
    refilled = int((time.monotonic() - started) * 1000) + 1
    assert 80 <= admitted <= 100 + refilled


def test_the_limit_is_shared_per_provider_account(redis_url, provider_server, open_session, kit):
    provider = kit.make_provider(rate_limits=RateLimits(requests_per_second=5, burst_size=1))
    clients = [redis_lib.Redis.from_url(redis_url) for _ in range(3)]
    try:
        a = open_session(provider_server.url, provider=provider, redis=clients[0],
                         install_id="i1", account_id="portal-1",
                         env={"NEXUS_RATE_LIMIT_MAX_WAIT": "0"})
        b = open_session(provider_server.url, provider=provider, redis=clients[1],
                         install_id="i2", account_id="portal-1",
                         env={"NEXUS_RATE_LIMIT_MAX_WAIT": "0"})
        other = open_session(provider_server.url, provider=provider, redis=clients[2],
                             install_id="i3", account_id="portal-2",
                             env={"NEXUS_RATE_LIMIT_MAX_WAIT": "0"})
        a.get("/x")
        with pytest.raises(RateLimited):
            b.get("/x")  # same account: the slot is taken
        other.get("/x")  # another account has its own bucket
        assert len(provider_server.seen) == 2
    finally:
        for c in clients:
            c.close()


def test_installation_config_overrides_the_providers_rate_limits(
    redis_client, provider_server, open_session
):
    session = open_session(provider_server.url, redis=redis_client,
                           config={"rate_limits": {"requests_per_second": 4, "burst_size": 1}})
    assert (session.limiter.requests_per_second, session.limiter.burst_size) == (4, 1)
    session.get("/a")
    session.get("/b")
    first, second = provider_server.seen
    assert second.at - first.at == pytest.approx(0.25, abs=0.05)


def test_seed_provider_defaults_are_the_limits(redis_client, open_session, kit):
    for rps, burst in ((4, 10), (1, 3), (2, 5)):  # HubSpot, Slack, Salesforce
        provider = kit.make_provider(rate_limits=RateLimits(rps, burst))
        session = open_session("http://127.0.0.1:9", provider=provider, redis=redis_client)
        assert (session.limiter.requests_per_second, session.limiter.burst_size) == (rps, burst)


def test_a_429_sets_a_cooldown_and_the_request_resumes_after_it(
    redis_client, provider_server, open_session, kit
):
    provider_server.script(kit.json_answer(429, {"ok": False, "error": "ratelimited"},
                                           **{"Retry-After": "1"}),
                           kit.json_answer(200, {"ok": True}))
    before = REGISTRY.get_sample_value(
        "nexus_http_retries_total", {"provider": "acme", "reason": "rate_limited"}) or 0
    session = open_session(provider_server.url, redis=redis_client)
    assert session.get("/conversations.list").status_code == 200
    first, second = provider_server.seen
    assert second.at - first.at >= 0.95
    assert REGISTRY.get_sample_value(
        "nexus_http_retries_total", {"provider": "acme", "reason": "rate_limited"}) == before + 1


def test_a_long_429_cooldown_raises_rate_limited_in_every_worker_of_the_account(
    redis_url, provider_server, open_session, kit
):
    provider_server.script(kit.json_answer(429, {}, **{"Retry-After": "30"}),
                           kit.json_answer(200, {}))
    clients = [redis_lib.Redis.from_url(redis_url) for _ in range(2)]
    try:
        a = open_session(provider_server.url, redis=clients[0], install_id="i1", account_id="T1")
        b = open_session(provider_server.url, redis=clients[1], install_id="i2", account_id="T1")
        started = time.monotonic()
        with pytest.raises(RateLimited) as err_a:
            a.get("/x")
        with pytest.raises(RateLimited) as err_b:
            b.get("/x")  # never reaches the provider during the cool-down
    finally:
        for c in clients:
            c.close()
    assert time.monotonic() - started < 1
    assert err_a.value.retry_after == pytest.approx(30, abs=0.5)
    assert err_a.value.status == 429
    assert err_b.value.retry_after == pytest.approx(30, abs=0.5)
    assert len(provider_server.seen) == 1


def test_a_429_without_retry_after_cools_down_for_the_providers_refill_time(
    redis_client, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(429, {}))
    provider = kit.make_provider(rate_limits=RateLimits(requests_per_second=2, burst_size=5))
    session = open_session(provider_server.url, provider=provider, redis=redis_client,
                           env={"NEXUS_RATE_LIMIT_MAX_WAIT": "1"})
    with pytest.raises(RateLimited) as err:
        session.get("/x")
    assert err.value.retry_after == pytest.approx(2.5)
    assert redis_client.pttl(session.limiter.cooldown_key) > 2000


def _run_workers(specs: list[dict]) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, str(WORKER), json.dumps(spec)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for spec in specs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


@pytest.mark.slow
def test_several_processes_never_exceed_the_shared_limit(redis_url, provider_server, kit):
    rate, burst, duration = 10.0, 5, 2.5
    bucket = kit.TokenBucket(rate, burst)
    answers = {"429": 0}

    def app(req):
        if bucket.take(time.monotonic()):
            return kit.json_answer(200, {"results": []})
        answers["429"] += 1
        return kit.json_answer(429, {}, **{"Retry-After": "1"})

    provider_server.answer(app)
    start_at = time.time() + 2.0
    specs = [dict(redis_url=redis_url, base_url=provider_server.url, install_id=f"i{n}",
                  account_id="portal-1", rate=rate, burst=burst, start_at=start_at,
                  duration=duration) for n in range(3)]
    results = _run_workers(specs)
    seen = provider_server.seen
    span = seen[-1].at - seen[0].at
    assert answers["429"] == 0
    assert len(seen) <= rate * span + burst
    assert len(seen) >= 0.8 * (rate * duration + burst)  # shared fairly, not starved
    assert all(r["ok"] > 5 and not r["errors"] for r in results), results


@pytest.mark.slow
def test_a_429_storm_across_processes_is_obeyed_then_work_resumes(
    redis_url, provider_server, kit
):
    storm = {"until": None}
    answered_429: list[float] = []

    def app(req):
        if storm["until"] is None:
            storm["until"] = req.at + 0.3
        if req.at < storm["until"]:
            answered_429.append(req.at)
            return kit.json_answer(429, {"ok": False, "error": "ratelimited"},
                                   **{"Retry-After": "1"})
        return kit.json_answer(200, {"ok": True})

    provider_server.answer(app)
    start_at = time.time() + 2.0
    specs = [dict(redis_url=redis_url, base_url=provider_server.url, install_id=f"i{n}",
                  account_id="T1", rate=50.0, burst=10, start_at=start_at, requests=4)
             for n in range(3)]
    results = _run_workers(specs)
    assert [r["ok"] for r in results] == [4, 4, 4], results  # everyone resumed
    assert answered_429, "the storm was not hit"
    arrivals = [s.at for s in provider_server.seen]
    for t429 in answered_429:
        # Nobody sent during a cool-down (in-flight requests may land just after a 429).
        assert not [a for a in arrivals if t429 + 0.1 < a < t429 + 0.95], (t429, arrivals)


def test_the_limiter_script_survives_a_redis_restart(provider_server, open_session):
    with RedisServer() as server:
        client = redis_lib.Redis.from_url(server.url)
        try:
            session = open_session(provider_server.url, redis=client)
            session.get("/a")
            server.restart()  # scripts are gone: the next EVALSHA answers NOSCRIPT
            assert client.script_exists(session.limiter._admit.sha) == [False]
            assert session.get("/b").status_code == 200
            assert client.exists(session.limiter.key) == 1  # the limiter ran again
        finally:
            client.close()


def test_redis_unreachable_fails_open_and_says_so(provider_server, open_session, log_records):
    # No client-side retries: redis-py 8's default retries a dead server for ~3 s per call.
    client = redis_lib.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2,
                             retry=Retry(NoBackoff(), 0))
    before = REGISTRY.get_sample_value("nexus_redis_fail_open_total",
                                       {"component": "ratelimit"}) or 0
    try:
        session = open_session(provider_server.url, redis=client)
        for _ in range(3):
            assert session.get("/a").status_code == 200
    finally:
        client.close()
    warnings = [r for r in log_records if "FAILS OPEN" in r["message"]]
    assert len(warnings) == 1  # once per outage window, not per request
    assert REGISTRY.get_sample_value("nexus_redis_fail_open_total",
                                     {"component": "ratelimit"}) == before + 1


# -- named buckets (HubSpot's search API, Slack's method tiers) ---------------------------------

def _bucketed(kit, **main):
    return kit.make_provider(rate_limits=RateLimits(
        main.get("rps", 5), main.get("burst", 1),
        buckets={"search": RateLimits(5, 1), "tier2": {"requests_per_second": 5,
                                                       "burst_size": 1}}))


def test_a_request_naming_a_bucket_draws_from_that_bucket_only(
    redis_client, provider_server, open_session, kit
):
    session = open_session(provider_server.url, provider=_bucketed(kit), redis=redis_client,
                           env={"NEXUS_RATE_LIMIT_MAX_WAIT": "0"})
    session.get("/objects")
    session.post("/search", json={}, rate_limit_bucket="search")  # its own budget
    session.get("/conversations", rate_limit_bucket="tier2")
    with pytest.raises(RateLimited) as main:
        session.get("/objects")
    with pytest.raises(RateLimited) as search:
        session.post("/search", json={}, rate_limit_bucket="search")
    assert "bucket search" in search.value.message and "bucket" not in main.value.message
    assert len(provider_server.seen) == 3


def test_a_429_in_a_bucket_cools_down_that_bucket_and_nothing_else(
    redis_client, provider_server, open_session, kit
):
    def app(req):
        if req.path == "/search":
            return kit.json_answer(429, {"error": "secondly"}, **{"Retry-After": "30"})
        return kit.json_answer(200, {"ok": True})

    provider_server.answer(app)
    provider = kit.make_provider(rate_limits=RateLimits(1000, 1000, buckets={
        "search": RateLimits(1000, 1000)}))
    session = open_session(provider_server.url, provider=provider, redis=redis_client)
    with pytest.raises(RateLimited) as err:
        session.post("/search", json={}, rate_limit_bucket="search")
    assert err.value.retry_after == pytest.approx(30, abs=0.5)
    assert "(bucket search)" in err.value.message
    for _ in range(3):  # the main budget is not cooling down
        assert session.get("/objects").status_code == 200
    with pytest.raises(RateLimited):  # the search bucket is: nothing is sent
        session.post("/search", json={}, rate_limit_bucket="search")
    assert [r.path for r in provider_server.seen] == ["/search"] + ["/objects"] * 3
    assert redis_client.pttl(session._limiter("search").cooldown_key) > 25_000
    assert redis_client.pttl(session.limiter.cooldown_key) < 0


def test_an_undeclared_bucket_is_an_error_that_names_the_declared_ones(
    redis_client, provider_server, open_session, kit
):
    from nexus_core.errors import PluginError

    session = open_session(provider_server.url, provider=_bucketed(kit), redis=redis_client)
    with pytest.raises(PluginError, match="no rate-limit bucket 'serch'; its buckets: "
                                          "search, tier2"):
        session.get("/x", rate_limit_bucket="serch")
    assert provider_server.seen == []


def test_an_installation_tier_raises_or_lowers_a_bucket_and_the_main_budget(
    redis_client, provider_server, open_session, kit
):
    config = {"rate_limits": {"requests_per_second": 20, "burst_size": 3,
                              "buckets": {"search": {"burst_size": 2}}}}
    session = open_session(provider_server.url, provider=_bucketed(kit), redis=redis_client,
                           config=config, env={"NEXUS_RATE_LIMIT_MAX_WAIT": "0",
                                               "NEXUS_RATE_LIMIT_HEADROOM": "0"})
    assert session.rate_limits == RateLimits(20, 3, buckets={
        "search": RateLimits(5, 2), "tier2": RateLimits(5, 1)})
    admitted = {"main": 0, "search": 0}
    for bucket, path in (("main", "/objects"), ("search", "/search")):
        with pytest.raises(RateLimited):
            for _ in range(10):
                session.get(path, rate_limit_bucket=None if bucket == "main" else bucket)
                admitted[bucket] += 1
    assert admitted == {"main": 3, "search": 2}  # each burst, then a wait the budget refuses


def test_bucket_declarations_are_checked():
    with pytest.raises(ValueError, match="bucket name"):
        RateLimits(buckets={"a b": RateLimits()})
    with pytest.raises(ValueError, match="cannot have buckets of its own"):
        RateLimits(buckets={"a": RateLimits(buckets={"b": RateLimits()})})
    with pytest.raises(TypeError):
        RateLimits(buckets={"a": 5})
