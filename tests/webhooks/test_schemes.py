"""Signature schemes as pure functions: every vector of reference/providers.md, the failure
modes, and a cross-check against each provider's official SDK on random inputs."""

import base64
import os
import random
import string
import time
from datetime import UTC, datetime

import pytest

from nexus_core import webhooks as wh
from nexus_core.errors import WebhookRejected
from nexus_core.models import WebhookRequest

# -- the vectors of providers.md, verbatim --------------------------------------------------------

STD = {"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
       "ts": "1614265330", "body": b'{"test": 2432232314}',
       "sig": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
SLACK = {
    "secret": "8f742231b10e8888abcd99yyyzzz85a5", "ts": "1531420618",
    "body": (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
             b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
             b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
             b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
             b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"),
    "sig": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
}
HUBSPOT = {"secret": "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
           "body": b"{'example_field':'example_value'}",
           "uri": "https://www.example.com/webhook_uri"}
STRIPE = {"secret": "whsec_test_secret", "t": "1700000000",
          "body": b'{"id":"evt_1","object":"event"}',
          "sig": "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd"}


def req(headers, body, method="POST", url="https://www.example.com/webhook_uri"):
    return WebhookRequest(method=method, url=url, headers=headers, body=body)


def check(now, url="https://www.example.com/webhook_uri", tolerance=300):
    return wh.Check(url=url, now=float(now), tolerance=tolerance)


def test_standard_webhooks_vector_signs_and_verifies():
    assert wh.sign_standard_webhooks(STD["secret"], STD["id"], STD["ts"], STD["body"]) == STD["sig"]
    headers = {"webhook-id": STD["id"], "webhook-timestamp": STD["ts"],
               "webhook-signature": STD["sig"]}
    wh.verify_standard_webhooks(req(headers, STD["body"]), [STD["secret"]], check(STD["ts"]))


def test_standard_webhooks_vector_with_last_char_changed_to_A_fails():
    bad = STD["sig"][:-1] + "A"
    headers = {"webhook-id": STD["id"], "webhook-timestamp": STD["ts"], "webhook-signature": bad}
    with pytest.raises(WebhookRejected, match="signature mismatch") as exc:
        wh.verify_standard_webhooks(req(headers, STD["body"]), [STD["secret"]], check(STD["ts"]))
    assert exc.value.status == 401


def test_standard_webhooks_space_separated_signatures_accept_any_v1_match():
    """Rotation: the sender signs with old and new secrets; one matching v1 entry suffices."""
    headers = {"webhook-id": STD["id"], "webhook-timestamp": STD["ts"],
               "webhook-signature": f"v1a,ed25519stuff v1,{'A' * 44} {STD['sig']}"}
    wh.verify_standard_webhooks(req(headers, STD["body"]), [STD["secret"]], check(STD["ts"]))


def test_standard_webhooks_unpadded_secret_works():
    key = os.urandom(24 + 1)  # 25 bytes: base64 needs padding
    padded = "whsec_" + base64.b64encode(key).decode()
    unpadded = padded.rstrip("=")
    assert padded != unpadded
    assert wh.sign_standard_webhooks(unpadded, "m", "1", b"x") == \
        wh.sign_standard_webhooks(padded, "m", "1", b"x")


def test_slack_vector_signs_and_verifies():
    assert wh.sign_slack(SLACK["secret"], SLACK["ts"], SLACK["body"]) == SLACK["sig"]
    headers = {"X-Slack-Request-Timestamp": SLACK["ts"], "X-Slack-Signature": SLACK["sig"]}
    wh.verify_slack(req(headers, SLACK["body"]), [SLACK["secret"]], check(SLACK["ts"]))


def test_hubspot_v1_vector():
    expected = "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
    assert wh.sign_hubspot_v1(HUBSPOT["secret"], HUBSPOT["body"]) == expected
    headers = {"X-HubSpot-Signature": expected, "X-HubSpot-Signature-Version": "v1"}
    wh.verify_hubspot_v1(req(headers, HUBSPOT["body"]), [HUBSPOT["secret"]], check(0))


def test_hubspot_v2_post_vector():
    expected = "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
    assert wh.sign_hubspot_v2(HUBSPOT["secret"], "POST", HUBSPOT["uri"], HUBSPOT["body"]) == expected
    headers = {"X-HubSpot-Signature": expected, "X-HubSpot-Signature-Version": "v2"}
    wh.verify_hubspot_v2(req(headers, HUBSPOT["body"]), [HUBSPOT["secret"]], check(0))


def test_hubspot_v2_get_empty_body_vector():
    expected = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    assert wh.sign_hubspot_v2(HUBSPOT["secret"], "GET", HUBSPOT["uri"], b"") == expected
    headers = {"X-HubSpot-Signature": expected, "X-HubSpot-Signature-Version": "v2"}
    wh.verify_hubspot_v2(req(headers, b"", method="GET"), [HUBSPOT["secret"]], check(0))


def test_hubspot_v3_post_vector():
    expected = "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
    ts = "1693657560000"
    assert wh.sign_hubspot_v3(HUBSPOT["secret"], "POST", HUBSPOT["uri"], HUBSPOT["body"], ts) \
        == expected
    headers = {"X-HubSpot-Signature-v3": expected, "X-HubSpot-Request-Timestamp": ts}
    wh.verify_hubspot_v3(req(headers, HUBSPOT["body"]), [HUBSPOT["secret"]],
                         check(1693657560 + 10))


def test_stripe_vector():
    assert wh.sign_stripe(STRIPE["secret"], STRIPE["t"], STRIPE["body"]) == STRIPE["sig"]
    header = f"t={STRIPE['t']},v1={STRIPE['sig']}"
    wh.verify_stripe(req({"Stripe-Signature": header}, STRIPE["body"]), [STRIPE["secret"]],
                     check(STRIPE["t"]))


def test_stripe_header_with_several_v1_and_a_v0_accepts_the_matching_v1():
    header = f"t={STRIPE['t']},v1={'0' * 64},v0=ignored,v1={STRIPE['sig']},x=1"
    assert wh.parse_stripe_header(header) == (STRIPE["t"], ["0" * 64, STRIPE["sig"]])
    wh.verify_stripe(req({"Stripe-Signature": header}, STRIPE["body"]), [STRIPE["secret"]],
                     check(STRIPE["t"]))


@pytest.mark.parametrize("header", ["", "garbage", f"v1={'0' * 64}", "t=1700000000",
                                    "t=1700000000,v0=abc", "t=soon,v1=abc"])
def test_malformed_stripe_header_is_rejected(header):
    with pytest.raises(WebhookRejected) as exc:
        wh.verify_stripe(req({"Stripe-Signature": header}, STRIPE["body"]), [STRIPE["secret"]],
                         check(STRIPE["t"]))
    assert exc.value.status == 401


# -- URI handling for HubSpot v3 ------------------------------------------------------------------


def test_hubspot_uri_decodes_only_the_listed_escapes():
    uri = "https://h.example.com/webhooks/hubspot?a=%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B&b=%20%26%3d%2b"
    assert wh.hubspot_uri(uri) == (
        "https://h.example.com/webhooks/hubspot?a=:/?@!$'()*,;&b=%20%26%3d%2b"
    )
    assert wh.hubspot_uri("https://x/%3a") == "https://x/:"  # escapes are case-insensitive
    assert wh.hubspot_uri("https://x/plain") == "https://x/plain"


def test_hubspot_v3_verifier_signs_over_the_decoded_uri():
    body = b"[]"
    ts = str(int(time.time() * 1000))
    raw = "https://h.example.com/webhooks/hubspot?portal=%40x"
    sig = wh.sign_hubspot_v3("s", "POST", "https://h.example.com/webhooks/hubspot?portal=@x",
                             body, ts)
    headers = {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts}
    wh.verify_hubspot_v3(req(headers, body, url=raw), ["s"], wh.Check(url=raw))


# -- failure modes shared by the timestamped schemes ----------------------------------------------


def _signed(scheme, body, now, *, ts_offset=0.0, secret="s3cret"):
    ts = int(now + ts_offset)
    if scheme == "hubspot-v3":
        ts_ms = str(ts * 1000)
        return {"X-HubSpot-Signature-v3": wh.sign_hubspot_v3(secret, "POST", HUBSPOT["uri"], body,
                                                             ts_ms),
                "X-HubSpot-Request-Timestamp": ts_ms}
    if scheme == "slack-v0":
        return {"X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": wh.sign_slack(secret, ts, body)}
    if scheme == "standard-webhooks":
        key = "whsec_" + base64.b64encode(secret.encode().ljust(24, b"!")).decode()
        return {"webhook-id": "m1", "webhook-timestamp": str(ts),
                "webhook-signature": wh.sign_standard_webhooks(key, "m1", ts, body)}
    return {"Stripe-Signature": wh.stripe_header(secret, ts, body)}


def _secret(scheme, secret="s3cret"):
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(secret.encode().ljust(24, b"!")).decode()
    return secret


TIMED = ["hubspot-v3", "slack-v0", "standard-webhooks", "stripe"]


@pytest.mark.parametrize("scheme", TIMED)
def test_genuine_signature_verifies(scheme):
    now = time.time()
    body = b'{"a": 1}'
    wh.SCHEMES[scheme](req(_signed(scheme, body, now), body), [_secret(scheme)], check(now))


@pytest.mark.parametrize("scheme", TIMED)
@pytest.mark.parametrize("offset", [-301, -3600, 301, 86400])
def test_timestamp_outside_the_window_either_way_is_rejected(scheme, offset):
    now = time.time()
    body = b'{"a": 1}'
    with pytest.raises(WebhookRejected, match="window"):
        wh.SCHEMES[scheme](req(_signed(scheme, body, now, ts_offset=offset), body),
                           [_secret(scheme)], check(now))


@pytest.mark.parametrize("scheme", TIMED)
def test_tampered_body_and_wrong_secret_are_rejected(scheme):
    now = time.time()
    body = b'{"a": 1}'
    headers = _signed(scheme, body, now)
    with pytest.raises(WebhookRejected, match="mismatch"):
        wh.SCHEMES[scheme](req(headers, b'{"a": 2}'), [_secret(scheme)], check(now))
    with pytest.raises(WebhookRejected, match="mismatch"):
        wh.SCHEMES[scheme](req(headers, body), [_secret(scheme, "other")], check(now))
    with pytest.raises(WebhookRejected, match="mismatch"):  # spacing changed after signing
        wh.SCHEMES[scheme](req(headers, b'{"a":1}'), [_secret(scheme)], check(now))


@pytest.mark.parametrize("scheme", TIMED)
def test_any_of_several_configured_secrets_verifies(scheme):
    now = time.time()
    body = b"{}"
    headers = _signed(scheme, body, now, secret="new-secret")
    secrets = [_secret(scheme, "old-secret"), _secret(scheme, "new-secret")]
    wh.SCHEMES[scheme](req(headers, body), secrets, check(now))


@pytest.mark.parametrize("scheme", [*TIMED, "hubspot-v1", "hubspot-v2"])
def test_missing_signature_headers_are_rejected(scheme):
    with pytest.raises(WebhookRejected, match="missing") as exc:
        wh.SCHEMES[scheme](req({}, b"{}"), ["s"], check(time.time()))
    assert exc.value.status == 401


@pytest.mark.parametrize("headers", [
    {"X-Slack-Request-Timestamp": "now", "X-Slack-Signature": "v0=00"},
    {"X-Slack-Request-Timestamp": "{ts}", "X-Slack-Signature": "sha256=00"},
])
def test_malformed_slack_headers_are_rejected(headers):
    headers = {k: v.format(ts=int(time.time())) for k, v in headers.items()}
    with pytest.raises(WebhookRejected, match="malformed"):
        wh.verify_slack(req(headers, b"{}"), ["s"], check(time.time()))


def test_hubspot_signature_version_mismatch_is_rejected():
    headers = {"X-HubSpot-Signature": wh.sign_hubspot_v1("s", b"{}"),
               "X-HubSpot-Signature-Version": "v2"}
    with pytest.raises(WebhookRejected, match="v1"):
        wh.verify_hubspot_v1(req(headers, b"{}"), ["s"], check(0))


def test_standard_webhooks_without_a_v1_entry_is_malformed():
    headers = {"webhook-id": "m", "webhook-timestamp": str(int(time.time())),
               "webhook-signature": "v1a,abc"}
    with pytest.raises(WebhookRejected, match="malformed"):
        wh.verify_standard_webhooks(req(headers, b"{}"), [STD["secret"]], check(time.time()))


# -- cross-checks against the official SDKs on random inputs --------------------------------------

rng = random.Random(20261130)


def _random_text(n):
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(n))


def _random_body():
    return ("{" + ",".join(f'"{_random_text(5)}": "{_random_text(rng.randint(0, 40))}"'
                           for _ in range(rng.randint(0, 8))) + "}").encode()


CASES = range(25)


@pytest.mark.parametrize("case", CASES)
def test_slack_matches_slack_sdk_signature_verifier(case):
    from slack_sdk.signature import SignatureVerifier

    secret, body = _random_text(32), _random_body()
    ts = str(int(time.time()) + rng.randint(-250, 250))
    sdk = SignatureVerifier(secret)
    ours = wh.sign_slack(secret, ts, body)
    assert ours == sdk.generate_signature(timestamp=ts, body=body)
    assert sdk.is_valid(body=body, timestamp=ts, signature=ours)
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": ours}
    wh.verify_slack(req(headers, body), [secret], check(time.time()))


@pytest.mark.parametrize("case", CASES)
def test_hubspot_matches_hubspot_api_client_signature(case):
    from hubspot.utils.signature import Signature

    secret, body = _random_text(36), _random_body()
    uri = f"https://{_random_text(8)}.example.com/webhooks/{_random_text(6)}?x={_random_text(4)}"
    ts = str(int(time.time() * 1000) - rng.randint(0, 250_000))
    text = body.decode()
    assert wh.sign_hubspot_v1(secret, body) == Signature.get_signature(secret, text, "v1")
    assert wh.sign_hubspot_v2(secret, "POST", uri, body) == \
        Signature.get_signature(secret, text, "v2", uri, "POST")
    v3 = wh.sign_hubspot_v3(secret, "POST", uri, body, ts)
    assert Signature.is_valid(v3, secret, text, uri, "POST", "v3", ts)
    headers = {"X-HubSpot-Signature-v3": v3, "X-HubSpot-Request-Timestamp": ts}
    wh.verify_hubspot_v3(req(headers, body, url=uri), [secret], wh.Check(url=uri))


@pytest.mark.parametrize("case", CASES)
def test_standard_webhooks_matches_the_official_library(case):
    from standardwebhooks import Webhook

    secret = "whsec_" + base64.b64encode(os.urandom(rng.randint(24, 64))).decode()
    body, msg_id = _random_body(), f"msg_{_random_text(20)}"
    ts = int(time.time()) + rng.randint(-250, 250)
    lib = Webhook(secret)
    sdk_sig = lib.sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    assert wh.sign_standard_webhooks(secret, msg_id, ts, body) == sdk_sig
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts),
               "webhook-signature": f"v1,{base64.b64encode(os.urandom(32)).decode()} {sdk_sig}"}
    lib.verify(body, headers)
    wh.verify_standard_webhooks(req(headers, body), [secret], check(time.time()))


