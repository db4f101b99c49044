"""Syncing Salesforce: each installation on its own instance, sessions that end mid-backfill,
SOQL paging with the batch size and query locators (expired ones too), SystemModstamp deltas
with the boundary deduplicated, deletions from the recycle bin, configurable sObjects and
fields — workers, Redis and SQLite real, Salesforce simulated."""

from __future__ import annotations

import json

import pytest


def delivered(nexus, tenant="t1", install="main", stream=None, deleted=False):
    return [r["id"] for r in nexus.recorder.rows("record")
            if r["tenant"] == tenant and r["install"] == install and r["deleted"] == deleted
            and (stream is None or r["stream"] == stream)]


def test_each_installation_reads_from_its_own_instance_and_nowhere_else(make_sim, harness):
    sim = make_sim(sizes={"Account": 230, "Contact": 210, "Opportunity": 205})
    a, b = sim.default_account, sim.add_account()
    nexus = harness(sim)
    nexus.connect("t1", "main", a)
    nexus.connect("t2", "main", b)
    assert sim.org(a).instance_url != sim.org(b).instance_url
    for tenant in ("t1", "t2"):
        nexus.service.start_backfill("salesforce", tenant, "main")
    nexus.run()
    assert nexus.failed_jobs() == []
    for tenant, org in (("t1", a), ("t2", b)):
        for stream in ("Account", "Contact", "Opportunity"):
            assert sorted(delivered(nexus, tenant, stream=stream)) == sorted(
                sim.expected_ids(stream, org))
    api = [(host, who) for host, who, *_ in sim.api_log]
    assert api and set(api) == {(f"org:{a}", a), (f"org:{b}", b)}  # never a login host
    # Salesforce itself refuses a session on another org's instance.
    import requests

    creds = nexus.store.get_credentials("t1", "main")
    wrong = requests.get(f"{sim.org(b).instance_url}/services/data/v61.0/limits",
                         headers={"Authorization": f"Bearer {creds.access_token}"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_one_base_url_override_for_every_org_still_keeps_each_orgs_data_apart(
    make_sim, harness
):
    # SALESFORCE_BASE_URL sends every request to one host (a proxy, a simulator reached
    # through one URL): it wins over the instance URLs, and sessions still say whose data.
    sim = make_sim(sizes={"Account": 210, "Contact": 20, "Opportunity": 20})
    a, b = sim.default_account, sim.add_account()
    nexus = harness(sim, SALESFORCE_BASE_URL=sim.url)
    nexus.connect("t1", "main", a)
    nexus.connect("t2", "main", b)
    for tenant in ("t1", "t2"):
        nexus.service.start_backfill("salesforce", tenant, "main")
    nexus.run()
    assert {host for host, *_ in sim.api_log} == {"login"}
    for tenant, org in (("t1", a), ("t2", b)):
        assert sorted(delivered(nexus, tenant, stream="Account")) == sorted(
            sim.expected_ids("Account", org))


def test_a_session_that_ends_without_notice_mid_backfill_is_refreshed_and_nothing_is_lost(
    sim, nexus
):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    stored = nexus.store.get_credentials("t1", "main")
    sim.oauth.expire_after(4)  # Salesforce ends the session, the stored expiry says 2 h left
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    assert nexus.failed_jobs() == []
    statuses = [status for *_, status in sim.api_log]
    assert statuses.count(401) == 1 and statuses.index(401) == 4, statuses
    assert statuses[5] == 200  # the same request again, with the new session
    assert sim.oauth.refreshes == 1 and sim.oauth.refused_reuse == 0
    for stream in ("Account", "Contact", "Opportunity"):
        got = delivered(nexus, stream=stream)
        assert sorted(got) == sorted(sim.expected_ids(stream, org))  # each exactly once
    fresh = nexus.store.get_credentials("t1", "main")
    assert fresh.access_token != stored.access_token
    assert fresh.refresh_token == stored.refresh_token  # no rotation: kept


def test_pages_follow_next_records_url_with_the_batch_size_and_the_fields_asked_for(
    sim, harness
):
    org = sim.default_account
    nexus = harness(sim)
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={
        "streams": ["Account"], "batch_size": 200, "fields": {"Account": ["Name", "Industry"]}})
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    paths = [path for *_, path, _ in sim.api_log]
    assert len(paths) == 3 and paths[0] == "/services/data/v61.0/query"  # 450: 200+200+50
    locator = paths[1].rsplit("/", 1)[1].rsplit("-", 1)[0]
    assert paths[1:] == [f"/services/data/v61.0/query/{locator}-200",
                         f"/services/data/v61.0/query/{locator}-400"]
    assert sim.soql_log == ["SELECT Id, SystemModstamp, Name, Industry FROM Account "
                            "ORDER BY Id ASC"]
    pages = [r["n"] for r in nexus.recorder.rows("page")]
    assert pages == [200, 200, 50]
    row = next(r for r in nexus.recorder.rows("record"))
    assert set(row["data"]) == {"attributes", "Id", "SystemModstamp", "Name", "Industry"}
    assert row["data"]["attributes"]["type"] == "Account"
    ids = delivered(nexus)
    assert ids == sorted(ids) and len(ids) == 450  # ordered by Id


def test_an_expired_query_locator_is_replaced_by_the_query_from_the_last_id(sim, nexus):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    sim.locator_ttl = -1.0  # every locator is gone by the time the next page is asked for
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    assert nexus.failed_jobs() == []
    for stream in ("Account", "Contact", "Opportunity"):
        assert sorted(delivered(nexus, stream=stream)) == sorted(
            sim.expected_ids(stream, org))
    gone = [path for *_, path, status in sim.api_log if status == 400]
    assert len(gone) == 5 and all("/query/" in p for p in gone)  # 450, 520, 260 by 200
    resumed = [q for q in sim.soql_log if " WHERE Id > '" in q]
    assert len(resumed) == 5 and all(q.endswith("ORDER BY Id ASC") for q in resumed)


def test_a_record_committed_later_at_the_boundary_timestamp_is_not_lost(sim, nexus):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={"streams": ["Contact"]})
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    nexus.recorder.clear()
    changed = sim.mutate("Contact", org, 3)
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert sorted(delivered(nexus)) == sorted(changed)
    # A transaction that got the same SystemModstamp as the last change read, but committed
    # after the delta read it: `>=` reads the boundary again and only the new ones are new.
    last = max(changed)  # the same tick order as the ids here: mutate goes by index
    late = sim.commit_late("Contact", org, like=last, n=2)
    nexus.recorder.clear()
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert sorted(delivered(nexus)) == sorted(late)
    # ... and a delta with no changes delivers nothing, the boundary record included
    nexus.recorder.clear()
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert delivered(nexus) == []
    assert all(" WHERE SystemModstamp >= " in q and q.endswith(
        "ORDER BY SystemModstamp ASC, Id ASC") for q in sim.soql_log[-3:])


