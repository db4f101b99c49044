"""The connector's readers of untrusted input — headers, error bodies, token answers, SOQL
rows and cursors, Outbound Messages — on the reference's samples and on whatever hypothesis
makes of them: they answer, or raise the one error they document, never anything else."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nexus_salesforce import limits, outbound, session, soql, sync

from nexus_core import AuthError, ProviderError, RateLimitWait

ANY_TEXT = st.text(max_size=300)
ANY_BYTES = st.binary(max_size=300)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                       lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)


# -- Sforce-Limit-Info (addendum 3.3) ------------------------------------------------------------


@pytest.mark.parametrize(("header", "parsed"), [
    ("api-usage=18/5000", {"quota_used": 18, "quota_max": 5000}),
    ("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-app)",
     {"quota_used": 25, "quota_max": 5000, "per_app_used": 17, "per_app_max": 250,
      "app": "sample-app"}),
    ("per-app-api-usage=17/250(appName=sample-app);api-usage=25/5000",
     {"quota_used": 25, "quota_max": 5000, "per_app_used": 17, "per_app_max": 250,
      "app": "sample-app"}),
    ("api-usage=10018/100000", {"quota_used": 10018, "quota_max": 100000}),
    ("api-usage=abc/5000", None), ("", None), ("garbage", None), (None, None),
])
def test_sforce_limit_info_is_read_in_both_forms(header, parsed):
    headers = {} if header is None else {"Sforce-Limit-Info": header}
    assert limits.parse_limit_info(headers) == parsed


@given(ANY_TEXT)
def test_any_limit_header_gives_a_reading_or_none(text):
    found = limits.parse_limit_info({"Sforce-Limit-Info": text})
    assert found is None or set(found) <= {"quota_used", "quota_max", "per_app_used",
                                           "per_app_max", "app"}


@given(st.integers(0, 10**12 - 1), st.integers(1, 10**12 - 1),
       st.text(alphabet=st.characters(blacklist_characters="();", blacklist_categories=["Cs"]),
               min_size=1, max_size=40).filter(str.strip))
def test_well_formed_limit_headers_read_back(used, cap, app):
    header = f"api-usage={used}/{cap}; per-app-api-usage={used}/{cap}(appName={app})"
    found = limits.parse_limit_info({"Sforce-Limit-Info": header})
    assert found["quota_used"] == found["per_app_used"] == used
    assert found["quota_max"] == cap and found["app"] == app.strip()


# -- error answers (addendum 3.6) -----------------------------------------------------------------

EXPIRED = b'[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'
QUOTA = b'[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]'
CONCURRENT = (b'[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.",'
              b'"errorCode":"REQUEST_LIMIT_EXCEEDED"}]')


def test_the_reference_error_answers_are_read():
    assert limits.is_session_expired(401, EXPIRED)
    assert limits.is_session_expired(401, b"")  # unreadable: one refresh settles it
    assert not limits.is_session_expired(401, b'[{"errorCode":"API_DISABLED_FOR_ORG"}]')
    assert not limits.is_session_expired(403, EXPIRED)
    daily = limits.rate_limit_wait(403, QUOTA, 1800)
    assert daily == RateLimitWait(1800, scope="account", reason=daily.reason)
    assert "REQUEST_LIMIT_EXCEEDED" in daily.reason
    concurrent = limits.rate_limit_wait(403, CONCURRENT, 1800)
    assert concurrent.scope == "bucket" and concurrent.seconds == limits.CONCURRENT_WAIT
    assert limits.rate_limit_wait(403, b'[{"errorCode":"INSUFFICIENT_ACCESS"}]') is None
    assert limits.rate_limit_wait(429, QUOTA) is None
    assert limits.describe(400, b'[{"message":"unexpected token: FROMX","errorCode":'
                                b'"MALFORMED_QUERY"}]') == "MALFORMED_QUERY: unexpected token: FROMX"


@given(st.integers(100, 599), ANY_BYTES | JSONISH.map(lambda v: json.dumps(v).encode()))
def test_any_error_answer_is_read_without_raising(status, body):
    limits.is_session_expired(status, body)
    wait = limits.rate_limit_wait(status, body)
    assert wait is None or isinstance(wait, RateLimitWait)
    assert isinstance(limits.describe(status, body), str)


# -- token answers (providers.md 2, addendum 3.2) -------------------------------------------------

SECRET = "consumer-secret"
IDENTITY = "https://login.salesforce.com/id/00D8c000002JHMDEA4/0058c00000AbCdEAAZ"


def _signed(identity=IDENTITY, issued="1700000000000"):
    mac = hmac.new(SECRET.encode(), (identity + issued).encode(), hashlib.sha256).digest()
    return {"id": identity, "issued_at": issued, "signature": base64.b64encode(mac).decode()}


def test_the_signature_is_hmac_sha256_of_id_and_issued_at_with_the_client_secret():
    where = {"provider": "salesforce"}
    session.verify_signature(_signed(), SECRET, where)
    for broken in ({**_signed(), "issued_at": "1700000000001"},
                   {**_signed(), "id": IDENTITY.replace("00D8", "00D9")},
                   {**_signed(), "signature": ""}, {"id": IDENTITY},
                   {**_signed(), "signature": _signed()["signature"][:-2] + "AA"}):
        with pytest.raises(AuthError):
            session.verify_signature(broken, SECRET, where)
    with pytest.raises(AuthError, match="SALESFORCE_CLIENT_SECRET"):
        session.verify_signature(_signed(), None, where)


@given(st.dictionaries(st.sampled_from(["id", "issued_at", "signature", "x"]), JSONISH,
                       max_size=4), st.none() | ANY_TEXT)
def test_any_token_answer_is_verified_or_refused_with_an_auth_error(data, secret):
    with contextlib.suppress(AuthError):
        session.verify_signature(data, secret, {"provider": "salesforce"})


@pytest.mark.parametrize(("url", "ok"), [
    ("https://acme.my.salesforce.com", True), ("https://na1.salesforce.com/", True),
    ("https://acme--sbx.sandbox.my.salesforce.com", True), ("https://acme.lightning.force.com",
                                                              True),
    ("http://acme.my.salesforce.com", False), ("https://evil.example", False),
    ("https://salesforce.com.evil.example", False), ("https://a.salesforce.com/x", False),
    ("https://user@a.salesforce.com", False), (None, False), (42, False),
])
def test_an_instance_url_must_be_a_salesforce_host(url, ok):
    assert session.allowed_instance(url) is ok


@given(JSONISH, st.none() | ANY_TEXT)
def test_any_instance_url_is_judged_without_raising(url, extra):
    assert session.allowed_instance(url, extra) in (True, False)


@given(JSONISH)
def test_issued_at_of_any_shape_gives_a_time(raw):
    now = datetime.now(UTC)
    assert session.issued({"issued_at": raw}, now) <= now


# -- SOQL ----------------------------------------------------------------------------------------


def test_datetimes_go_into_soql_as_unquoted_z_literals():
    assert soql.literal("2024-01-01T00:00:00.000+0000") == "2024-01-01T00:00:00.000Z"
    assert soql.literal("2024-01-01T02:00:00+02:00") == "2024-01-01T00:00:00.000Z"
    assert soql.changes_query("Account", {"fields": {"Account": ["Name"]}},
                              "2024-01-01T00:00:00.000+0000") == (
        "SELECT Id, SystemModstamp, Name FROM Account WHERE SystemModstamp >= "
        "2024-01-01T00:00:00.000Z ORDER BY SystemModstamp ASC, Id ASC")
    assert soql.backfill_query("Lead", {}, "00Q5g000000AbCdEAA") == (
        "SELECT FIELDS(STANDARD) FROM Lead WHERE Id > '00Q5g000000AbCdEAA' ORDER BY Id ASC")


@given(ANY_TEXT)
def test_nothing_but_a_datetime_becomes_a_literal(text):
    try:
        out = soql.literal(text)
    except ProviderError:
        return
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z",
                        out)


@given(ANY_TEXT, st.lists(ANY_TEXT, max_size=3), st.none() | ANY_TEXT)
def test_names_and_ids_from_a_config_or_a_cursor_cannot_change_a_query(obj, fields, after):
    try:
        text = soql.backfill_query(obj, {"fields": {obj: fields}}, after)
    except ProviderError:
        return
    # whatever was accepted is names, a quoted id and keywords: no quote, comment or clause
    assert re.fullmatch(r"SELECT [A-Za-z0-9_., ]+ FROM [A-Za-z0-9_]+"
                        r"( WHERE Id > '[A-Za-z0-9]{15,18}')? ORDER BY Id ASC", text), text


@given(JSONISH)
def test_any_row_becomes_a_record_or_a_provider_error(item):
    try:
        record = soql.to_record("Account", item, "test")
    except ProviderError:
        return
    assert soql.RECORD_ID.fullmatch(record.id)


# -- paging and cursors --------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "ok"), [
    ("/services/data/v61.0/query/01gRO0000016PIAYA2-500", True),
    ("https://evil.example/services/data/v61.0/query/x", False),
    ("//evil.example/services/data/x", False), ("/services/data/../../x", False),
    ("/other/path", False), (None, False), (5, False),
])
def test_next_records_url_must_be_a_query_path_of_the_instance(url, ok):
    body = {"done": False, "nextRecordsUrl": url}
    if ok:
        assert sync.next_records_path(body, "t") == url
    else:
        with pytest.raises(ProviderError):
            sync.next_records_path(body, "t")
    assert sync.next_records_path({"done": True, "nextRecordsUrl": url}, "t") is None


@given(JSONISH.map(json.dumps) | ANY_TEXT)
def test_any_cursor_is_read_or_refused_with_a_provider_error(cursor):
    for read in (sync.Window.decode, lambda c: sync._load(c, "backfill")):
        with contextlib.suppress(ProviderError):
            read(cursor)


@given(st.dictionaries(st.sampled_from(["Date", "date", "X"]), ANY_TEXT, max_size=2))
def test_any_date_header_gives_a_time(headers):
    assert sync.server_time(headers).tzinfo is not None


# -- Outbound Messages (addendum 3.1) --------------------------------------------------------------

SAMPLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D8c000002JHMDEA4</OrganizationId>
   <ActionId>04kRi0000061wbCIAQ</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/61.0/00D8c000002JHMD</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/61.0/00D8c000002JHMD</PartnerUrl>
   <Notification>
    <Id>04lRi00000SEBI1IAP</Id>
    <sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>500Ri00000PThftIAD</sf:Id>
     <sf:Status>New</sf:Status>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"""


