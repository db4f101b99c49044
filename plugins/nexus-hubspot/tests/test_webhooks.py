"""HubSpot webhooks through `nexus serve`'s ingress and a worker: v3 signatures (v1/v2 when a
delivery carries them), tampering refused, a JSON array of events routed by portalId,
subscription types normalized, and the optional targeted fetch of the changed records."""

from __future__ import annotations

import json
import time

PATH = "/webhooks/hubspot"
URL = "http://nexus.test" + PATH


def post(nexus, body, headers):
    return nexus.client.simulate_post(PATH, body=body, headers=headers)


def events(nexus):
    return nexus.recorder.rows("event")


def connected(nexus, tenant, account):
    """Connected, its first backfill (started by the callback) done and out of the way."""
    nexus.connect(tenant, "main", account)
    nexus.run()
    nexus.recorder.clear()


def test_a_tampered_delivery_is_refused_and_nothing_is_enqueued(sim, nexus):
    account = sim.default_account
    nexus.connect("t1", "main", account)
    body = sim.webhook_body(sim.webhook_events(account, 2))
    headers = sim.sign_webhook(body, URL)
    for forged in (body.replace(b"Changed", b"Hacked!"), body + b" ", body[:-1] + b",{}]"):
        resp = post(nexus, forged, headers)
        assert resp.status_code == 401 and resp.json["error"] == "signature mismatch"
    wrong_url = sim.sign_webhook(body, "http://elsewhere.test" + PATH)
    assert post(nexus, body, wrong_url).status_code == 401  # v3 signs the URL called
    stale = sim.sign_webhook(body, URL, timestamp=time.time() - 600)
    assert post(nexus, body, stale).status_code == 401
    from nexus_core import queues

    assert queues.queue(queues.WEBHOOK, nexus.redis).count == 0
    genuine = post(nexus, body, headers)
    assert genuine.status_code == 200 and genuine.json["enqueued"] == 1


def test_v1_and_v2_signatures_are_accepted_when_the_delivery_says_so(sim, nexus):
    account = sim.default_account
    nexus.connect("t1", "main", account)
    for version in ("v1", "v2"):
        body = sim.webhook_body(sim.webhook_events(account, 1))
        resp = post(nexus, body, sim.sign_webhook(body, URL, version=version))
        assert resp.status_code == 200 and resp.json["enqueued"] == 1, (version, resp.text)
        tampered = post(nexus, body.replace(b"}", b" }", 1),
                        sim.sign_webhook(body, URL, version=version))
        assert tampered.status_code == 401
    # a stale v3 delivery is not rescued by an (untimestamped, replayable) v1 signature
    body = sim.webhook_body(sim.webhook_events(account, 1))
    both = {**sim.sign_webhook(body, URL, version="v1"),
            **sim.sign_webhook(body, URL, timestamp=time.time() - 600)}
    assert post(nexus, body, both).status_code == 401


def test_a_batch_of_several_portals_reaches_each_installation_with_its_own_events(sim, nexus):
    a, b, stranger = sim.default_account, sim.add_account(), sim.add_account()
    nexus.connect("tenant-a", "main", a)
    nexus.connect("tenant-b", "main", b)
    batch = (sim.webhook_events(a, 2) + sim.webhook_events(b, 1, kind="creation")
             + sim.webhook_events(stranger, 1))
    body = sim.webhook_body(batch)
    resp = post(nexus, body, sim.sign_webhook(body, URL))
    assert resp.status_code == 200 and resp.json["enqueued"] == 2
    nexus.run()
    got = {}
    for e in events(nexus):
        got.setdefault(e["tenant"], []).append(e["type"])
    assert got == {"tenant-a": ["contacts.updated"] * 2, "tenant-b": ["contacts.created"]}
    # a HubSpot retry (same eventIds, next attemptNumber) is a replay
    retried = [{**e, "attemptNumber": 1} for e in batch]
    again = sim.webhook_body(retried)
    resp = post(nexus, again, sim.sign_webhook(again, URL))
    assert resp.status_code == 200 and resp.json["enqueued"] == 0


