"""A provider-declared long-window quota (``Provider.quota``): the share of it kept free for
the account's other clients, read from the provider's own usage headers through the
``parse_rate_limit`` hook, against a real local server and a real Redis."""

import pytest

from nexus_core import hookimpl
from nexus_core.errors import RateLimited
from nexus_core.models import Quota, RateLimits
from nexus_core.ratelimit import cooldowns


class QuotaReporting:
    """Reports its daily quota in ``X-Usage: used/max`` (Salesforce's Sforce-Limit-Info, say)."""

    def __init__(self, provider):
        self.provider = provider

    @hookimpl
    def nexus_provider(self):
        return self.provider

    @hookimpl
    def backfill(self, ctx, stream, cursor):
        return None

    @hookimpl
    def parse_rate_limit(self, provider, headers):
        used, _, cap = (headers.get("X-Usage") or "").partition("/")
        if not (used.isdigit() and cap.isdigit()):
            return None
        return {"quota_used": int(used), "quota_max": int(cap)}


@pytest.fixture
def reporting(nexus_registry, kit):
    provider = kit.make_provider(
        id="daily", name="Daily", quota=Quota(reserve=0.2, pause=1800),
        rate_limits=RateLimits(1000, 1000, buckets={"bulk": RateLimits(1000, 1000)}))
    nexus_registry.register(QuotaReporting(provider), "daily")
    return provider


def _usage(kit, *used):
    answers = [kit.json_answer(200, {"n": n}, **{"X-Usage": f"{n}/100"}) for n in used]
    return answers


def test_reaching_the_reserve_pauses_every_request_of_the_account_after_that_answer(
    reporting, nexus_registry, redis_client, provider_server, open_session, kit
):
    provider_server.script(*_usage(kit, 70, 80, 10))
    session = open_session(provider_server.url, provider=reporting, registry=nexus_registry,
                           redis=redis_client, account_id="org-1")
    assert session.get("/a").json() == {"n": 70}  # 70 of 100: below the 80 allowed
    assert session.get("/b").json() == {"n": 80}  # the answer that reaches it is returned
    with pytest.raises(RateLimited) as err:
        session.get("/c")
    assert 1790 < err.value.retry_after <= 1800
    assert "quota reserve reached: 80 of 100 used, 20% kept free for other clients" in \
        err.value.message
    # every budget of the account, in any process: nothing reaches the provider meanwhile
    other = open_session(provider_server.url, provider=reporting, registry=nexus_registry,
                         redis=redis_client, account_id="org-1", install_id="i2")
    with pytest.raises(RateLimited):
        other.get("/d", rate_limit_bucket="bulk")
    assert len(provider_server.seen) == 2
    assert session.rate_limit_status() == {"quota_used": 80, "quota_max": 100}
    (paused,) = [p for p in cooldowns(redis_client) if p["bucket"] is None]
    assert paused["provider"] == "daily" and paused["account"] == "org-1"
    assert 1790 < paused["seconds"] <= 1800 and paused["reason"].startswith("quota reserve")
    assert {p["bucket"] for p in cooldowns(redis_client)} == {None, "bulk"}
    # another account of the same provider is not paused
    third = open_session(provider_server.url, provider=reporting, registry=nexus_registry,
                         redis=redis_client, account_id="org-2", install_id="i3")
    assert third.get("/e").status_code == 200


@pytest.mark.parametrize(("config", "pauses_at"), [
    ({"quota": {"reserve": 0.5}}, 50),  # this customer keeps half for its other integrations
    ({"quota": {"reserve": 0}}, None),  # ... or none
    ({}, 80),  # the provider's share
])
def test_an_installation_sets_its_own_share(
    reporting, nexus_registry, redis_client, provider_server, open_session, kit, config,
    pauses_at
):
    provider_server.script(*_usage(kit, 49, 50, 80, 99, 99))
    session = open_session(provider_server.url, provider=reporting, registry=nexus_registry,
                           redis=redis_client, account_id="org-1", config=config)
    seen = []
    for _ in range(4):
        try:
            seen.append(session.get("/x").json()["n"])
        except RateLimited:
            break
    assert seen[-1] == (pauses_at or 99)


def test_without_a_declared_quota_usage_headers_pause_nothing(
    nexus_registry, redis_client, provider_server, open_session, kit
):
    provider = kit.make_provider(id="noquota", name="No quota")
    nexus_registry.register(QuotaReporting(provider), "noquota")
    provider_server.script(*_usage(kit, 100, 100))
    session = open_session(provider_server.url, provider=provider, registry=nexus_registry,
                           redis=redis_client, account_id="org-1")
    assert [session.get("/x").status_code for _ in range(2)] == [200, 200]


def test_quota_values_are_checked():
    from nexus_core.models import quota_problems

    for bad in (1, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="reserve"):
            Quota(reserve=bad)
    with pytest.raises(ValueError, match="pause"):
        Quota(pause=0)
    for bad in (1, 1.5, -0.1, True, "0.2"):
        assert quota_problems({"reserve": bad})
    assert quota_problems({"pause": 0}) and quota_problems({"pause": float("inf")})
    assert quota_problems({"reserved": 0.2}) == [
        "quota: unknown key(s) reserved; known: reserve, pause"]
    assert quota_problems([]) and quota_problems(None) == []
    assert quota_problems({"reserve": 0.25, "pause": 600}) == []
    quota = Quota(0.2, 60)
    assert quota.with_overrides({"reserve": 2}) == quota  # unusable: ignored here
    assert quota.with_overrides({"reserve": 0.5}).reserve == 0.5
    assert not quota.reached({"quota_used": True, "quota_max": 1})
    assert not quota.reached({"quota_used": 5, "quota_max": 0})
    assert not quota.reached({"quota_used": float("nan"), "quota_max": 10})
    assert quota.reached({"quota_used": 8.0, "quota_max": 10})


def test_an_installations_quota_config_is_validated(reporting, nexus_registry, kit):
    from nexus_core.service import IntegrationService

    service = IntegrationService(kit.make_settings(), nexus_registry)
    assert service.validate_connector_config("daily", {"quota": {"reserve": 0.3}}).valid
    bad = service.validate_connector_config("daily", {"quota": {"reserve": 1}})
    assert bad.errors == ["quota.reserve must be a share from 0 to below 1 (0.2: keep a fifth "
                          "of the quota free)"]
    nexus_registry.register(QuotaReporting(kit.make_provider(id="plain", name="Plain")), "plain")
    none = service.validate_connector_config("plain", {"quota": {"reserve": 0.3}})
    assert none.errors == ["quota: plain declares no quota whose share could be kept free"]