@pytest.mark.parametrize("case", CASES)
def test_stripe_matches_stripe_python(case):
    import stripe

    secret, body = "whsec_" + _random_text(32), _random_body()
    ts = int(time.time()) - rng.randint(0, 250)
    ours = wh.stripe_header(secret, ts, body)
    assert ours == stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts)
    assert stripe.WebhookSignature.verify_header(body, ours, secret, tolerance=300)
    wh.verify_stripe(req({"Stripe-Signature": ours}, body), [secret], check(time.time()))


@pytest.mark.parametrize("case", range(10))
def test_sdks_and_we_agree_on_rejecting_stale_and_forged_deliveries(case):
    import stripe
    from slack_sdk.signature import SignatureVerifier
    from standardwebhooks import Webhook, WebhookVerificationError

    secret, body = _random_text(32), _random_body()
    old = int(time.time()) - rng.randint(400, 100_000)
    # Slack: stale
    slack_sig = wh.sign_slack(secret, old, body)
    assert not SignatureVerifier(secret).is_valid(body=body, timestamp=str(old),
                                                  signature=slack_sig)
    with pytest.raises(WebhookRejected):
        wh.verify_slack(req({"X-Slack-Request-Timestamp": str(old),
                             "X-Slack-Signature": slack_sig}, body), [secret], check(time.time()))
    # Stripe: forged by another secret
    forged = wh.stripe_header("whsec_other", int(time.time()), body)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body, forged, "whsec_" + secret, tolerance=300)
    with pytest.raises(WebhookRejected):
        wh.verify_stripe(req({"Stripe-Signature": forged}, body), ["whsec_" + secret],
                         check(time.time()))
    # Standard Webhooks: stale
    key = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    sig = wh.sign_standard_webhooks(key, "m", old, body)
    headers = {"webhook-id": "m", "webhook-timestamp": str(old), "webhook-signature": sig}
    with pytest.raises(WebhookVerificationError):
        Webhook(key).verify(body, headers)
    with pytest.raises(WebhookRejected):
        wh.verify_standard_webhooks(req(headers, body), [key], check(time.time()))
