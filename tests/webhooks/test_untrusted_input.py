"""Untrusted input at the webhook ingress, property-based: whatever an unauthenticated caller puts
in the headers and the body, the answer is a 4xx (never a 500, never a traceback) and nothing is
enqueued. Covers every signature scheme's header parsing (random bytes, huge numbers, signs,
unicode, empty and repeated values)."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_core import webhooks as wh
from nexus_core.errors import WebhookRejected
from nexus_core.models import WebhookRequest

#: Header names each scheme reads (and a few it does not).
SCHEME_HEADERS = {
    "hubspot": ["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp",
                "X-HubSpot-Signature-Version", "X-HubSpot-Signature"],
    "hubspot-v1": ["X-HubSpot-Signature", "X-HubSpot-Signature-Version"],
    "hubspot-v2": ["X-HubSpot-Signature", "X-HubSpot-Signature-Version"],
    "slack": ["X-Slack-Signature", "X-Slack-Request-Timestamp", "X-Slack-Retry-Num"],
    "std": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "stripe-like": ["Stripe-Signature"],
    "custom": ["X-Custom-Token"],
}
ALLOWED = {400, 401, 404, 413}

# Header values as WSGI carries them: latin-1 text. Crafted shapes first, then anything.
_digits = st.integers(1, 600).map(lambda n: "9" * n)
_latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
header_value = st.one_of(
    _digits,
    _digits.map(lambda d: "-" + d),
    _digits.map(lambda d: f"t={d},v1=" + "a" * 64),
    _digits.map(lambda d: f"{d}.5"),
    st.sampled_from(["", " ", "v0=", "v1,", "v1,!!!", "t=,v1=", "1e999", "nan", "-0", "0x1F",
                     "١٧٠٠٠٠٠٠٠٠", "v0=" + "0" * 64, "t=1,t=2,v1=x,v1=y", "v2", "v1"]),
    _latin1,
    st.lists(_latin1, min_size=2, max_size=3).map(", ".join),  # repeated headers, joined
)
bodies = st.one_of(st.binary(max_size=300), st.just(b"[]"), st.just(b'{"portalId": 62515}'),
                   st.just(b"[" * 5000), st.just('{"é": "ü"}'.encode()))


def _headers(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from([*names, "X-Other"]), header_value, max_size=4)


@pytest.mark.parametrize("provider", list(SCHEME_HEADERS))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_unsigned_request_gets_a_4xx_and_nothing_is_enqueued(
    client, webhook_queue, provider, data
):
    headers = data.draw(_headers(SCHEME_HEADERS[provider]), label="headers")
    body = data.draw(bodies, label="body")
    path = data.draw(st.sampled_from([f"/webhooks/{provider}", f"/webhooks/{provider}/nope"]))
    result = client.simulate_post(path, headers=headers, body=body)
    assert result.status_code in ALLOWED, (result.status_code, result.text)
    assert result.json.get("error")
    assert webhook_queue.count == 0


@pytest.mark.parametrize("ts", ["9" * 400, "-" + "9" * 400, "1" + "0" * 310, "99999999999999999999"])
@pytest.mark.parametrize(
    ("provider", "header"),
    [("std", "webhook-timestamp"), ("slack", "X-Slack-Request-Timestamp"),
     ("hubspot", "X-HubSpot-Request-Timestamp"), ("stripe-like", "Stripe-Signature")],
)
def test_a_huge_timestamp_is_a_401_not_a_500(client, webhook_queue, h, provider, header, ts):
    """Defect 1: ~400 digits in a timestamp header raised OverflowError before the signature
    check (HTTP 500 to an unauthenticated caller)."""
    body = b'{"portalId": 62515, "team_id": "T1DC2JH3J"}'
    headers = {
        "std": h.std_headers(body), "slack": h.slack_headers(body),
        "hubspot": h.hubspot_headers(body), "stripe-like": h.stripe_headers(body),
    }[provider]
    headers[header] = f"t={ts},v1={'a' * 64}" if provider == "stripe-like" else ts
    result = client.simulate_post(f"/webhooks/{provider}", headers=headers, body=body)
    assert result.status_code == 401, result.text
    assert "timestamp" in result.json["error"] or "malformed" in result.json["error"]
    assert webhook_queue.count == 0


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(sorted(wh.SCHEMES)),
       headers=st.dictionaries(st.sampled_from(sorted({n for v in SCHEME_HEADERS.values()
                                                        for n in v})),
                               st.one_of(header_value, st.text(max_size=30)), max_size=5),
       body=st.binary(max_size=100))
def test_every_verifier_raises_only_a_401(scheme, headers, body):
    """The scheme functions themselves, with any str (lone surrogates included, as a Python
    caller of process_webhook could pass): a 401 WebhookRejected, or nothing when genuine."""
    request = WebhookRequest(method="POST", url="https://hooks.example.com/webhooks/x",
                             headers=headers, body=body)
    check = wh.Check(url=request.url, now=time.time(), tolerance=300)
    secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    try:
        wh.SCHEMES[scheme](request, secrets, check)
    except WebhookRejected as exc:
        assert exc.status == 401 and exc.message
    else:  # pragma: no cover - a random request that verifies would be a broken scheme
        pytest.fail(f"{scheme} accepted an unsigned request: {headers!r}")


# -- the OAuth routes: untrusted query strings ------------------------------------------------------

_param = st.one_of(st.text(max_size=40), st.sampled_from(["", "good-1", "a" * 500, "%00", "..",
                                                          "<script>", "\u202e"]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["token", "tenant_id", "install_id", "code",
                                               "state", "error", "error_description", "x"]),
                              _param, max_size=4),
       route=st.sampled_from(["authorize", "callback"]),
       provider=st.sampled_from(["hubspot", "slack", "nope", "x" * 300, "%2e%2e"]))
def test_oauth_routes_answer_4xx_to_anything_unsigned_and_store_nothing(
    client, store, params, route, provider
):
    import sqlalchemy as sa

    resp = client.simulate_get(f"/integrations/{provider}/{route}", params=params)
    assert resp.status_code in {400, 401, 403, 404}, (resp.status_code, resp.text)
    assert "<script>" not in resp.text  # what the provider or caller sent is escaped
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM nexus_oauth_states")).scalar() == 0


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                     blacklist_characters="/?#"), min_size=1, max_size=80))
def test_any_webhook_path_segment_is_a_4xx(client, webhook_queue, segment):
    from urllib.parse import quote

    for path in (f"/webhooks/{quote(segment)}", f"/webhooks/hubspot/{quote(segment)}"):
        resp = client.simulate_post(path, body=b"{}")
        assert resp.status_code in {401, 404}, (path, resp.status_code, resp.text)
    assert webhook_queue.count == 0
