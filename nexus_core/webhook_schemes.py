"""Webhook signature schemes: small pure functions over raw bytes.

``sign_*`` computes what a provider sends; ``verify_*`` checks a
:class:`~nexus_core.models.WebhookRequest` against one or more secrets (rotation) and raises
:class:`~nexus_core.errors.WebhookRejected` (401, short reason) otherwise. Every comparison is
:func:`hmac.compare_digest`. Built to the exact bytes of ``reference/providers.md`` and
cross-checked against the providers' official SDKs in the tests. Re-exported by
:mod:`nexus_core.webhooks`, where the ingress that uses them lives.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import string
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import attrs
from loguru import logger

from nexus_core.errors import WebhookRejected
from nexus_core.models import HmacSpec, Provider, WebhookRequest

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.plugins import PluginRegistry

#: Seconds a timestamped signature stays valid, in both directions (every scheme here uses 5 min).
DEFAULT_TOLERANCE = 300

# -- signature schemes: pure functions ---------------------------------------------------------

#: Percent-escapes HubSpot decodes in the request URI before signing (v3); nothing else.
_HUBSPOT_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}


def _b(text: str | bytes) -> bytes:
    # surrogatepass: a str from Python callers may hold lone surrogates; encoding must never
    # raise on attacker-controlled text (a header value compared with a signature).
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


def hubspot_uri(uri: str) -> str:
    """The URI as HubSpot signs it (v3): only the listed percent-escapes are decoded."""
    if "%" not in uri:
        return uri
    out, i = [], 0
    while i < len(uri):
        chunk = uri[i : i + 3]
        if uri[i] == "%" and chunk.upper() in _HUBSPOT_DECODE:
            out.append(_HUBSPOT_DECODE[chunk.upper()])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def sign_hubspot_v1(secret: str, body: bytes) -> str:
    """HubSpot v1: hex SHA-256 (not HMAC) of ``{secret}{body}``."""
    return hashlib.sha256(_b(secret) + body).hexdigest()


def sign_hubspot_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    """HubSpot v2: hex SHA-256 (not HMAC) of ``{secret}{METHOD}{URI}{body}``."""
    return hashlib.sha256(_b(secret) + _b(method.upper()) + _b(uri) + body).hexdigest()


def sign_hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str | int) -> str:
    """HubSpot v3: base64 HMAC-SHA256 of ``{METHOD}{URI}{body}{timestamp_ms}``."""
    message = _b(method.upper()) + _b(uri) + body + _b(str(timestamp))
    return base64.b64encode(hmac.new(_b(secret), message, hashlib.sha256).digest()).decode()


def sign_slack(secret: str, timestamp: str | int, body: bytes) -> str:
    """Slack v0: ``v0=`` + hex HMAC-SHA256 of ``v0:{ts}:{body}``, key = the secret's UTF-8."""
    message = b"v0:" + _b(str(timestamp)) + b":" + body
    return "v0=" + hmac.new(_b(secret), message, hashlib.sha256).hexdigest()


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after ``whsec_`` (padding optional)."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret must be whsec_ + base64") from None


