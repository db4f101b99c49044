"""Outbound Messages end to end: the simulator posts real SOAP messages to a real `nexus serve`
app on a socket and judges the answer as Salesforce does (only the exact ack stops its
retries); the org is checked, redeliveries are deduplicated by notification id, and XML bombs
or anything else that is not an Outbound Message is refused with a 4xx — never a 500."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nexus_salesforce import outbound

from nexus_core import hookimpl, queues
from nexus_core.testing.simulator import SimulatorServer

XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


class Captured:
    """A sink keeping what reached it (the worker runs in this process)."""

    def __init__(self):
        self.events, self.records = [], []

    @hookimpl
    def process_events(self, ctx, events):
        self.events += [(ctx.tenant_id, e) for e in events]

    @hookimpl
    def process_records(self, ctx, stream, records):
        self.records += list(records)


@pytest.fixture
def served(nexus):
    """`nexus serve`'s app on a real port, and a sink that keeps what it gets."""
    captured = Captured()
    nexus.registry.register(captured, "captured")
    server = SimulatorServer(nexus.client.app).start()
    yield server.url, captured
    server.stop()


def queued(nexus):
    return queues.queue(queues.WEBHOOK, nexus.redis).count


def test_a_message_is_acknowledged_exactly_and_each_notification_reaches_the_sinks(
    sim, nexus, served
):
    url, captured = served
    org = sim.default_account
    nexus.connect("t1", "main", org)
    nexus.connect("t2", "main", sim.add_account())
    status, answer = sim.send_webhook(f"{url}/webhooks/salesforce", org, 3,
                                      send_session_id=True)
    assert status == 200 and answer == outbound.ACK
    assert sim.acknowledged == 1 and sim.outbox == []
    nexus.run()
    assert {tenant for tenant, _ in captured.events} == {"t1"}
    events = [e for _, e in captured.events]
    assert len(events) == 3 and len({e.id for e in events}) == 3
    for event in events:
        assert event.type == "Account.outbound_message" and event.account_id == org
        assert event.id.startswith("04l") and event.object_id.startswith("001")
        assert event.payload["sobject"]["Id"] == event.object_id
        assert event.occurred_at is not None
        assert "SessionId" not in event.payload and "00D!AQ0AQsimsession" not in repr(event)


def test_a_redelivered_message_is_acknowledged_again_but_processed_once(sim, nexus, served):
    url, captured = served
    org = sim.default_account
    nexus.connect("t1", "main", org)
    body = sim.webhook_body(sim.webhook_events(org, 2))
    for _ in range(3):
        assert sim.deliver(f"{url}/webhooks/salesforce", body)[0] == 200
    assert sim.acknowledged == 3 and queued(nexus) == 1
    nexus.run()
    assert len(captured.events) == 2


def test_a_message_that_was_not_acknowledged_is_retried_by_salesforce(sim, nexus, served):
    url, captured = served
    org = sim.default_account
    nexus.connect("t1", "main", org)
    failing = {"left": 1}
    app = nexus.client.app

    def flaky(environ, start_response):  # the load balancer in front fails once
        if failing["left"]:
            failing["left"] -= 1
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"try later"]
        return app(environ, start_response)

    with SimulatorServer(flaky) as proxy:
        status, _ = sim.send_webhook(f"{proxy.url}/webhooks/salesforce", org, 2)
        assert status == 503 and len(sim.outbox) == 1 and sim.acknowledged == 0
        assert sim.redeliver() == 0 and sim.acknowledged == 1
    nexus.run()
    assert len(captured.events) == 2


@pytest.mark.parametrize(("status", "answer", "acked"), [
    (200, outbound.ACK, True),
    (200, outbound.ACK.replace("notificationsResponse", "notifications"), False),
    (200, outbound.ACK.replace("<Ack>true</Ack>", "<Ack>false</Ack>"), False),
    (200, outbound.ACK.replace("http://soap.sforce.com/2005/09/outbound", "urn:other"), False),
    (500, outbound.ACK, False),
    (200, '{"ok": true}', False),
])
def test_salesforce_counts_only_the_exact_ack_as_delivered(sim, status, answer, acked):
    def receiver(environ, start_response):
        start_response(f"{status} X", [("Content-Type", "text/xml")])
        return [answer.encode()]

    with SimulatorServer(receiver) as server:
        sim.send_webhook(server.url, sim.default_account, 1)
    assert (sim.acknowledged, len(sim.outbox)) == ((1, 0) if acked else (0, 1))


def test_the_org_of_a_message_must_be_the_installations(sim, nexus, served):
    url, _ = served
    a, b = sim.default_account, sim.add_account()
    inst = nexus.connect("t1", "main", a)
    own = f"{url}/webhooks/salesforce/{inst.webhook_key}"
    assert sim.send_webhook(own, a, 1) == (200, outbound.ACK)
    status, answer = sim.send_webhook(own, b, 1)  # another org's message at A's own URL
    assert status == 403 and answer != outbound.ACK
    status, _ = sim.send_webhook(own, a, 1, tamper=True)  # claiming another org
    assert status == 403
    assert queued(nexus) == 1 and len(sim.outbox) == 2  # Salesforce would retry those two
    # the app-level URL routes by org: an org nobody connected is acknowledged, not enqueued
    assert sim.send_webhook(f"{url}/webhooks/salesforce", b, 1) == (200, outbound.ACK)
    assert queued(nexus) == 1


