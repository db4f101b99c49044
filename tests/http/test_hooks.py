"""The per-provider hooks the client calls: ``is_token_expired``, ``parse_rate_limit`` and
``should_retry`` (with the per-provider ``RetryConfig.retry_statuses``)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from nexus_core import hookimpl
from nexus_core.errors import ProviderError, ProviderUnavailable
from nexus_core.models import BodyErrors, Credentials, RetryConfig


class HubSpotLike:
    """Expired = 401 with category EXPIRED_AUTHENTICATION; X-HubSpot-RateLimit-* headers."""

    def __init__(self, provider):
        self.provider = provider

    @hookimpl
    def nexus_provider(self):
        return self.provider

    @hookimpl
    def backfill(self, ctx, stream, cursor):
        return None

    @hookimpl
    def is_token_expired(self, provider, status, headers, body):
        return status == 401 and b"EXPIRED_AUTHENTICATION" in body

    @hookimpl
    def parse_rate_limit(self, provider, headers):
        if "x-hubspot-ratelimit-remaining" not in headers:  # headers are case-insensitive
            return None
        return {"remaining": int(headers["X-HubSpot-RateLimit-Remaining"]),
                "max": int(headers["X-HubSpot-RateLimit-Max"])}


class SlackLike(HubSpotLike):
    @hookimpl
    def is_token_expired(self, provider, status, headers, body):
        return b'"error": "invalid_auth"' in body or b'"error":"invalid_auth"' in body


@pytest.fixture
def hubspot(nexus_registry, kit):
    provider = kit.make_provider(id="hubspotlike", name="HubSpot-like")
    nexus_registry.register(HubSpotLike(provider), "hubspotlike")
    return provider


def _token_app(kit, expired_answer):
    def app(req):
        if req.headers.get("Authorization") == "Bearer fresh":
            return kit.json_answer(200, {"ok": True})
        return expired_answer

    return app


def test_hook_is_token_expired_triggers_one_refresh(
    hubspot, nexus_registry, provider_server, open_session, kit
):
    provider_server.answer(_token_app(kit, kit.json_answer(401, {
        "status": "error", "category": "EXPIRED_AUTHENTICATION",
        "message": "The OAuth token used to make this call expired 5 minute(s) ago."})))
    refreshed = []
    session = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                           credentials=lambda: Credentials(access_token="stale"),
                           refresh=lambda old: refreshed.append(old) or
                           Credentials(access_token="fresh"))
    assert session.get("/crm/v3/objects/contacts").status_code == 200
    assert len(refreshed) == 1 and len(provider_server.seen) == 2


def test_hook_is_token_expired_false_means_a_401_is_returned_untouched(
    hubspot, nexus_registry, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(401, {"category": "INVALID_AUTHENTICATION"}))
    refreshed = []
    session = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                           credentials=lambda: Credentials(access_token="bad"),
                           refresh=lambda old: refreshed.append(old))
    assert session.get("/x").status_code == 401
    assert refreshed == [] and len(provider_server.seen) == 1


def test_hook_is_token_expired_sees_slack_style_200_errors(
    nexus_registry, provider_server, open_session, kit
):
    provider = kit.make_provider(id="slacklike", name="Slack-like", body_errors=BodyErrors())
    nexus_registry.register(SlackLike(provider), "slacklike")
    provider_server.answer(_token_app(kit, kit.json_answer(200, {"ok": False,
                                                                 "error": "invalid_auth"})))
    session = open_session(provider_server.url, provider=provider, registry=nexus_registry,
                           credentials=lambda: Credentials(access_token="stale"),
                           refresh=lambda old: Credentials(access_token="fresh"))
    assert session.get("/api/conversations.list").json() == {"ok": True}
    assert len(provider_server.seen) == 2


def test_hook_parse_rate_limit_feeds_rate_limit_status_shared_through_redis(
    hubspot, nexus_registry, redis_client, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(200, {}, **{
        "X-HubSpot-RateLimit-Max": "110", "X-HubSpot-RateLimit-Remaining": "97"}))
    session = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                           redis=redis_client, account_id="portal-62515")
    session.get("/crm/v3/objects/contacts")
    assert session.rate_limit_status() == {"remaining": 97, "max": 110}
    # A health check in another process (a new session) reads the last shared status.
    other = open_session(provider_server.url, provider=hubspot, registry=nexus_registry,
                         redis=redis_client, account_id="portal-62515", install_id="i2")
    assert other.rate_limit_status() == {"remaining": 97, "max": 110}


# -- the retry policy: RetryConfig.retry_statuses and the should_retry hook ---------------------


class SlackLikeRetries(HubSpotLike):
    """Slack answers some transient failures inside an HTTP 200."""

    @hookimpl
    def should_retry(self, provider, status, headers, body):
        return status == 200 and (b'"internal_error"' in body or b'"fatal_error"' in body)


@pytest.fixture
def slack_retries(nexus_registry, kit):
    provider = kit.make_provider(id="slackretries", name="Slack-like",
                                 retry=RetryConfig(max_retries=2, max_backoff=0.05))
    nexus_registry.register(SlackLikeRetries(provider), "slackretries")
    return provider


def test_hook_should_retry_retries_an_error_inside_a_200_like_a_5xx(
    slack_retries, nexus_registry, provider_server, open_session, kit
):
    provider_server.script(kit.json_answer(200, {"ok": False, "error": "internal_error"}),
                           kit.json_answer(200, {"ok": False, "error": "fatal_error"}),
                           kit.json_answer(200, {"ok": True, "channels": []}))
    before = REGISTRY.get_sample_value("nexus_http_retries_total",
                                       {"provider": "slackretries", "reason": "should_retry"})
    session = open_session(provider_server.url, provider=slack_retries, registry=nexus_registry)
    assert session.get("/api/conversations.list").json() == {"ok": True, "channels": []}
    assert len(provider_server.seen) == 3
    after = REGISTRY.get_sample_value("nexus_http_retries_total",
                                      {"provider": "slackretries", "reason": "should_retry"})
    assert after - (before or 0) == 2


def test_hook_should_retry_gives_up_with_a_retryable_error_and_never_retries_a_post(
    slack_retries, nexus_registry, provider_server, open_session, kit
):
    provider_server.answer(lambda req: kit.json_answer(200, {"ok": False,
                                                             "error": "internal_error"}))
    session = open_session(provider_server.url, provider=slack_retries, registry=nexus_registry)
    with pytest.raises(ProviderError) as err:
        session.get("/api/conversations.history")
    assert err.value.retryable and err.value.status == 200
    assert "after 3 attempt(s)" in str(err.value)
    assert len(provider_server.seen) == 3
    with pytest.raises(ProviderError):
        session.post("/api/chat.postMessage", json={"text": "hi"})
    assert len(provider_server.seen) == 4  # a POST without idempotency key: one attempt
    # an answer the hook does not claim goes back to the connector untouched
    provider_server.answer(lambda req: kit.json_answer(200, {"ok": False,
                                                             "error": "channel_not_found"}))
    assert session.get("/api/conversations.info").json()["error"] == "channel_not_found"


def test_retry_statuses_are_per_provider(provider_server, open_session, kit):
    custom = kit.make_provider(retry=RetryConfig(max_retries=2, max_backoff=0.05,
                                                 retry_statuses=(503, 520)))
    provider_server.script(kit.json_answer(520, {}), kit.json_answer(200, {"ok": 1}))
    session = open_session(provider_server.url, provider=custom)
    assert session.get("/a").json() == {"ok": 1} and len(provider_server.seen) == 2
    provider_server.script(kit.json_answer(500, {"error": "not transient here"}))
    resp = session.get("/b")  # not one of this provider's retry statuses: returned as is
    assert resp.status_code == 500 and len(provider_server.seen) == 3
    with pytest.raises(ValueError, match="other than 429"):
        RetryConfig(retry_statuses=(429, 503))
    with pytest.raises(ValueError, match="200"):
        RetryConfig(retry_statuses=(200,))


def test_hook_should_retry_failures_open_the_circuit_breaker_like_5xx(
    nexus_registry, provider_server, open_session, kit, redis_client
):
    provider = kit.make_provider(id="slackbreaker", name="Slack-like",
                                 retry=RetryConfig(max_retries=0))
    nexus_registry.register(SlackLikeRetries(provider), "slackbreaker")
    provider_server.answer(lambda req: kit.json_answer(200, {"ok": False,
                                                             "error": "internal_error"}))
    session = open_session(provider_server.url, provider=provider, registry=nexus_registry,
                           redis=redis_client)
    for _ in range(3):  # NEXUS_BREAKER_FAILURE_THRESHOLD=3 in these tests
        with pytest.raises(ProviderError) as err:
            session.get("/api/users.list")
        assert not isinstance(err.value, ProviderUnavailable)
    with pytest.raises(ProviderUnavailable):
        session.get("/api/users.list")
    assert len(provider_server.seen) == 3  # the open breaker failed fast


# -- rate_limit_wait: a provider's own reading of "too many requests" ---------------------------


class QuotaAware(HubSpotLike):
    """A daily quota (any bucket) and a secondly limit on search, both 429s without
    Retry-After; a Salesforce-style 403 quota answer."""

    @hookimpl
    def rate_limit_wait(self, provider, status, headers, body):
        from nexus_core.models import RateLimitWait

        if b'"DAILY"' in body:
            return RateLimitWait(3 * 3600, scope="account", reason="DAILY limit")
        if b"REQUEST_LIMIT_EXCEEDED" in body:
            return RateLimitWait(600, scope="account", reason="daily API requests")
        if b"secondly" in body:
            return 0.0  # try again at once, after the cool-down of 0 s
        return None


@pytest.fixture
def quota_aware(nexus_registry, kit):
    from nexus_core.models import RateLimits

    provider = kit.make_provider(id="quota", name="Quota", rate_limits=RateLimits(
        1000, 1000, buckets={"search": RateLimits(1000, 1000)}))
    nexus_registry.register(QuotaAware(provider), "quota")
    return provider


def test_hook_rate_limit_wait_defers_every_bucket_of_the_account_until_a_daily_reset(
    quota_aware, nexus_registry, redis_client, provider_server, open_session, kit
):
    from nexus_core.errors import RateLimited

    provider_server.answer(lambda req: kit.json_answer(429, {
        "status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY",
        "message": "You have reached your daily limit."}))
    session = open_session(provider_server.url, provider=quota_aware, registry=nexus_registry,
                           redis=redis_client, account_id="portal-1")
    with pytest.raises(RateLimited) as err:
        session.get("/crm/v3/objects/contacts")
    assert err.value.retry_after == 3 * 3600 and err.value.status == 429
    assert "429 DAILY limit" in err.value.message and "every request of this account" in \
        err.value.message
    # No more requests for that account, whichever budget they draw from, in any session.
    other = open_session(provider_server.url, provider=quota_aware, registry=nexus_registry,
                         redis=redis_client, account_id="portal-1", install_id="i2")
    for call in (lambda: other.get("/crm/v3/objects/deals"),
                 lambda: other.post("/search", json={}, rate_limit_bucket="search")):
        with pytest.raises(RateLimited) as later:
            call()
        assert later.value.retry_after > 3 * 3600 - 60
    assert len(provider_server.seen) == 1


def test_hook_rate_limit_wait_reads_a_quota_answer_that_is_not_a_429(
    quota_aware, nexus_registry, redis_client, provider_server, open_session, kit
):
    from nexus_core.errors import RateLimited

    provider_server.answer(lambda req: kit.json_answer(403, [{
        "message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]))
    session = open_session(provider_server.url, provider=quota_aware, registry=nexus_registry,
                           redis=redis_client)
    with pytest.raises(RateLimited) as err:
        session.get("/services/data/v60.0/query")
    assert err.value.retry_after == 600 and err.value.status == 403
    provider_server.answer(lambda req: kit.json_answer(403, {"error": "forbidden"}))
    fresh = open_session(provider_server.url, provider=quota_aware, registry=nexus_registry,
                         redis=redis_client, install_id="other", account_id="elsewhere")
    assert fresh.get("/x").status_code == 403  # a plain 403 is the connector's to handle


def test_hook_rate_limit_wait_a_short_wait_is_slept_and_the_request_sent_again(
    quota_aware, nexus_registry, redis_client, provider_server, open_session, kit
):
    provider_server.script(kit.json_answer(429, {"message": "You have reached your secondly "
                                                 "limit.", "category": "RATE_LIMITS"}),
                           kit.json_answer(200, {"results": []}))
    session = open_session(provider_server.url, provider=quota_aware, registry=nexus_registry,
                           redis=redis_client)
    resp = session.post("/crm/v3/objects/contacts/search", json={}, rate_limit_bucket="search")
    assert resp.status_code == 200 and len(provider_server.seen) == 2


def test_hook_rate_limit_wait_nonsense_answers_are_ignored(
    nexus_registry, redis_client, provider_server, open_session, kit
):
    from nexus_core.errors import RateLimited

    class Confused(HubSpotLike):
        @hookimpl
        def rate_limit_wait(self, provider, status, headers, body):
            return "soon" if status == 418 else float("nan")

    provider = kit.make_provider(id="confused", name="Confused")
    nexus_registry.register(Confused(provider), "confused")
    provider_server.script(kit.json_answer(418, {}), kit.json_answer(429, {},
                                                                     **{"Retry-After": "30"}))
    session = open_session(provider_server.url, provider=provider, registry=nexus_registry,
                           redis=redis_client)
    assert session.get("/teapot").status_code == 418
    with pytest.raises(RateLimited) as err:  # a 429: its Retry-After, as without the hook
        session.get("/x")
    assert err.value.retry_after == pytest.approx(30, abs=0.5)