def sign_standard_webhooks(secret: str, msg_id: str, timestamp: str | int, body: bytes) -> str:
    """Standard Webhooks: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{ts}.{body}``."""
    message = _b(msg_id) + b"." + _b(str(timestamp)) + b"." + body
    digest = hmac.new(standard_webhooks_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_stripe(secret: str, timestamp: str | int, body: bytes) -> str:
    """Stripe: hex HMAC-SHA256 of ``{t}.{body}``, key = the whole ``whsec_…`` string as UTF-8."""
    return hmac.new(_b(secret), _b(str(timestamp)) + b"." + body, hashlib.sha256).hexdigest()


def stripe_header(secret: str, timestamp: str | int, body: bytes) -> str:
    return f"t={timestamp},v1={sign_stripe(secret, timestamp, body)}"


# -- signature schemes: verification -----------------------------------------------------------


@attrs.frozen
class Check:
    """What a verifier needs besides the request and the secrets."""

    #: The full public URI the provider called (HubSpot v2/v3 sign it).
    url: str
    now: float = attrs.field(factory=time.time)
    tolerance: float = DEFAULT_TOLERANCE


def _reject(reason: str) -> WebhookRejected:
    return WebhookRejected(reason, status=401)


def _any_match(candidates: Iterable[str], expected: Iterable[str]) -> bool:
    """Constant-time per comparison; every candidate is compared with every expected value."""
    found = False
    expected = list(expected)
    for given in candidates:
        for want in expected:
            found |= hmac.compare_digest(_b(given), _b(want))
    return found


def _require(request: WebhookRequest, name: str) -> str:
    value = request.header(name)
    if value is None or not value.strip():
        raise _reject(f"missing {name} header")
    return value.strip()


#: A timestamp header: plain ASCII digits, at most 20 (seconds or milliseconds since 1970 have
#: 10-13). Anything else — a sign, 400 digits, other scripts' digits — is malformed (401), never
#: an overflow deep in the float conversion (which was a 500).
_TIMESTAMP = re.compile(r"[0-9]{1,20}", re.ASCII)


def _timestamp(raw: str, name: str, check: Check, *, unit: float = 1.0) -> None:
    text = raw.strip()
    if not _TIMESTAMP.fullmatch(text):
        raise _reject(f"malformed {name} header")
    seconds = int(text) / unit
    if not abs(check.now - seconds) <= check.tolerance:
        raise _reject(f"timestamp outside the {check.tolerance:g} s window")


def verify_hubspot_v1(request: WebhookRequest, secrets: Sequence[str], check: Check) -> None:
    _hubspot_version(request, "v1")
    given = _require(request, "X-HubSpot-Signature").lower()
    if not _any_match([given], (sign_hubspot_v1(s, request.body) for s in secrets)):
        raise _reject("signature mismatch")


def verify_hubspot_v2(request: WebhookRequest, secrets: Sequence[str], check: Check) -> None:
    _hubspot_version(request, "v2")
    given = _require(request, "X-HubSpot-Signature").lower()
    expected = (sign_hubspot_v2(s, request.method, check.url, request.body) for s in secrets)
    if not _any_match([given], expected):
        raise _reject("signature mismatch")


def _hubspot_version(request: WebhookRequest, version: str) -> None:
    declared = request.header("X-HubSpot-Signature-Version")
    if declared is not None and declared.strip().lower() != version:
        raise _reject(f"expected a HubSpot {version} signature, got {declared.strip()[:8]!r}")


def verify_hubspot_v3(request: WebhookRequest, secrets: Sequence[str], check: Check) -> None:
    given = _require(request, "X-HubSpot-Signature-v3")
    ts = _require(request, "X-HubSpot-Request-Timestamp")
    _timestamp(ts, "X-HubSpot-Request-Timestamp", check, unit=1000.0)
    uri = hubspot_uri(check.url)
    expected = (sign_hubspot_v3(s, request.method, uri, request.body, ts) for s in secrets)
    if not _any_match([given], expected):
        raise _reject("signature mismatch")


def verify_slack(request: WebhookRequest, secrets: Sequence[str], check: Check) -> None:
    given = _require(request, "X-Slack-Signature")
    ts = _require(request, "X-Slack-Request-Timestamp")
    _timestamp(ts, "X-Slack-Request-Timestamp", check)
    if not given.startswith("v0="):
        raise _reject("malformed X-Slack-Signature header")
    if not _any_match([given], (sign_slack(s, ts, request.body) for s in secrets)):
        raise _reject("signature mismatch")


def verify_standard_webhooks(
    request: WebhookRequest, secrets: Sequence[str], check: Check
) -> None:
    msg_id = _require(request, "webhook-id")
    ts = _require(request, "webhook-timestamp")
    header = _require(request, "webhook-signature")
    _timestamp(ts, "webhook-timestamp", check)
    given = [p for p in header.split(" ") if p.startswith("v1,")]
    if not given:
        raise _reject("malformed webhook-signature header (no v1 signature)")
    expected = []
    for secret in secrets:
        try:
            expected.append(sign_standard_webhooks(secret, msg_id, ts, request.body))
        except ValueError:
            logger.error("a configured Standard Webhooks secret is not whsec_ + base64; skipped")
    if not _any_match(given, expected):
        raise _reject("signature mismatch")


def parse_stripe_header(header: str) -> tuple[str, list[str]]:
    """``t=…,v1=…[,v1=…][,v0=…]`` → (the first t, every v1). v0 and unknown keys are ignored."""
    timestamp: str | None = None
    v1: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t" and timestamp is None:
            timestamp = value
        elif key == "v1":
            v1.append(value)
    if timestamp is None or not v1:
        raise _reject("malformed Stripe-Signature header")
    return timestamp, v1


def verify_stripe(request: WebhookRequest, secrets: Sequence[str], check: Check) -> None:
    ts, given = parse_stripe_header(_require(request, "Stripe-Signature"))
    _timestamp(ts, "Stripe-Signature t", check)
    if not _any_match(given, (sign_stripe(s, ts, request.body) for s in secrets)):
        raise _reject("signature mismatch")


# -- the configurable HMAC scheme ---------------------------------------------------------------

_DIGESTS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "sha512": hashlib.sha512}


