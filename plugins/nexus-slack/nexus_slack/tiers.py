"""Slack's Web API rate limits: per method, per workspace, per app, in tiers of requests per
minute (providers.md 4, addendum 2.1). Each tier is its own budget: a request names the
bucket of its method, so a burst of ``conversations.history`` (Tier 3) never slows
``users.list`` (Tier 2) down, and a Tier 2 429 cools down Tier 2 only.

Budgets keep ``burst + rate x 60 s`` within the tier's per-minute limit, so no minute ever
exceeds it. The simulator enforces the same tiers (and can run them on a shorter "minute").
"""

from __future__ import annotations

from nexus_core import RateLimits

#: method -> bucket (methods not listed draw from the main budget: auth.test and others).
METHOD_BUCKETS = {
    "conversations.list": "tier2",
    "users.list": "tier2",
    "conversations.history": "tier3",
    "conversations.replies": "tier3",
}
#: The same methods for a commercially distributed app not approved for the Marketplace and
#: created on or after 2025-05-29 (``SLACK_HISTORY_LIMITED``): 1 request per minute and at most
#: 15 messages per page (addendum 2.1).
LIMITED_BUCKET = "history-limited"
LIMITED_PAGE_SIZE = 15

#: Requests per minute of each tier, as Slack documents them ("20+", "50+", "100+").
PER_MINUTE = {"main": 100, "tier2": 20, "tier3": 50, LIMITED_BUCKET: 1}


def budgets(minute: float = 60.0) -> RateLimits:
    """The shared budgets for tiers of ``PER_MINUTE`` requests per ``minute`` seconds (60:
    Slack's; a simulator may run on a shorter minute)."""

    def tier(per_minute: int, burst: int) -> RateLimits:
        return RateLimits(requests_per_second=(per_minute - burst) / minute, burst_size=burst)

    return RateLimits(
        requests_per_second=(PER_MINUTE["main"] - 4) / minute, burst_size=4,
        buckets={"tier2": tier(PER_MINUTE["tier2"], 2), "tier3": tier(PER_MINUTE["tier3"], 2),
                 # One a minute, spaced a tenth more: the provider's minute starts when it
                 # saw the last call, which arrives a little after it left.
                 LIMITED_BUCKET: RateLimits(requests_per_second=1 / (1.1 * minute),
                                            burst_size=1)})


def config_for(minute: float) -> dict[str, object]:
    """The installation config ``rate_limits`` that puts an installation on tiers of a
    ``minute`` seconds long (a simulator's accelerated clock)."""
    limits = budgets(minute)
    return {"requests_per_second": limits.requests_per_second,
            "burst_size": limits.burst_size,
            "buckets": {name: {"requests_per_second": b.requests_per_second,
                               "burst_size": b.burst_size}
                        for name, b in limits.buckets.items()}}
