"""The simulator answers as the reference says HubSpot does (reference/providers.md and the
addendum): it is what every other test trusts, so its shapes are tested on their own, over HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from urllib.parse import unquote

import pytest
import requests

from nexus_core.models import WebhookRequest
from nexus_core.webhooks import Check, verify_hubspot_v1, verify_hubspot_v2, verify_hubspot_v3


@pytest.fixture
def api(sim):
    account = sim.default_account
    token = sim.oauth.issue_tokens(account)["access_token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def call(method, path, **kw):
        return session.request(method, sim.url + path, timeout=10, **kw)

    yield call
    session.close()


def search(api, obj, filters=(), **body):
    return api("POST", f"/crm/v3/objects/{obj}/search",
               json={"filterGroups": [{"filters": list(filters)}] if filters else [], **body})


def test_list_pages_carry_hubspots_opaque_after_and_end_without_paging(sim, api):
    first = api("GET", "/crm/v3/objects/contacts", params={"limit": 100,
                                                            "properties": "email"}).json()
    assert len(first["results"]) == 100
    after = first["paging"]["next"]["after"]
    assert "%3D" in after and first["paging"]["next"]["link"] == f"?after={after}"
    assert base64.b64decode(unquote(after)).decode() == f"{sim.object_id('contacts', 100)}\n"
    item = first["results"][0]
    assert set(item) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert set(item["properties"]) == {"email", "hs_object_id", "createdate", "lastmodifieddate"}
    assert all(isinstance(v, str) for v in item["properties"].values())
    last = api("GET", "/crm/v3/objects/contacts", params={"limit": 100, "after": "NTI1Cg%3D%3D"})
    assert last.status_code == 200  # the token as HubSpot writes it (URL-encoded) is accepted
    tail = api("GET", "/crm/v3/objects/contacts", params={"limit": 100, "after": unquote(after)})
    assert tail.json()["results"][0]["id"] == str(sim.object_id("contacts", 100))
    end = api("GET", "/crm/v3/objects/deals", params={"limit": 100}).json()
    assert "paging" not in end
    assert api("GET", "/crm/v3/objects/contacts", params={"limit": 101}).status_code == 400
    assert len(api("GET", "/crm/v3/objects/contacts").json()["results"]) == 10  # default


def test_archived_true_lists_only_archived_records_and_search_never_shows_them(sim, api):
    gone = sim.delete("contacts", sim.default_account, 3)
    archived = api("GET", "/crm/v3/objects/contacts", params={"archived": "true"}).json()
    assert {r["id"] for r in archived["results"]} == gone
    assert all(r["archived"] and r["archivedAt"] for r in archived["results"])
    found = search(api, "contacts", limit=200).json()
    assert found["total"] == 247 and not {r["id"] for r in found["results"]} & gone
    one = next(iter(gone))
    assert api("GET", f"/crm/v3/objects/contacts/{one}").status_code == 404


def test_search_filters_on_each_types_own_modified_property_and_caps_at_10000(make_sim, api):
    sim = make_sim(sizes={"contacts": 10_500, "companies": 5, "deals": 5})
    sim.set_tier(sim.default_account, per_ten_seconds=110, search_per_second=100)
    token = sim.oauth.issue_tokens(sim.default_account)["access_token"]

    def post(obj, body):
        return requests.post(f"{sim.url}/crm/v3/objects/{obj}/search", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})

    def gte(prop, value=0):
        return {"filterGroups": [{"filters": [{"propertyName": prop, "operator": "GTE",
                                               "value": str(value)}]}], "limit": 200}

    assert post("contacts", gte("lastmodifieddate")).json()["total"] == 10_500
    wrong = post("contacts", gte("hs_lastmodifieddate"))
    assert wrong.status_code == 400 and wrong.json()["category"] == "VALIDATION_ERROR"
    assert post("companies", gte("hs_lastmodifieddate")).status_code == 200
    assert post("companies", gte("lastmodifieddate")).status_code == 400
    # paging by offset: fine up to 10,000 results, a 400 past it (a naive delta stops here)
    assert post("contacts", {**gte("lastmodifieddate"), "after": "9800"}).status_code == 200
    capped = post("contacts", {**gte("lastmodifieddate"), "after": "10000"})
    assert capped.status_code == 400 and "10,000" in capped.json()["message"]
    assert post("contacts", {"limit": 201}).status_code == 400


def test_search_groups_are_ored_filters_anded_and_one_sort_is_honoured(sim, api):
    base = sim.object_id("contacts", 0)
    groups = [{"filters": [{"propertyName": "hs_object_id", "operator": "BETWEEN",
                            "value": str(base + 10), "highValue": str(base + 12)}]},
              {"filters": [{"propertyName": "hs_object_id", "operator": "IN",
                            "values": [str(base + 1), base + 200]}]}]
    found = api("POST", "/crm/v3/objects/contacts/search", json={
        "filterGroups": groups, "limit": 10,
        "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}]}).json()
    assert [int(r["id"]) - base for r in found["results"]] == [200, 12, 11, 10, 1]
    paged = api("POST", "/crm/v3/objects/contacts/search", json={"limit": 100}).json()
    assert paged["paging"]["next"]["after"] == "100" and paged["total"] == 250
    too_many = [{"filters": [{"propertyName": "hs_object_id", "operator": "HAS_PROPERTY"}]}] * 6
    assert api("POST", "/crm/v3/objects/contacts/search",
               json={"filterGroups": too_many}).status_code == 400


def test_search_lags_behind_writes_when_told_to(sim, api):
    sim.search_lag = 5
    changed = sim.mutate("contacts", sim.default_account, 2)
    since = {"propertyName": "lastmodifieddate", "operator": "GTE",
             "value": str((sim.data.now - 2) * 1000 + 1735689600000)}
    assert search(api, "contacts", [since]).json()["total"] == 0
    sim.search_lag = 0
    assert {r["id"] for r in search(api, "contacts", [since], limit=200).json()["results"]} \
        == changed


def test_batch_read_answers_207_for_ids_it_cannot_find(sim, api):
    ids = [str(sim.object_id("deals", i)) for i in (1, 2)] + ["1"]
    resp = api("POST", "/crm/v3/objects/deals/batch/read",
               json={"inputs": [{"id": i} for i in ids], "properties": ["dealname"]})
    assert resp.status_code == 207
    body = resp.json()
    assert [r["id"] for r in body["results"]] == ids[:2]
    assert body["errors"][0]["context"]["ids"] == ["1"] and body["status"] == "COMPLETE"


def test_an_expired_token_and_an_unknown_one_are_told_apart(sim, api):
    sim.oauth.expire_access_tokens()
    expired = api("GET", "/crm/v3/objects/contacts")
    assert expired.status_code == 401 and expired.json()["category"] == "EXPIRED_AUTHENTICATION"
    unknown = requests.get(sim.url + "/crm/v3/objects/contacts", timeout=5,
                           headers={"Authorization": "Bearer made-up"})
    assert unknown.json()["category"] == "INVALID_AUTHENTICATION"


def test_both_limits_answer_with_their_own_429_and_headers(sim, api):
    ok = api("GET", "/crm/v3/objects/contacts")
    assert ok.headers["X-HubSpot-RateLimit-Max"] == "110"
    assert ok.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert "X-HubSpot-RateLimit-Daily" not in ok.headers  # OAuth apps have no daily limit
    assert ok.headers["Date"].endswith("GMT")
    statuses = [search(api, "contacts").status_code for _ in range(6)]
    assert statuses[:5] == [200] * 5 and statuses[5] == 429
    limited = search(api, "contacts")
    assert limited.json()["category"] == "RATE_LIMITS"
    assert not [h for h in limited.headers if h.startswith("X-HubSpot-RateLimit")]
    for _ in range(109):  # 110 in the window, the first one included
        api("GET", "/crm/v3/objects/deals")
    ten = api("GET", "/crm/v3/objects/deals")
    assert ten.status_code == 429 and ten.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert ten.headers["X-HubSpot-RateLimit-Remaining"] == "0"


def test_the_daily_limit_is_a_daily_429_with_its_headers(sim, api):
    sim.daily_limit = 2
    first = api("GET", "/account-info/v3/details")
    assert first.json()["portalId"] == int(sim.default_account)
    assert first.headers["X-HubSpot-RateLimit-Daily"] == "2"
    api("GET", "/crm/v3/objects/contacts")
    daily = api("GET", "/crm/v3/objects/contacts")
    assert daily.status_code == 429 and daily.json()["policyName"] == "DAILY"
    sim.reset_daily()
    assert api("GET", "/crm/v3/objects/contacts").status_code == 200


def test_token_answers_are_hubspots_and_refresh_tokens_do_not_rotate(sim):
    code = sim.authorize_code(sim.default_account)
    form = {"client_id": "hubspot-sim-client", "client_secret": "hubspot-sim-client-secret"}
    first = requests.post(f"{sim.url}/oauth/v1/token", timeout=5, data={
        **form, "grant_type": "authorization_code", "code": code}).json()
    assert first["hub_id"] == int(sim.default_account) and first["expires_in"] == 1800
    assert first["token_type"] == "bearer"
    again = requests.post(f"{sim.url}/oauth/v1/token", timeout=5, data={
        **form, "grant_type": "refresh_token", "refresh_token": first["refresh_token"]}).json()
    assert again["refresh_token"] == first["refresh_token"]
    bad = requests.post(f"{sim.url}/oauth/v1/token", timeout=5, data={
        **form, "grant_type": "authorization_code", "code": code})
    assert bad.status_code == 400 and bad.json()["status"] == "BAD_AUTH_CODE"
    client = requests.post(f"{sim.url}/oauth/v1/token", timeout=5, data={
        "client_id": "x", "client_secret": "y", "grant_type": "refresh_token"})
    assert client.json()["status"] == "BAD_CLIENT_ID"


def test_webhooks_are_signed_as_hubspot_signs_them(sim):
    url = "https://hooks.example.com/webhooks/hubspot?x=%40y"
    body = sim.webhook_body(sim.webhook_events(sim.default_account, 2))
    events = json.loads(body)
    assert [e["subscriptionType"] for e in events] == ["contact.propertyChange"] * 2
    assert all(e["portalId"] == int(sim.default_account) for e in events)
    secret = [sim.webhook_secret]
    for version, verify in (("v3", verify_hubspot_v3), ("v2", verify_hubspot_v2),
                            ("v1", verify_hubspot_v1)):
        headers = sim.sign_webhook(body, url, version=version)
        verify(WebhookRequest("POST", url, headers, body), secret, Check(url=url))


def test_nexus_simulate_hubspot_serves_a_numeric_portal(tmp_path):
    env_file, log = tmp_path / "sim.env", tmp_path / "sim.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nexus_core.cli", "simulate", "hubspot",
                                 "--port", "0", "--size", "contacts=30", "--env-file",
                                 str(env_file)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not env_file.exists() or not env_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert set(env) == {"HUBSPOT_BASE_URL", "HUBSPOT_AUTH_URL", "HUBSPOT_CLIENT_ID",
                            "HUBSPOT_CLIENT_SECRET"}
        state = requests.get(env["HUBSPOT_BASE_URL"] + "/_sim", timeout=5).json()
        assert state["accounts"] == ["62515"] and state["sizes"]["contacts"] == 30
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
