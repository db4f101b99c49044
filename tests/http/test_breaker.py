"""The circuit breaker: per installation, state in Redis, one half-open probe across workers."""

from __future__ import annotations

import threading
import time

import pytest
import redis as redis_lib
from prometheus_client import REGISTRY

from nexus_core.errors import ProviderError, ProviderUnavailable
from nexus_core.models import Credentials, RetryConfig


@pytest.fixture
def no_retry_provider(kit):
    return kit.make_provider(retry=RetryConfig(max_retries=0))


def _fail_until_open(session, threshold=3):
    for _ in range(threshold):
        with pytest.raises(ProviderError) as err:
            session.get("/items")
        assert not isinstance(err.value, ProviderUnavailable)


@pytest.fixture
def per_installation_series():
    """nexus_breaker_state has one series per installation: kept only with
    NEXUS_METRICS_TENANT_LABELS on."""
    from nexus_core import metrics

    metrics.reset_tenant_labels(True)
    yield
    metrics.reset_tenant_labels(None)


def test_a_500_storm_opens_the_breaker_for_that_installation_only(
    redis_url, provider_server, open_session, kit, no_retry_provider, per_installation_series
):
    def app(req):  # the provider fails for one installation's account only
        if req.headers.get("Authorization") == "Bearer broken":
            return kit.json_answer(500, {"message": "internal error"})
        return kit.json_answer(200, {"results": []})

    provider_server.answer(app)
    clients = [redis_lib.Redis.from_url(redis_url) for _ in range(2)]
    try:
        broken = open_session(provider_server.url, provider=no_retry_provider,
                              redis=clients[0], install_id="i-broken",
                              credentials=lambda: Credentials(access_token="broken"))
        healthy = open_session(provider_server.url, provider=no_retry_provider,
                               redis=clients[1], install_id="i-healthy",
                               credentials=lambda: Credentials(access_token="fine"))
        _fail_until_open(broken)
        hits = len(provider_server.seen)
        with pytest.raises(ProviderUnavailable) as err:
            broken.get("/items")
        assert len(provider_server.seen) == hits  # failed fast, the provider was not called
        assert 0 < err.value.retry_after <= 1.0
        assert err.value.retryable is True
        assert "install=i-broken" in str(err.value)
        for _ in range(3):  # same provider, another installation: unaffected
            assert healthy.get("/items").status_code == 200
        assert REGISTRY.get_sample_value(
            "nexus_breaker_state", {"provider": "acme", "install_id": "i-broken"}) == 2
    finally:
        for c in clients:
            c.close()


def test_a_success_resets_the_consecutive_failure_count(
    redis_client, provider_server, open_session, kit, no_retry_provider
):
    provider_server.script(kit.json_answer(500, {}), kit.json_answer(500, {}),
                           kit.json_answer(200, {}), kit.json_answer(500, {}),
                           kit.json_answer(500, {}), kit.json_answer(200, {}))
    session = open_session(provider_server.url, provider=no_retry_provider, redis=redis_client)
    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(session.get("/items").status_code)
        except ProviderError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["ProviderError", "ProviderError", 200,
                        "ProviderError", "ProviderError", 200]


def test_connection_failures_count_towards_opening_the_breaker(
    redis_client, open_session, no_retry_provider
):
    from nexus_core.testing import free_port

    session = open_session(f"http://127.0.0.1:{free_port()}", provider=no_retry_provider,
                           redis=redis_client)
    _fail_until_open(session)
    with pytest.raises(ProviderUnavailable):
        session.get("/items")


