"""The configurable HMAC scheme (``WebhookConfig(scheme="hmac", hmac=HmacSpec(...))``): GitHub's
documented example, Shopify-style base64, Slack's and HubSpot v3's official vectors expressed as
specs, timestamps, rotation, and random headers/bodies that only ever give a 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_core import HmacSpec, Provider, WebhookConfig
from nexus_core import webhooks as wh
from nexus_core.errors import WebhookRejected
from nexus_core.models import WebhookRequest

GITHUB = HmacSpec(header="X-Hub-Signature-256", prefix="sha256=")
SHOPIFY = HmacSpec(header="X-Shopify-Hmac-Sha256", encoding="base64")
SLACK_AS_HMAC = HmacSpec(header="X-Slack-Signature", prefix="v0=", message="v0:{timestamp}:{body}",
                         timestamp_header="X-Slack-Request-Timestamp")
HUBSPOT_V3_AS_HMAC = HmacSpec(header="X-HubSpot-Signature-v3", encoding="base64",
                              message="{method}{url}{body}{timestamp}",
                              timestamp_header="X-HubSpot-Request-Timestamp", timestamp_unit="ms")


def request(body: bytes, headers: dict[str, str], method: str = "POST",
            url: str = "https://hooks.example.com/webhooks/p") -> WebhookRequest:
    return WebhookRequest(method=method, url=url, headers=headers, body=body)


def check(now: float = 1_700_000_000.0, url: str = "https://hooks.example.com/webhooks/p",
          tolerance: float = 300) -> wh.Check:
    return wh.Check(url=url, now=now, tolerance=tolerance)


def test_github_documented_example():
    # docs.github.com "Validating webhook deliveries": this secret and payload give this header
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert wh.sign_hmac(GITHUB, "It's a Secret to Everybody", b"Hello, World!") == expected
    wh.verify_hmac(request(b"Hello, World!", {"X-Hub-Signature-256": expected}),
                   ["It's a Secret to Everybody"], check(), GITHUB)
    upper = "sha256=" + expected.removeprefix("sha256=").upper()  # hex is case-insensitive
    wh.verify_hmac(request(b"Hello, World!", {"X-Hub-Signature-256": upper}),
                   ["It's a Secret to Everybody"], check(), GITHUB)
    with pytest.raises(WebhookRejected, match="signature mismatch"):
        wh.verify_hmac(request(b"Hello, World?", {"X-Hub-Signature-256": expected}),
                       ["It's a Secret to Everybody"], check(), GITHUB)
    with pytest.raises(WebhookRejected, match="malformed X-Hub-Signature-256"):
        wh.verify_hmac(request(b"Hello, World!", {"X-Hub-Signature-256": expected[7:]}),
                       ["It's a Secret to Everybody"], check(), GITHUB)


def test_shopify_style_base64_of_the_raw_body_with_rotation():
    body = b'{"id":820982911946154508,"email":"jon@example.com"}'
    digest = hmac.new(b"shpss_new", body, hashlib.sha256).digest()  # computed independently
    header = base64.b64encode(digest).decode()
    assert wh.sign_hmac(SHOPIFY, "shpss_new", body) == header
    wh.verify_hmac(request(body, {"X-Shopify-Hmac-Sha256": header}), ["shpss_old", "shpss_new"],
                   check(), SHOPIFY)
    with pytest.raises(WebhookRejected, match="signature mismatch"):
        wh.verify_hmac(request(body, {"X-Shopify-Hmac-Sha256": header}), ["shpss_old"], check(),
                       SHOPIFY)
    with pytest.raises(WebhookRejected, match="missing X-Shopify-Hmac-Sha256"):
        wh.verify_hmac(request(body, {}), ["shpss_new"], check(), SHOPIFY)


def test_slack_official_vector_as_a_spec_with_its_timestamp_window():
    secret, ts = "8f742231b10e8888abcd99yyyzzz85a5", "1531420618"
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
            b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
            b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
            b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id="
            b"398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert wh.sign_hmac(SLACK_AS_HMAC, secret, body, timestamp=ts) == expected
    headers = {"X-Slack-Signature": expected, "X-Slack-Request-Timestamp": ts}
    wh.verify_hmac(request(body, headers), [secret], check(now=1531420618 + 299), SLACK_AS_HMAC)
    with pytest.raises(WebhookRejected, match="outside the 300 s window"):
        wh.verify_hmac(request(body, headers), [secret], check(now=1531420618 + 301),
                       SLACK_AS_HMAC)
    for bad in ("-1531420618", "1531420618.0", "9" * 400, "", "١٥٣١٤٢٠٦١٨"):
        with pytest.raises(WebhookRejected) as err:
            wh.verify_hmac(request(body, {**headers, "X-Slack-Request-Timestamp": bad}),
                           [secret], check(now=1531420618), SLACK_AS_HMAC)
        assert err.value.status == 401


def test_hubspot_v3_official_vector_as_a_spec_with_method_url_and_ms_timestamps():
    secret = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
    body = b"{'example_field':'example_value'}"
    url = "https://www.example.com/webhook_uri"
    expected = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
    assert wh.sign_hmac(HUBSPOT_V3_AS_HMAC, secret, body, timestamp="1693657560000",
                        method="POST", url=url) == expected
    headers = {"X-HubSpot-Signature-v3": expected, "X-HubSpot-Request-Timestamp": "1693657560000"}
    wh.verify_hmac(request(body, headers, url=url), [secret],
                   check(now=1693657560.0 + 10, url=url), HUBSPOT_V3_AS_HMAC)
    with pytest.raises(WebhookRejected, match="signature mismatch"):  # another URL is signed
        wh.verify_hmac(request(body, headers), [secret], check(now=1693657560.0),
                       HUBSPOT_V3_AS_HMAC)
    with pytest.raises(WebhookRejected, match="outside"):  # seconds read as milliseconds
        wh.verify_hmac(request(body, {**headers, "X-HubSpot-Request-Timestamp": "1693657560"}),
                       [secret], check(now=1693657560.0, url=url), HUBSPOT_V3_AS_HMAC)


@pytest.mark.parametrize(("fields", "message"), [
    ({"message": "{body}{nonce}"}, "unknown placeholder {nonce}"),
    ({"message": "{timestamp}.{body}"}, "needs timestamp_header"),
    ({"message": "{body!r}"}, "plain placeholders"),
    ({"message": "{body:>10}"}, "plain placeholders"),
    ({"message": "{body"}, "not a valid template"),
    ({"encoding": "base32"}, "encoding must be"),
    ({"algorithm": "md5"}, "algorithm must be"),
    ({"timestamp_unit": "us", "timestamp_header": "X-T"}, "timestamp_unit must be"),
    ({"header": " "}, "header must name"),
])
def test_a_bad_spec_is_refused_when_declared(fields, message):
    with pytest.raises(ValueError, match=message):
        HmacSpec(**{"header": "X-Sig", **fields})


def test_braces_escape_and_every_placeholder_renders():
    spec = HmacSpec(header="X-Sig", message="{{v1}}:{method}:{url}:{timestamp}:{body}",
                    timestamp_header="X-T", algorithm="sha1")
    assert wh.hmac_message(spec, b"B", timestamp="7", method="post", url="https://u") == \
        b"{v1}:POST:https://u:7:B"
    expected = hmac.new(b"k", b"{v1}:POST:https://u:7:B", hashlib.sha1).hexdigest()
    assert wh.sign_hmac(spec, "k", b"B", timestamp="7", method="post", url="https://u") == \
        expected


def test_a_provider_declaring_hmac_without_a_spec_rejects_with_401():
    provider = Provider(id="p", name="P", version="1", auth_type="none", streams=("s",),
                        webhook=WebhookConfig(scheme="hmac", secret_envs=("P_SECRET",)))
    with pytest.raises(WebhookRejected, match="no HMAC spec") as err:
        wh.verify_request(provider, request(b"{}", {}), ["s"], check())
    assert err.value.status == 401


# -- through the ingress ---------------------------------------------------------------------


def test_the_ingress_accepts_genuine_hmac_deliveries_and_rejects_tampered_ones(
    client, webhook_queue, h
):
    body = json.dumps({"action": "opened", "account": "gh-42"}).encode()
    ok = client.simulate_post("/webhooks/github-like", body=body,
                              headers=h.github_headers(body, delivery="d-1"))
    assert ok.status_code == 200, ok.text
    assert len(webhook_queue) == 1
    again = client.simulate_post("/webhooks/github-like", body=body,
                                 headers=h.github_headers(body, delivery="d-1"))
    assert again.status_code == 200 and len(webhook_queue) == 1  # replay: deduplicated
    tampered = client.simulate_post("/webhooks/github-like", body=body + b" ",
                                    headers=h.github_headers(body, delivery="d-2"))
    assert tampered.status_code == 401 and len(webhook_queue) == 1
    body = json.dumps({"account": "acme-1", "id": "evt-1"}).encode()
    stale = client.simulate_post("/webhooks/acme-hmac", body=body,
                                 headers=h.acme_hmac_headers(body, ts_ms=1_000_000_000_000))
    assert stale.status_code == 401
    fresh = client.simulate_post("/webhooks/acme-hmac", body=body,
                                 headers=h.acme_hmac_headers(body))
    assert fresh.status_code == 200, fresh.text
    assert len(webhook_queue) == 2


HMAC_PROVIDERS = {
    "github-like": ["X-Hub-Signature-256", "X-GitHub-Delivery"],
    "acme-hmac": ["X-Acme-Signature", "X-Acme-Timestamp"],
}
_latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
header_value = st.one_of(
    st.integers(1, 600).map(lambda n: "9" * n), _latin1,
    st.sampled_from(["", "sha256=", "sha256=" + "0" * 64, "-1", "1e999", "nan", "١٧٠٠",
                     "v1=" + "A" * 88, "sha256=zz"]),
)


@pytest.mark.parametrize("provider", list(HMAC_PROVIDERS))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_headers_and_bodies_only_ever_get_a_401(client, webhook_queue, provider, data):
    names = [*HMAC_PROVIDERS[provider], "X-Other"]
    headers = data.draw(st.dictionaries(st.sampled_from(names), header_value, max_size=3))
    body = data.draw(st.binary(max_size=200) | st.just(b'{"account": "acct-9"}'))
    result = client.simulate_post(f"/webhooks/{provider}", body=body, headers=headers)
    assert result.status_code == 401, (headers, result.text)
    assert len(webhook_queue) == 0


@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(st.sampled_from(["X-Sig", "X-T", "x-sig"]), header_value,
                               max_size=3),
       body=st.binary(max_size=100),
       spec=st.sampled_from([
           HmacSpec(header="X-Sig", prefix="sha256="),
           HmacSpec(header="X-Sig", encoding="base64", algorithm="sha512",
                    message="{timestamp}.{method}.{url}.{body}", timestamp_header="X-T",
                    timestamp_unit="ms"),
           HmacSpec(header="X-Sig", timestamp_header="X-T")]),
       now=st.floats(0, 4e9))
def test_verify_hmac_raises_nothing_but_a_401(headers, body, spec, now):
    with pytest.raises(WebhookRejected) as err:
        wh.verify_hmac(request(body, headers), ["secret", "other"], check(now=now), spec)
    assert err.value.status == 401