def test_subscription_types_are_normalized_to_event_types(sim, nexus):
    account = sim.default_account
    connected(nexus, "t1", account)
    batch = (sim.webhook_events(account, 1, kind="creation", stream="companies")
             + sim.webhook_events(account, 1, kind="propertyChange", stream="deals")
             + sim.webhook_events(account, 1, kind="deletion", stream="contacts")
             + sim.webhook_events(account, 1, kind="merge", stream="contacts")
             + sim.webhook_events(account, 1, kind="restore", stream="tickets"))
    body = sim.webhook_body(batch)
    assert post(nexus, body, sim.sign_webhook(body, URL)).status_code == 200
    nexus.run()
    assert [e["type"] for e in events(nexus)] == [
        "companies.created", "deals.updated", "contacts.deleted", "contacts.merged",
        "tickets.restored"]
    assert [e["id"] for e in events(nexus)] == [str(e["eventId"]) for e in batch]
    assert nexus.recorder.rows("record") == []  # no fetch unless the installation asks


def test_a_property_change_fetches_the_record_when_configured(sim, nexus):
    account = sim.default_account
    connected(nexus, "t1", account)
    nexus.service.update_installation("t1", "main", changes={
        "fetch_records_on_webhook": True, "properties": {"contacts": ["email", "firstname"]}})
    changes = sim.webhook_events(account, 3)
    deletion = sim.webhook_events(account, 1, kind="deletion", stream="deals")
    merge = sim.webhook_events(account, 1, kind="merge", stream="contacts")
    body = sim.webhook_body(changes + deletion + merge)
    assert post(nexus, body, sim.sign_webhook(body, URL)).json["enqueued"] == 1
    nexus.run()
    records = nexus.recorder.rows("record")
    fetched = {r["id"] for r in records if r["stream"] == "contacts" and not r["deleted"]}
    assert fetched == {str(e["objectId"]) for e in changes + merge}
    assert {(r["stream"], r["id"]) for r in records if r["deleted"]} == {
        ("deals", str(deletion[0]["objectId"])),
        ("contacts", str(merge[0]["mergedObjectIds"][0]))}
    assert len(events(nexus)) == 5
    reads = [r for r in sim.requests(r"/batch/read$")]
    assert len(reads) == 1  # every changed contact in one batch read


def test_the_webhook_secret_defaults_to_the_client_secret_and_can_be_overridden(sim, harness):
    account = sim.default_account
    overridden = harness(sim, HUBSPOT_WEBHOOK_SECRET="another-secret")
    overridden.connect("t1", "main", account)
    body = sim.webhook_body(sim.webhook_events(account, 1))
    signed_by_client_secret = sim.sign_webhook(body, URL)
    assert post(overridden, body, signed_by_client_secret).status_code == 401
    from nexus_core.webhooks import sign_hubspot_v3

    ts = str(int(time.time() * 1000))
    headers = {"X-HubSpot-Request-Timestamp": ts, "Content-Type": "application/json",
               "X-HubSpot-Signature-v3": sign_hubspot_v3("another-secret", "POST", URL, body,
                                                         ts)}
    assert post(overridden, body, headers).status_code == 200


def test_a_delivery_through_the_simulators_own_sender_reaches_the_sink(sim, nexus):
    """What `make demo` does: the simulator signs and POSTs, as HubSpot would."""
    account = sim.default_account
    nexus.connect("t1", "main", account)
    body = sim.webhook_body(sim.webhook_events(account, 1))
    resp = post(nexus, body, sim.sign_webhook(body, URL))
    assert json.loads(resp.text)["enqueued"] == 1
    nexus.run()
    assert events(nexus)[0]["provider"] == "hubspot"