def _envelope(inner: str, prolog: str = "") -> bytes:
    return (f'<?xml version="1.0"?>{prolog}<soapenv:Envelope xmlns:soapenv='
            f'"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>{inner}'
            "</soapenv:Body></soapenv:Envelope>").encode()


LAUGHS = "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
BAD_BODIES = {
    "billion laughs": _envelope("&lol9;", f'<!DOCTYPE lolz [<!ENTITY lol0 "lol">{LAUGHS}]>'),
    "external entity": _envelope(
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">&xxe;</notifications>',
        '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'),
    "external DTD": _envelope("", '<!DOCTYPE foo SYSTEM "http://127.0.0.1:9/evil.dtd">'),
    "parameter entity": _envelope(
        "", '<!DOCTYPE foo [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>'),
    "malformed": b"<soapenv:Envelope><unclosed>",
    "not XML": b'{"OrganizationId": "00D5g0000000001EAA"}',
    "another SOAP body": _envelope('<fault xmlns="urn:x">no</fault>'),
    "too many notifications": _envelope(
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        "<OrganizationId>00D5g0000000001EAA</OrganizationId>"
        + "<Notification><Id>04l5g0000000001AAP</Id><sObject "
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="sf:Account">'
        "</sObject></Notification>" * 101 + "</notifications>"),
    "a notification without an id": _envelope(
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><Notification>'
        '<sObject xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="sf:Account">'
        "</sObject></Notification></notifications>"),
    "an org id that is not one": _envelope(
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        "<OrganizationId>../../etc</OrganizationId></notifications>"),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_xml_bombs_and_bodies_that_are_not_outbound_messages_are_refused_with_a_4xx(
    sim, nexus, name
):
    nexus.connect("t1", "main", sim.default_account)
    resp = nexus.client.simulate_post("/webhooks/salesforce", body=BAD_BODIES[name],
                                      headers=XML)
    assert resp.status_code == 400, resp.text
    assert resp.text != outbound.ACK and queued(nexus) == 0


def test_what_is_not_a_post_of_xml_or_too_large_is_refused(sim, nexus):
    nexus.connect("t1", "main", sim.default_account)
    body = sim.webhook_body(sim.webhook_events(sim.default_account, 1))
    as_json = nexus.client.simulate_post("/webhooks/salesforce", body=body,
                                         headers={"Content-Type": "application/json"})
    assert as_json.status_code == 401
    huge = body.replace(b"</notifications>", b"<!--" + b"x" * 1_100_000 + b"--></notifications>")
    assert nexus.client.simulate_post("/webhooks/salesforce", body=huge,
                                      headers=XML).status_code == 413
    assert queued(nexus) == 0


def test_a_proxy_verified_header_is_required_when_configured(sim, harness):
    nexus = harness(sim, SALESFORCE_WEBHOOK_VERIFIED_HEADER="X-Salesforce-Verified: SUCCESS")
    org = sim.default_account
    nexus.connect("t1", "main", org)
    body = sim.webhook_body(sim.webhook_events(org, 1))
    for sent, expected in (({}, 401), ({"X-Salesforce-Verified": "NONE"}, 401),
                           ({"X-Salesforce-Verified": "SUCCESS"}, 200)):
        resp = nexus.client.simulate_post("/webhooks/salesforce", body=body,
                                          headers={**XML, **sent})
        assert resp.status_code == expected, (sent, resp.text)
    assert queued(nexus) == 1


def test_the_records_of_a_message_can_be_read_from_the_org(sim, nexus, served):
    url, captured = served
    org = sim.default_account
    nexus.connect("t1", "main", org)
    nexus.service.update_installation("t1", "main", changes={"fetch_records_on_webhook": True})
    nexus.run()  # the first backfill the connection started
    captured.records.clear()
    sim.send_webhook(f"{url}/webhooks/salesforce", org, 3, stream="Opportunity")
    nexus.run()
    ids = sorted(e.object_id for _, e in captured.events)
    assert sorted(r.id for r in captured.records) == ids
    for record in captured.records:  # the org's own state, read from its instance
        row = sim._row(org, "Opportunity", sim.index_of("Opportunity", org, record.id))
        assert record.stream == "Opportunity" and record.data["attributes"]["type"] == \
            "Opportunity"
        assert (record.data["StageName"], record.data["SystemModstamp"]) == (
            row["StageName"], row["SystemModstamp"])
    assert sim.soql_log[-1].startswith("SELECT Id, SystemModstamp, Name, AccountId")
    assert " WHERE Id IN ('" in sim.soql_log[-1]


@pytest.fixture
def genuine(sim):
    return sim.webhook_body(sim.webhook_events(sim.default_account, 2))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_body_is_acknowledged_or_refused_with_a_4xx_never_a_500(nexus, genuine, data):
    choice = data.draw(st.sampled_from(["random", "text", "mutated", "cut"]))
    if choice == "random":
        body = data.draw(st.binary(max_size=400))
    elif choice == "text":
        body = data.draw(st.text(alphabet=st.sampled_from(list("<>/=\"'&;!?[]%: xmlnsENTITYDOC")),
                                 max_size=300)).encode()
    elif choice == "mutated":
        at = data.draw(st.integers(0, len(genuine) - 1))
        body = genuine[:at] + data.draw(st.binary(min_size=1, max_size=8)) + genuine[at + 1:]
    else:
        body = genuine[:data.draw(st.integers(0, len(genuine)))]
    resp = nexus.client.simulate_post("/webhooks/salesforce", body=body, headers=XML)
    assert resp.status_code in (200, 400), resp.text
    assert (resp.text == outbound.ACK) == (resp.status_code == 200)
