"""Every reader of what HubSpot (or anyone posting to the webhook URL) sends: examples from the
reference, then property-based — whatever the headers and bodies hold, the readers answer or
return nothing; they never raise (a verified webhook body, a 429 body, a 401 body, the
rate-limit and Date headers, a damaged cursor)."""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nexus_hubspot import crm, events, incremental, limits

from nexus_core import ProviderError, RateLimitWait

# -- examples ----------------------------------------------------------------------------------


def test_rate_limit_headers_become_the_health_status():
    headers = {"X-HubSpot-RateLimit-Max": "110", "X-HubSpot-RateLimit-Remaining": "97",
               "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
               "X-HubSpot-RateLimit-Daily": "250000",
               "X-HubSpot-RateLimit-Daily-Remaining": "249000",
               "X-HubSpot-RateLimit-Secondly": "10", "X-HubSpot-RateLimit-Secondly-Remaining": "9"}
    assert limits.parse_rate_limit(headers) == {
        "max": 110, "remaining": 97, "interval_seconds": 10.0, "daily": 250000,
        "daily_remaining": 249000, "secondly": 10, "secondly_remaining": 9}
    assert limits.parse_rate_limit({"X-HubSpot-RateLimit-Max": "lots"}) is None
    assert limits.parse_rate_limit({}) is None


def test_429_bodies_are_read_by_policy():
    daily = json.dumps({"status": "error", "message": "You have reached your daily limit.",
                        "errorType": "RATE_LIMIT", "correlationId": "x",
                        "policyName": "DAILY"}).encode()
    now = datetime(2026, 12, 3, 10, 7, 0, tzinfo=UTC).timestamp()
    wait = limits.rate_limit_wait(429, {}, daily, now=now)
    assert wait.scope == "account" and wait.reason == "DAILY limit"
    assert 8 * 60 + 5 <= wait.seconds <= 8 * 60 + 30  # to 10:15 UTC, plus margin and jitter
    assert limits.rate_limit_wait(429, {"Retry-After": "3600"}, daily).seconds == 3600

    ten = json.dumps({"status": "error", "errorType": "RATE_LIMIT",
                      "policyName": "TEN_SECONDLY_ROLLING",
                      "message": "You have reached your ten_secondly_rolling limit."}).encode()
    assert limits.rate_limit_wait(429, {}, ten) == RateLimitWait(
        10.0, reason="TEN_SECONDLY_ROLLING limit")
    assert limits.rate_limit_wait(429, {"X-HubSpot-RateLimit-Interval-Milliseconds": "2000"},
                                  ten).seconds == 2.0
    search = json.dumps({"status": "error", "message": "You have reached your secondly limit.",
                         "correlationId": "fd362e26", "category": "RATE_LIMITS"}).encode()
    assert limits.rate_limit_wait(429, {}, search) == RateLimitWait(1.0, reason="secondly limit")
    assert limits.rate_limit_wait(429, {"Retry-After": "1"}, b'{"error": "x"}') is None
    assert limits.rate_limit_wait(400, {}, daily) is None


def test_only_an_authentication_401_means_refresh():
    expired = {"status": "error", "category": "EXPIRED_AUTHENTICATION",
               "message": "The OAuth token used to make this call expired 5 minute(s) ago."}
    assert limits.is_token_expired(401, json.dumps(expired).encode())
    assert limits.is_token_expired(401, b'{"category": "INVALID_AUTHENTICATION"}')
    assert limits.is_token_expired(401, b"<html>")
    assert not limits.is_token_expired(401, b'{"category": "MISSING_SCOPES"}')
    assert not limits.is_token_expired(403, json.dumps(expired).encode())


def test_the_reference_webhook_sample_is_one_contact_created_event():
    body = (b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
            b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
            b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]')
    (event,) = events.parse(body)
    assert (event.id, event.type, event.object_id, event.account_id) == (
        "1", "contacts.created", "123", "62515")
    assert event.occurred_at == datetime(2019, 7, 26, 4, 0, tzinfo=UTC)
    assert event.payload["changeFlag"] == "NEW"