def hmac_message(spec: HmacSpec, body: bytes, *, timestamp: str | None = None,
                 method: str = "POST", url: str = "") -> bytes:
    """The exact bytes ``spec.message`` names for this delivery."""
    values = {"body": body, "timestamp": _b(timestamp or ""), "method": _b(method.upper()),
              "url": _b(url)}
    out = []
    for literal, field, _, _ in string.Formatter().parse(spec.message):
        out.append(_b(literal))
        if field is not None:
            out.append(values[field])
    return b"".join(out)


def _hmac_digest(spec: HmacSpec, secret: str, message: bytes) -> str:
    digest = hmac.new(_b(secret), message, _DIGESTS[spec.algorithm]).digest()
    return digest.hex() if spec.encoding == "hex" else base64.b64encode(digest).decode()


def sign_hmac(spec: HmacSpec, secret: str, body: bytes, *, timestamp: str | int | None = None,
              method: str = "POST", url: str = "") -> str:
    """The header value a provider signing by ``spec`` sends: ``prefix`` + the digest."""
    message = hmac_message(spec, body, timestamp=None if timestamp is None else str(timestamp),
                           method=method, url=url)
    return spec.prefix + _hmac_digest(spec, secret, message)


def verify_hmac(request: WebhookRequest, secrets: Sequence[str], check: Check,
                spec: HmacSpec) -> None:
    """The ``hmac`` scheme: :class:`WebhookRejected` (401) unless ``spec``'s header holds the
    HMAC of the signed string under one of ``secrets`` (and its timestamp is in the window)."""
    given = _require(request, spec.header)
    ts = None
    if spec.timestamp_header:
        ts = _require(request, spec.timestamp_header)
        _timestamp(ts, spec.timestamp_header, check,
                   unit=1000.0 if spec.timestamp_unit == "ms" else 1.0)
    if not given.startswith(spec.prefix):
        raise _reject(f"malformed {spec.header} header")
    digest = given[len(spec.prefix):]
    if spec.encoding == "hex":
        digest = digest.lower()
    message = hmac_message(spec, request.body, timestamp=ts, method=request.method,
                           url=check.url)
    if not _any_match([digest], (_hmac_digest(spec, s, message) for s in secrets)):
        raise _reject("signature mismatch")


Verifier = Callable[[WebhookRequest, Sequence[str], Check], None]

#: scheme name (``WebhookConfig.scheme``) -> verifier; ``custom`` goes to the verify_webhook hook.
SCHEMES: dict[str, Verifier] = {
    "hubspot-v1": verify_hubspot_v1,
    "hubspot-v2": verify_hubspot_v2,
    "hubspot-v3": verify_hubspot_v3,
    "slack-v0": verify_slack,
    "standard-webhooks": verify_standard_webhooks,
    "stripe": verify_stripe,
}


def _hubspot_signed(version: str) -> Callable[[WebhookRequest, HmacSpec | None], bool]:
    def carries(request: WebhookRequest, spec: HmacSpec | None) -> bool:
        declared = request.header("X-HubSpot-Signature-Version")
        return request.header("X-HubSpot-Signature") is not None and \
            declared is not None and declared.strip().lower() == version
    return carries


def _has(name: str) -> Callable[[WebhookRequest, HmacSpec | None], bool]:
    return lambda request, spec: request.header(name) is not None


#: scheme -> whether a delivery carries that scheme's signature (its headers are there): how a
#: provider accepting several schemes (``WebhookConfig.fallback_schemes``) picks one.
CARRIES: dict[str, Callable[[WebhookRequest, HmacSpec | None], bool]] = {
    "hubspot-v1": _hubspot_signed("v1"),
    "hubspot-v2": _hubspot_signed("v2"),
    "hubspot-v3": _has("X-HubSpot-Signature-v3"),
    "slack-v0": _has("X-Slack-Signature"),
    "standard-webhooks": _has("webhook-signature"),
    "stripe": _has("Stripe-Signature"),
    "hmac": lambda request, spec: spec is not None and request.header(spec.header) is not None,
    "custom": lambda request, spec: True,
}


@attrs.frozen
class SignedDelivery:
    """What a sender signs: the body, the URL it goes to, when, and the HMAC spec if any."""

    secret: str
    body: bytes
    url: str
    method: str
    now: float
    msg_id: str | None = None
    spec: HmacSpec | None = None


def _headers_hubspot(version: str) -> Callable[[SignedDelivery], dict[str, str]]:
    def headers(d: SignedDelivery) -> dict[str, str]:
        if version == "v1":
            return {"X-HubSpot-Signature-Version": "v1",
                    "X-HubSpot-Signature": sign_hubspot_v1(d.secret, d.body)}
        if version == "v2":
            return {"X-HubSpot-Signature-Version": "v2",
                    "X-HubSpot-Signature": sign_hubspot_v2(d.secret, d.method, d.url, d.body)}
        ts = str(int(d.now * 1000))
        return {"X-HubSpot-Request-Timestamp": ts, "X-HubSpot-Signature-v3":
                sign_hubspot_v3(d.secret, d.method, hubspot_uri(d.url), d.body, ts)}
    return headers


