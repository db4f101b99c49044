"""A provider accepting several signature schemes (``WebhookConfig.fallback_schemes``): the
delivery's own headers pick the scheme, the first declared one wins, a failure is never retried
with a weaker scheme, and no header an attacker sends makes the selection raise."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_core import webhooks as wh
from nexus_core.errors import WebhookRejected
from nexus_core.models import Provider, WebhookConfig, WebhookRequest
from nexus_core.plugins import provider_problems
from nexus_core.webhook_schemes import select_scheme

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
URL = "https://hooks.example.com/webhooks/crm"
BODY = b'[{"eventId":1,"portalId":62515}]'


def provider(scheme="hubspot-v3", fallback=("hubspot-v2", "hubspot-v1")) -> Provider:
    return Provider(id="crm", name="CRM", version="1", auth_type="none", streams=("s",),
                    webhook=WebhookConfig(scheme=scheme, fallback_schemes=fallback,
                                          secret_envs=("CRM_SECRET",)))


def v3(body=BODY, now=None):
    ts = str(int((now or time.time()) * 1000))
    return {"X-HubSpot-Signature-v3": wh.sign_hubspot_v3(SECRET, "POST", URL, body, ts),
            "X-HubSpot-Request-Timestamp": ts}


def v1(body=BODY):
    return {"X-HubSpot-Signature": wh.sign_hubspot_v1(SECRET, body),
            "X-HubSpot-Signature-Version": "v1"}


def v2(body=BODY):
    return {"X-HubSpot-Signature": wh.sign_hubspot_v2(SECRET, "POST", URL, body),
            "X-HubSpot-Signature-Version": "v2"}


def verify(p, headers, body=BODY):
    request = WebhookRequest(method="POST", url=URL, headers=headers, body=body)
    wh.verify_request(p, request, [SECRET], wh.Check(url=URL))


@pytest.mark.parametrize(("headers", "scheme"), [
    (v3, "hubspot-v3"), (v1, "hubspot-v1"), (v2, "hubspot-v2"),
    (lambda: {**v1(), **v3()}, "hubspot-v3"),  # both: the first declared wins
    (lambda: {}, "hubspot-v3"),                 # none: the main scheme (which rejects it)
    (lambda: {"X-HubSpot-Signature": "x"}, "hubspot-v3"),  # no version header: not v1
])
def test_the_delivery_headers_pick_the_first_declared_scheme_they_carry(headers, scheme):
    request = WebhookRequest(method="POST", url=URL, headers=headers(), body=BODY)
    assert select_scheme(provider(), request) == scheme


@pytest.mark.parametrize("headers", [v3, v1, v2])
def test_each_accepted_scheme_verifies_its_genuine_delivery(headers):
    verify(provider(), headers())


def test_v1_and_v2_are_refused_when_not_declared():
    with pytest.raises(WebhookRejected, match="missing X-HubSpot-Signature-v3"):
        verify(provider(fallback=()), v1())


def test_a_failing_scheme_is_not_retried_with_a_weaker_one():
    """A captured v1 signature (no timestamp: replayable forever) does not rescue a stale v3
    delivery that carries it too."""
    stale = v3(now=time.time() - 3600)
    with pytest.raises(WebhookRejected, match="window"):
        verify(provider(), {**v1(), **stale})
    tampered = {**v3(), **v1(b"[]")}
    with pytest.raises(WebhookRejected, match="mismatch"):
        verify(provider(), tampered, b"[]")


def test_fallback_schemes_are_checked_when_plugins_load():
    bad = provider(fallback=("hubspot-v9", "hubspot-v3", "custom"))
    assert provider_problems(bad, ["backfill"]) == [
        "unknown fallback webhook scheme 'hubspot-v9' (did you mean hubspot-v3?); known "
        "schemes: custom, hmac, hubspot-v1, hubspot-v2, hubspot-v3, slack-v0, "
        "standard-webhooks, stripe",
        "webhook scheme 'hubspot-v3' is listed twice (scheme and fallback_schemes)",
        "fallback webhook scheme 'custom' needs a verify_webhook hook",
    ]
    assert provider_problems(provider(), ["backfill"]) == []


_values = st.one_of(st.sampled_from(["v1", "V2", " v3 ", "", "v1,v2", "sha256=", "v0="]),
                    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40))
_names = st.sampled_from(["X-HubSpot-Signature", "X-HubSpot-Signature-Version",
                          "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp",
                          "webhook-signature", "X-Other"])


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(_names, _values, max_size=5), body=st.binary(max_size=100))
def test_any_headers_select_a_declared_scheme_and_are_rejected_unless_signed(headers, body):
    p = provider()
    request = WebhookRequest(method="POST", url=URL, headers=headers, body=body)
    assert select_scheme(p, request) in ("hubspot-v3", "hubspot-v2", "hubspot-v1")
    with pytest.raises(WebhookRejected) as err:
        wh.verify_request(p, request, [SECRET], wh.Check(url=URL))
    assert err.value.status == 401