def test_the_reference_message_is_read():
    message = outbound.parse(SAMPLE)
    assert message.organization_id == "00D8c000002JHMDEA4"
    assert message.action_id == "04kRi0000061wbCIAQ"
    (note,) = message.notifications
    assert (note.id, note.sobject_type, note.object_id) == (
        "04lRi00000SEBI1IAP", "Case", "500Ri00000PThftIAD")
    assert note.fields == {"Id": "500Ri00000PThftIAD", "Status": "New"}
    assert outbound.routing(message) == [{"OrganizationId": "00D8c000002JHMDEA4",
                                          "Id": "04lRi00000SEBI1IAP", "sObject": "Case",
                                          "ObjectId": "500Ri00000PThftIAD"}]


def test_the_ack_is_the_reference_answer_and_only_it_counts():
    assert outbound.ACK.encode() == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
        b' <soapenv:Body>\n'
        b'  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
        b'<Ack>true</Ack></notificationsResponse>\n'
        b' </soapenv:Body>\n'
        b'</soapenv:Envelope>\n')
    assert outbound.is_ack(200, outbound.ACK.encode())
    assert not outbound.is_ack(200, SAMPLE)


@settings(max_examples=300)
@given(ANY_BYTES | ANY_TEXT.map(str.encode))
def test_any_body_is_a_message_or_a_bad_message(body):
    with contextlib.suppress(outbound.BadMessage):
        outbound.parse(body)
    outbound.is_ack(200, body)


@settings(max_examples=300)
@given(st.integers(0, len(SAMPLE) - 1), st.binary(max_size=6), st.integers(0, 6))
def test_any_damage_to_a_message_is_read_or_refused(at, inserted, removed):
    body = SAMPLE[:at] + inserted + SAMPLE[at + removed:]
    try:
        message = outbound.parse(body)
    except outbound.BadMessage:
        return
    for note in message.notifications:
        assert outbound.SF_ID.fullmatch(note.id)