def test_half_open_lets_exactly_one_probe_through_across_workers(
    redis_url, provider_server, open_session, kit, no_retry_provider
):
    failing = {"on": True, "slow": 1}

    def app(req):
        if failing["on"]:
            return kit.json_answer(500, {})
        if failing["slow"]:
            failing["slow"] -= 1
            time.sleep(0.3)  # the probe is slow: everyone else arrives while it is in flight
        return kit.json_answer(200, {})

    provider_server.answer(app)
    clients = [redis_lib.Redis.from_url(redis_url) for _ in range(6)]
    try:
        workers = [open_session(provider_server.url, provider=no_retry_provider, redis=c)
                   for c in clients]
        _fail_until_open(workers[0])
        failing["on"] = False
        time.sleep(1.05)  # NEXUS_BREAKER_COOLDOWN=1 in these tests
        before = len(provider_server.seen)
        outcomes: list[str] = []
        barrier = threading.Barrier(len(workers))

        def call(session):
            barrier.wait()
            try:
                outcomes.append(str(session.get("/items").status_code))
            except ProviderUnavailable:
                outcomes.append("unavailable")

        threads = [threading.Thread(target=call, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(outcomes) == ["200"] + ["unavailable"] * 5
        assert len(provider_server.seen) == before + 1
        # The probe succeeded: the breaker is closed for everyone again.
        assert all(w.get("/items").status_code == 200 for w in workers)
    finally:
        for c in clients:
            c.close()


def test_a_failed_probe_opens_the_breaker_again(
    redis_client, provider_server, open_session, kit, no_retry_provider
):
    provider_server.answer(lambda req: kit.json_answer(503, {}))
    session = open_session(provider_server.url, provider=no_retry_provider, redis=redis_client)
    _fail_until_open(session)
    time.sleep(1.05)
    with pytest.raises(ProviderError) as probe:
        session.get("/items")  # the probe: it reaches the provider and fails
    assert not isinstance(probe.value, ProviderUnavailable)
    with pytest.raises(ProviderUnavailable) as err:
        session.get("/items")
    assert err.value.retry_after == pytest.approx(1.0, abs=0.2)  # a full new cool-down


def test_a_probe_gets_a_single_attempt(redis_client, provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(503, {}))
    session = open_session(provider_server.url, redis=redis_client)  # 2 retries normally
    _fail_until_open(session)
    hits = len(provider_server.seen)
    time.sleep(1.05)
    with pytest.raises(ProviderError):
        session.get("/items")
    assert len(provider_server.seen) == hits + 1


def test_the_breaker_fails_open_when_redis_is_unreachable(
    provider_server, open_session, kit, no_retry_provider
):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from nexus_core.testing import free_port

    provider_server.answer(lambda req: kit.json_answer(500, {}))
    client = redis_lib.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    try:
        session = open_session(provider_server.url, provider=no_retry_provider, redis=client)
        for _ in range(5):  # never ProviderUnavailable: without Redis the breaker lets all pass
            with pytest.raises(ProviderError) as err:
                session.get("/items")
            assert not isinstance(err.value, ProviderUnavailable)
    finally:
        client.close()
    assert len(provider_server.seen) == 5


def test_a_probe_whose_worker_died_is_replaced_after_its_lease(redis_client):
    from nexus_core.breaker import Admission, BreakerPolicy, CircuitBreaker
    from nexus_core.ratelimit import RateLimiter

    def worker():
        breaker = CircuitBreaker(redis_client, provider_id="acme", tenant_id="t1",
                                 install_id="i1", policy=BreakerPolicy(2, cooldown=0.2),
                                 probe_ttl=0.3)
        limiter = RateLimiter(redis_client, provider_id="acme", account="a",
                              requests_per_second=1000, burst_size=1000)
        return breaker, limiter

    breaker, limiter = worker()
    for _ in range(2):
        breaker.record(limiter.acquire(breaker, lease=False), ok=False)
    time.sleep(0.25)
    probe = limiter.acquire(breaker, lease=False)
    assert probe.probe is True  # ... and this worker dies without recording an outcome
    with pytest.raises(ProviderUnavailable) as err:
        limiter.acquire(breaker, lease=False)
    assert err.value.retry_after <= 0.3
    time.sleep(0.35)
    other_breaker, other_limiter = worker()
    replacement = other_limiter.acquire(other_breaker, lease=False)
    assert replacement.probe is True
    other_breaker.record(replacement, ok=True)
    assert other_limiter.acquire(other_breaker, lease=False) == Admission()


def test_without_tenant_labels_no_series_is_kept_per_installation(
    redis_url, provider_server, open_session, kit, no_retry_provider
):
    from nexus_core import metrics

    metrics.reset_tenant_labels(False)
    provider_server.answer(lambda req: kit.json_answer(500, {"message": "down"}))
    client = redis_lib.Redis.from_url(redis_url)
    try:
        session = open_session(provider_server.url, provider=no_retry_provider, redis=client,
                               install_id="i-unlabelled",
                               credentials=lambda: Credentials(access_token="x"))
        _fail_until_open(session)
        assert REGISTRY.get_sample_value(
            "nexus_breaker_state", {"provider": "acme", "install_id": "i-unlabelled"}) is None
        assert REGISTRY.get_sample_value(
            "nexus_breaker_transitions_total", {"provider": "acme", "state": "open"}) >= 1
    finally:
        client.close()
        metrics.reset_tenant_labels(None)
