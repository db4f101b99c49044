"""The simulator answers like Salesforce where the connector's tests rely on it: SOQL and its
errors, sessions bound to their org's instance, the quota's 403 and headers, the recycle
bin's window, the control API — and ``nexus simulate salesforce`` serves every host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import requests


def api(sim, path, org=None, token=None, **params):
    org = org or sim.default_account
    token = token or sim.credentials(org).access_token
    return requests.get(f"{sim.org(org).instance_url}/services/data/v61.0/{path}",
                        params=params, headers={"Authorization": f"Bearer {token}"},
                        timeout=10)


def test_soql_errors_are_salesforce_error_arrays(sim):
    cases = {
        "SELECT Idx FROM Account": "INVALID_FIELD",
        "SELECT Id FROM Nothing__c": "INVALID_TYPE",
        "SELEC Id FROM Account": "MALFORMED_QUERY",
        "SELECT Id FROM Account WHERE SystemModstamp >= '2024-01-01T00:00:00Z'":
            "MALFORMED_QUERY",  # a datetime literal is not quoted
        "SELECT Id FROM Account WHERE Id > 001": "MALFORMED_QUERY",
        "SELECT Id FROM Account ORDER BY Nope": "MALFORMED_QUERY",
    }
    for text, code in cases.items():
        resp = api(sim, "query", q=text)
        assert resp.status_code == 400 and resp.json()[0]["errorCode"] == code, text
        assert "Sforce-Limit-Info" in resp.headers


def test_a_query_pages_by_the_batch_size_and_its_locator_expires(sim):
    token = sim.credentials(sim.default_account).access_token
    headers = {"Authorization": f"Bearer {token}", "Sforce-Query-Options": "batchSize=200"}
    base = sim.org(sim.default_account).instance_url
    first = requests.get(f"{base}/services/data/v61.0/query", headers=headers, timeout=10,
                         params={"q": "SELECT Id, Name FROM Account ORDER BY Id DESC LIMIT 300"})
    body = first.json()
    assert (body["totalSize"], body["done"], len(body["records"])) == (300, False, 200)
    assert body["records"][0]["Id"] > body["records"][1]["Id"]
    assert body["records"][0]["attributes"]["type"] == "Account"
    second = requests.get(base + body["nextRecordsUrl"], headers=headers, timeout=10).json()
    assert second["done"] is True and len(second["records"]) == 100
    again = requests.get(base + body["nextRecordsUrl"], headers=headers, timeout=10)
    assert again.status_code == 400  # a finished locator is gone
    third = requests.get(f"{base}/services/data/v61.0/query", headers=headers, timeout=10,
                         params={"q": "SELECT Id FROM Contact"}).json()
    sim.expire_locators()
    gone = requests.get(base + third["nextRecordsUrl"], headers=headers, timeout=10)
    assert gone.status_code == 400 and gone.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_a_session_works_only_on_its_orgs_instance_and_ends_without_notice(sim):
    a, b = sim.default_account, sim.add_account()
    token = sim.credentials(a).access_token
    assert api(sim, "limits", a, token).status_code == 200
    wrong = api(sim, "limits", b, token)
    assert wrong.status_code == 401 and wrong.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    sim.oauth.expire_access_tokens()
    assert api(sim, "limits", a, token).status_code == 401


def test_the_daily_quota_is_a_403_with_the_usage_header(sim):
    org = sim.default_account
    sim.set_daily_limit(org, 2)
    token = sim.credentials(org).access_token
    assert [api(sim, "limits", org, token).headers["Sforce-Limit-Info"]
            for _ in range(2)] == ["api-usage=1/2", "api-usage=2/2"]
    over = api(sim, "limits", org, token)
    assert over.status_code == 403 and over.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    control = requests.post(f"{sim.url}/_sim/quota", json={"account": org, "reset": True},
                            timeout=10).json()
    assert control == {"account": org, "used": 0, "limit": 2}
    assert api(sim, "limits", org, token).status_code == 200


def test_deletions_are_read_within_the_recycle_bin(sim):
    org = sim.default_account
    start = sim.now
    gone = sim.delete("Account", org, 3)
    resp = api(sim, "sobjects/Account/deleted/", start=start.isoformat(),
               end="2999-01-01T00:00:00Z").json()
    assert {d["id"] for d in resp["deletedRecords"]} == gone
    assert resp["latestDateCovered"] == sim.now.strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{sim.now.microsecond // 1000:03d}+0000"
    old = api(sim, "sobjects/Account/deleted/", start="2000-01-01T00:00:00Z",
              end="2999-01-01T00:00:00Z")
    assert old.status_code == 400 and old.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_nexus_simulate_serves_the_login_host_and_the_orgs_instance(tmp_path):
    env_file = tmp_path / "sf.env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nexus_core.cli", "simulate", "salesforce", "--port", "0",
         "--env-file", str(env_file)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                line.startswith("credentials of") for line in lines[:-1]):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert lines and lines[0].startswith("salesforce simulator on http://127.0.0.1:"), lines
        creds = json.loads(lines[-1])
        assert creds["extra"]["account_id"] == "00D5g0000000001EAA"
        limits = requests.get(f"{creds['extra']['instance_url']}/services/data/v61.0/limits",
                              headers={"Authorization": f"Bearer {creds['access_token']}"},
                              timeout=10)
        assert limits.status_code == 200 and "DailyApiRequests" in limits.json()
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert env["SALESFORCE_TOKEN_URL"].endswith("/services/oauth2/token")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        proc.stdout.close()