def _headers_slack(d: SignedDelivery) -> dict[str, str]:
    ts = str(int(d.now))
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sign_slack(d.secret, ts, d.body)}


def _headers_standard(d: SignedDelivery) -> dict[str, str]:
    ts, mid = str(int(d.now)), d.msg_id or f"msg_{int(d.now * 1e6)}"
    return {"webhook-id": mid, "webhook-timestamp": ts,
            "webhook-signature": sign_standard_webhooks(d.secret, mid, ts, d.body)}


def _headers_hmac(d: SignedDelivery) -> dict[str, str]:
    spec = d.spec
    if spec is None:
        raise ValueError("scheme 'hmac' signs with an HmacSpec (hmac_spec=...)")
    stamp = None
    if spec.timestamp_header:
        stamp = str(int(d.now * 1000)) if spec.timestamp_unit == "ms" else str(int(d.now))
    out = {spec.header: sign_hmac(spec, d.secret, d.body, timestamp=stamp, method=d.method,
                                  url=d.url)}
    if stamp is not None and spec.timestamp_header:
        out[spec.timestamp_header] = stamp
    return out


#: scheme -> the headers a provider sends with a delivery signed that way (simulators and tests;
#: the counterpart of :data:`SCHEMES`).
SENDERS: dict[str, Callable[[SignedDelivery], dict[str, str]]] = {
    "hubspot-v1": _headers_hubspot("v1"),
    "hubspot-v2": _headers_hubspot("v2"),
    "hubspot-v3": _headers_hubspot("v3"),
    "slack-v0": _headers_slack,
    "standard-webhooks": _headers_standard,
    "stripe": lambda d: {"Stripe-Signature": stripe_header(d.secret, int(d.now), d.body)},
    "hmac": _headers_hmac,
}


def select_scheme(provider: Provider, request: WebhookRequest) -> str:
    """The scheme that verifies ``request``: the first of ``WebhookConfig.scheme`` and its
    ``fallback_schemes`` whose signature headers the request carries, else ``scheme``."""
    webhook = provider.webhook
    assert webhook is not None
    if not webhook.fallback_schemes:
        return webhook.scheme
    for scheme in (webhook.scheme, *webhook.fallback_schemes):
        carries = CARRIES.get(scheme)
        if carries is not None and carries(request, webhook.hmac):
            return scheme
    return webhook.scheme


def configured_secrets(provider: Provider, settings: Settings) -> list[str]:
    """The provider's webhook secrets: the first of ``WebhookConfig.secret_envs`` that is set,
    split on commas (several = rotation). A provider that signs with its OAuth client secret
    lists that variable last (``("ACME_WEBHOOK_SECRET", "ACME_CLIENT_SECRET")``)."""
    envs = list(provider.webhook.secret_envs) if provider.webhook else []
    for env in envs:
        value = settings.get(env)
        if value:
            return [s.strip() for s in value.split(",") if s.strip()]
    return []


def verify_request(
    provider: Provider,
    request: WebhookRequest,
    secrets: Sequence[str],
    check: Check,
    registry: PluginRegistry | None = None,
) -> None:
    """Raise :class:`WebhookRejected` (401, short reason) unless the request is genuine."""
    if provider.webhook is None:
        raise WebhookRejected(f"provider {provider.id!r} does not accept webhooks", status=404)
    scheme = select_scheme(provider, request)
    if scheme == "custom":
        if registry is None or not registry.implements("verify_webhook", provider.id):
            logger.error("provider {} declares a custom webhook scheme but implements no "
                         "verify_webhook hook; every delivery is rejected", provider.id)
            raise _reject("no verifier for this provider")
        ok = registry.hook("verify_webhook", provider.id)(
            provider=provider, request=request, secrets=list(secrets)
        )
        if ok is not True:
            raise _reject("signature mismatch")
        return
    if scheme == "hmac":
        if provider.webhook.hmac is None:
            logger.error("provider {} declares the hmac webhook scheme without an HmacSpec; "
                         "every delivery is rejected", provider.id)
            raise _reject("no HMAC spec for this provider")
        verify_hmac(request, secrets, check, provider.webhook.hmac)
        return
    verifier = SCHEMES.get(scheme)
    if verifier is None:
        logger.error("provider {} declares the unknown webhook scheme {!r}; every delivery is "
                     "rejected", provider.id, scheme)
        raise _reject("no verifier for this provider")
    verifier(request, secrets, check)