@pytest.mark.parametrize(("kind", "normalized"), [
    ("contact.propertyChange", "contacts.updated"), ("company.deletion", "companies.deleted"),
    ("deal.merge", "deals.merged"), ("ticket.restore", "tickets.restored"),
    ("line_item.associationChange", "line_items.association_changed"),
    ("contact.privacyDeletion", "contacts.privacy_deleted"),
    ("object.creation", "objects.created"), ("event.completed", "event.completed"),
])
def test_subscription_types_normalize(kind, normalized):
    (event,) = events.parse(json.dumps([{"eventId": 7, "subscriptionType": kind}]).encode())
    assert event.type == normalized


def test_dates_and_the_date_header():
    assert crm.epoch_ms("2023-11-15T00:00:01.123Z") == 1700006401123
    assert crm.epoch_ms("1700006401123") == 1700006401123
    assert crm.epoch_ms("2023-11-15") == 1700006400000
    assert crm.epoch_ms("yesterday") is None and crm.epoch_ms(True) is None
    assert crm.server_ms({"Date": "Wed, 15 Nov 2023 00:00:01 GMT"}) == 1700006401000
    assert crm.server_ms({"Date": "soon"}) is None and crm.server_ms({}) is None


def test_modified_property_is_per_object_type():
    assert crm.modified_property("contacts") == "lastmodifieddate"
    for obj in ("companies", "deals", "tickets", "line_items", "products", "2-1234567"):
        assert crm.modified_property(obj) == "hs_lastmodifieddate"
    assert crm.properties("contacts", {"properties": {"contacts": ["email"]}}) == [
        "email", "lastmodifieddate", "hs_object_id"]
    assert crm.properties("tickets", {}) is None  # HubSpot's defaults


# -- property-based ---------------------------------------------------------------------------

_text = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FFF), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False)
    | _text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["eventId", "subscriptionType", "portalId", "objectId",
                                       "occurredAt", "policyName", "errorType", "category",
                                       "message", "primaryObjectId", "mergedObjectIds",
                                       "status", "x"]), children, max_size=6),
    max_leaves=20)
_bodies = st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200),
                    st.just(b"[" * 3000), st.just(b'{"policyName": "DAILY"}'))
_header_values = st.one_of(_text, st.sampled_from(["", "0", "-1", "1e9", "9" * 40, "nan",
                                                   "Wed, 15 Nov 2023 00:00:01 GMT",
                                                   "Mon, 99 Foo 99999 99:99:99 GMT"]))
_headers = st.dictionaries(st.sampled_from([
    "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds", "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining", "Retry-After", "Date"]), _header_values, max_size=7)


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([400, 401, 403, 429, 500]), headers=_headers, body=_bodies)
def test_answers_of_any_shape_are_read_without_raising(status, headers, body):
    wait = limits.rate_limit_wait(status, headers, body)
    assert wait is None or (isinstance(wait, RateLimitWait) and 0 <= wait.seconds <= 2 * 86400)
    assert limits.is_token_expired(status, body) in (True, False)
    parsed = limits.parse_rate_limit(headers)
    assert parsed is None or all(isinstance(v, int | float) and v >= 0
                                 for v in parsed.values())
    millis = crm.server_ms(headers)
    assert millis is None or millis >= 0


@settings(max_examples=300, deadline=None)
@given(body=_bodies)
def test_any_webhook_body_gives_well_formed_events_or_none(body):
    for event in events.parse(body):
        assert event.id and "." in event.type and event.provider == "hubspot"
        assert event.object_id is None or isinstance(event.object_id, str)
        assert event.account_id is None or isinstance(event.account_id, str)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(_text, st.integers(), st.floats(allow_nan=True), st.none(),
                       st.booleans(), st.text(string.digits, max_size=30)))
def test_any_date_value_is_epoch_ms_or_none(value):
    millis = crm.epoch_ms(value)
    assert millis is None or 0 <= millis <= 7_258_118_400_000


@settings(max_examples=200, deadline=None)
@given(cursor=st.one_of(_json.map(json.dumps), _text,
                        _json.map(lambda v: json.dumps({"v": 1, "since": 5, "phase": "search",
                                                        "seen": v, "keep": v}))))
def test_a_damaged_cursor_is_a_provider_error_or_a_window(cursor):
    try:
        window = incremental.Window.decode(cursor)
    except ProviderError:
        return
    assert isinstance(window.since, int) and window.phase in ("search", "archived")
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in window.seen.items())
    assert incremental.Window.decode(window.encode()) == window