def test_many_changes_sharing_one_timestamp_across_pages_come_once(sim, nexus):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={"streams": ["Contact"]})
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    nexus.recorder.clear()
    changed = sim.mutate("Contact", org, 450, same_second=True)  # three pages at one instant
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert sorted(delivered(nexus)) == sorted(changed)
    nexus.recorder.clear()
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert delivered(nexus) == []


def test_deleted_records_are_delivered_as_deletions_once(sim, nexus):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    nexus.recorder.clear()
    gone = sim.delete("Contact", org, 4) | sim.delete("Opportunity", org, 2)
    changed = sim.mutate("Account", org, 2)
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert sorted(delivered(nexus, deleted=True)) == sorted(gone)
    assert sorted(delivered(nexus)) == sorted(changed)
    rows = [r for r in nexus.recorder.rows("record") if r["deleted"]]
    assert all(r["data"]["IsDeleted"] is True and r["data"]["deletedDate"] for r in rows)
    deleted_calls = [path for *_, path, _ in sim.api_log if "/deleted" in path]
    assert sorted(p.split("/")[-3] for p in deleted_calls) == [
        "Account", "Contact", "Opportunity"]
    nexus.recorder.clear()
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert nexus.recorder.rows("record") == []  # the boundary deletions are not repeated
    assert nexus.failed_jobs() == []


def test_a_delta_without_deletions_does_not_read_the_recycle_bin(sim, nexus):
    org = sim.default_account
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={"deletions": False})
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    sim.delete("Contact", org, 2)
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert not any("/deleted" in path for *_, path, _ in sim.api_log)


def test_any_sobject_and_its_fields_can_be_synced(make_sim, harness):
    sim = make_sim(sizes={"Account": 30, "Contact": 20, "Opportunity": 10, "Invoice__c": 250})
    org = sim.default_account
    nexus = harness(sim)
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={
        "streams": ["Invoice__c", "Account"], "fields": {"Account": ["Name"]}})
    nexus.service.start_backfill("salesforce", "t1", "main")
    nexus.run()
    assert sorted(delivered(nexus, stream="Invoice__c")) == sorted(
        sim.expected_ids("Invoice__c", org))
    invoice = next(r for r in nexus.recorder.rows("record") if r["stream"] == "Invoice__c")
    assert {"Name", "Description", "CreatedDate", "SystemModstamp"} <= set(invoice["data"])
    assert sim.soql_log[:2] == ["SELECT FIELDS(STANDARD) FROM Invoice__c ORDER BY Id ASC",
                                "SELECT Id, SystemModstamp, Name FROM Account ORDER BY Id ASC"]
    changed = sim.mutate("Invoice__c", org, 2)
    nexus.recorder.clear()
    nexus.service.start_delta("salesforce", "t1", "main")
    nexus.run()
    assert sorted(delivered(nexus)) == sorted(changed)


@pytest.mark.parametrize(("config", "message"), [
    ({"fields": {"Account": ["Name; DROP"]}}, "fields.Account must be a list of field API"),
    ({"fields": {"Account": []}}, "fields.Account must be a list"),
    ({"fields": ["Name"]}, "fields must be an object"),
    ({"fields": {"Bad Name": ["Name"]}}, "is not an sObject name"),
    ({"batch_size": 100}, "batch_size must be an integer from 200 to 2000"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"api_version": "61"}, "api_version must look like v61.0"),
    ({"session_timeout": 60}, "session_timeout must be the org's session timeout"),
    ({"deletions": "yes"}, "deletions must be true or false"),
    ({"streams": ["Account'--"]}, "unknown stream(s)"),
    ({"quota": {"reserve": 1.5}}, "quota.reserve must be a share"),
])
def test_an_installation_config_salesforce_cannot_use_is_refused(sim, nexus, config, message):
    check = nexus.service.validate_connector_config("salesforce", config)
    assert not check.valid and any(message in e for e in check.errors), check.errors


def test_a_delta_cursor_the_connector_did_not_write_is_refused():
    from nexus_salesforce import sync

    from nexus_core import ProviderError

    for bad in ("not json", json.dumps({"v": 99}), json.dumps({"v": 1, "phase": "x"}),
                json.dumps({"v": 1, "phase": "changes", "at": 5})):
        with pytest.raises(ProviderError):
            sync.Window.decode(bad)
