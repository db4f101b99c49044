"""POST /webhooks/... through the Falcon app in-process, against a real Redis and a real SQLite
store: what gets enqueued (RQ's own Queue/Job APIs), what never does, and what the provider
hears back."""

import json
import time

import falcon
import pytest
from falcon import testing
from hypothesis import given
from hypothesis import strategies as st
from rq.job import Job
from rq.serializers import JSONSerializer

from nexus_core.ids import split_key
from nexus_core.jobs import webhook_request_of
from nexus_core.queues import JOB_WEBHOOK, job_id

#: The public port shows /metrics and the /readyz details only with the metrics token
#: (NEXUS_METRICS_TOKEN in conftest's environment).
METRICS_AUTH = {"Authorization": "Bearer metrics-token-for-tests"}


def jobs(queue):
    return [Job.fetch(i, connection=queue.connection, serializer=JSONSerializer)
            for i in queue.job_ids]


def post(client, path, body, headers):
    return client.simulate_post(path, body=body, headers=headers)


# -- genuine deliveries ---------------------------------------------------------------------------


def test_hubspot_batch_is_routed_to_each_portals_installation_one_job_each(
    client, webhook_queue, h
):
    body = json.dumps(h.hubspot_events(62515, 777, 62515)).encode()
    resp = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    assert resp.status_code == 200, resp.text
    assert resp.json == {"ok": True, "enqueued": 2, "duplicates": 0, "unknown_account_events": 0,
                         "ignored_installations": 0}
    enqueued = {(j.kwargs["tenant_id"], j.kwargs["install_id"]): j for j in jobs(webhook_queue)}
    assert set(enqueued) == {("tenant-a", "inst-a"), ("tenant-b", "inst-b")}
    job = enqueued[("tenant-a", "inst-a")]
    assert job.func_name == JOB_WEBHOOK
    assert job.kwargs["provider"] == "hubspot"
    assert "body" not in job.kwargs["request"]  # kept raw in the job's hash, not in its JSON
    request = webhook_request_of(job)
    assert request.body == body  # the raw bytes, exactly as signed
    assert request.url == h.PUBLIC_URL + "/webhooks/hubspot"
    assert request.header("X-HubSpot-Signature-v3")
    # one job per delivery and installation: the id ends with a digest of its events' eventIds
    prefix = job_id("webhook", "hubspot", "tenant-a", "inst-a")
    assert job.id.startswith(prefix + "__") and len(split_key(job.id)) == len(split_key(prefix)) + 1


def test_replayed_delivery_answers_200_and_is_enqueued_once(client, webhook_queue, h):
    body = json.dumps(h.hubspot_events(62515)).encode()
    first = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    again = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    assert first.status_code == again.status_code == 200
    assert first.json["enqueued"] == 1 and again.json == {
        "ok": True, "enqueued": 0, "duplicates": 1, "unknown_account_events": 0,
        "ignored_installations": 0}
    assert len(webhook_queue) == 1


def test_hubspot_retry_with_a_new_attempt_number_is_a_duplicate(client, webhook_queue, h):
    """HubSpot retries re-send the same eventIds with attemptNumber + 1 (a different body)."""
    body = json.dumps(h.hubspot_events(62515)).encode()
    retry = json.dumps(h.hubspot_events(62515, attemptNumber=1)).encode()
    assert post(client, "/webhooks/hubspot", body, h.hubspot_headers(body)).json["enqueued"] == 1
    assert post(client, "/webhooks/hubspot", retry, h.hubspot_headers(retry)).json[
        "duplicates"] == 1
    assert len(webhook_queue) == 1


def test_events_of_unknown_accounts_are_counted_and_dropped_not_refused(
    client, webhook_queue, h
):
    body = json.dumps(h.hubspot_events(62515, 999, 999)).encode()
    resp = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    assert resp.status_code == 200
    assert resp.json["enqueued"] == 1 and resp.json["unknown_account_events"] == 2
    only_unknown = json.dumps(h.hubspot_events(31337, start=50)).encode()
    resp = post(client, "/webhooks/hubspot", only_unknown, h.hubspot_headers(only_unknown))
    assert resp.status_code == 200 and resp.json["enqueued"] == 0
    assert len(webhook_queue) == 1
    metrics = client.simulate_get("/metrics", headers=METRICS_AUTH).text
    assert 'nexus_webhook_unknown_account_events_total{provider="hubspot"}' in metrics


def test_per_installation_url_enqueues_for_that_installation(client, store, webhook_queue, h):
    key = store.get_installation("tenant-b", "inst-b").webhook_key
    assert len(key) >= 32  # opaque and unguessable: not the install id
    path = f"/webhooks/hubspot/{key}"
    body = json.dumps(h.hubspot_events(777)).encode()
    resp = post(client, path, body, h.hubspot_headers(body, path))
    assert resp.status_code == 200 and resp.json["enqueued"] == 1
    (job,) = jobs(webhook_queue)
    assert (job.kwargs["tenant_id"], job.kwargs["install_id"]) == ("tenant-b", "inst-b")
    assert job.id == job_id("webhook", "hubspot", "tenant-b", "inst-b", "i-1")


def test_per_installation_url_does_not_need_unique_install_ids(client, store, webhook_queue, h):
    """Defect 9: two tenants may both call an installation "main"; each URL reaches its own."""
    store.add_installation("tenant-y", "main", "hubspot")
    store.add_installation("tenant-z", "main", "hubspot")
    for tenant in ("tenant-y", "tenant-z"):
        key = store.get_installation(tenant, "main").webhook_key
        path = f"/webhooks/hubspot/{key}"
        body = json.dumps(h.hubspot_events(5, start=100 if tenant == "tenant-y" else 200)).encode()
        assert post(client, path, body, h.hubspot_headers(body, path)).json["enqueued"] == 1
    assert sorted(j.kwargs["tenant_id"] for j in jobs(webhook_queue)) == ["tenant-y", "tenant-z"]
    old_path = "/webhooks/hubspot/main"  # the install id is no longer a URL
    body = json.dumps(h.hubspot_events(5, start=300)).encode()
    assert post(client, old_path, body, h.hubspot_headers(body, old_path)).status_code == 404


def test_a_rotated_webhook_key_stops_the_old_url_at_once(app, store, webhook_queue, h):
    client = testing.TestClient(app)
    old = store.get_installation("tenant-b", "inst-b").webhook_key
    new = store.rotate_webhook_key("tenant-b", "inst-b").webhook_key
    assert new != old
    body = json.dumps(h.hubspot_events(777)).encode()
    resp = post(client, f"/webhooks/hubspot/{old}", body,
                h.hubspot_headers(body, f"/webhooks/hubspot/{old}"))
    assert resp.status_code == 404
    resp = post(client, f"/webhooks/hubspot/{new}", body,
                h.hubspot_headers(body, f"/webhooks/hubspot/{new}"))
    assert resp.status_code == 200 and resp.json["enqueued"] == 1


@pytest.mark.parametrize("status", ["disabled", "pending_authorization"])
def test_deliveries_for_an_inactive_installation_are_answered_not_enqueued(
    client, store, webhook_queue, h, status
):
    """Defect 10: they were answered 200 and enqueued, then failed in the worker."""
    store.set_status("tenant-b", "inst-b", status)
    body = json.dumps(h.hubspot_events(777, 62515)).encode()  # inst-b's portal and inst-a's
    resp = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    assert resp.status_code == 200
    assert resp.json["enqueued"] == 1 and resp.json["ignored_installations"] == 1
    assert [j.kwargs["install_id"] for j in jobs(webhook_queue)] == ["inst-a"]
    key = store.get_installation("tenant-b", "inst-b").webhook_key
    path = f"/webhooks/hubspot/{key}"
    only_b = json.dumps(h.hubspot_events(777, start=40)).encode()
    resp = post(client, path, only_b, h.hubspot_headers(only_b, path))
    assert resp.status_code == 200 and resp.json["enqueued"] == 0
    assert resp.json["ignored_installations"] == 1
    assert len(webhook_queue) == 1
    metrics = client.simulate_get("/metrics", headers=METRICS_AUTH).text
    assert (f'nexus_webhook_ignored_installations_total{{provider="hubspot",status="{status}"}}'
            in metrics)
    assert 'outcome="ignored_inactive",provider="hubspot"' in metrics


def test_hubspot_v3_signature_covers_the_query_string_and_decoded_escapes(
    client, webhook_queue, h
):
    body = json.dumps(h.hubspot_events(62515)).encode()
    headers = h.hubspot_headers(body, "/webhooks/hubspot?src=a%3Ab")  # signed as ...?src=a:b
    resp = client.simulate_post("/webhooks/hubspot", query_string="src=a%3Ab", body=body,
                                headers=headers)
    assert resp.status_code == 200, resp.text
    resp = client.simulate_post("/webhooks/hubspot", query_string="src=other", body=body,
                                headers=headers)
    assert resp.status_code == 401


def test_without_public_url_the_uri_this_server_saw_is_verified(
    env, settings, store, redis_client, providers, webhook_queue, h
):
    from nexus_core.config import load_settings
    from nexus_core.web import create_app

    env.pop("NEXUS_PUBLIC_URL")
    app = create_app(load_settings(env, env_file=None), store, redis_client, providers)
    client = testing.TestClient(app)
    body = json.dumps(h.hubspot_events(62515)).encode()
    headers = h.hubspot_headers(body, base="http://falconframework.org")
    assert post(client, "/webhooks/hubspot", body, headers).status_code == 200
    proxied = h.hubspot_headers(body, base=h.PUBLIC_URL)
    assert post(client, "/webhooks/hubspot", body, proxied).status_code == 401
    assert len(webhook_queue) == 1


def test_secret_rotation_accepts_old_and_new_secret(
    env, store, redis_client, providers, webhook_queue, h
):
    from nexus_core.config import load_settings
    from nexus_core.web import create_app

    env["HUBSPOT_WEBHOOK_SECRET"] = "old-secret, new-secret"
    client = testing.TestClient(
        create_app(load_settings(env, env_file=None), store, redis_client, providers))
    for i, secret in enumerate(["old-secret", "new-secret"]):
        body = json.dumps(h.hubspot_events(62515, start=10 + i)).encode()
        assert post(client, "/webhooks/hubspot", body,
                    h.hubspot_headers(body, secret=secret)).status_code == 200
    body = json.dumps(h.hubspot_events(62515, start=20)).encode()
    assert post(client, "/webhooks/hubspot", body,
                h.hubspot_headers(body, secret=h.HUBSPOT_SECRET)).status_code == 401
    assert len(webhook_queue) == 2


def test_a_declared_fallback_secret_variable_is_used_when_the_first_is_unset(
    env, store, redis_client, providers, webhook_queue, h
):
    """The core knows no provider: the hubspot-like plugin lists
    ("HUBSPOT_WEBHOOK_SECRET", "HUBSPOT_CLIENT_SECRET") in its secret_envs."""
    from nexus_core.config import load_settings
    from nexus_core.web import create_app

    del env["HUBSPOT_WEBHOOK_SECRET"]
    env["HUBSPOT_CLIENT_SECRET"] = "the-client-secret"
    client = testing.TestClient(
        create_app(load_settings(env, env_file=None), store, redis_client, providers))
    body = json.dumps(h.hubspot_events(62515)).encode()
    assert post(client, "/webhooks/hubspot", body,
                h.hubspot_headers(body, secret="the-client-secret")).status_code == 200
    assert len(webhook_queue) == 1


def test_every_scheme_accepts_a_genuine_delivery(client, webhook_queue, h):
    from nexus_core import webhooks as wh

    hub_body = json.dumps(h.hubspot_events(62515)).encode()
    v1 = {"X-HubSpot-Signature": wh.sign_hubspot_v1(h.HUBSPOT_SECRET, hub_body),
          "X-HubSpot-Signature-Version": "v1"}
    v2 = {"X-HubSpot-Signature": wh.sign_hubspot_v2(
        h.HUBSPOT_SECRET, "POST", h.PUBLIC_URL + "/webhooks/hubspot-v2", hub_body),
        "X-HubSpot-Signature-Version": "v2"}
    std_body = json.dumps({"account_id": "acct-1", "type": "widget.created"}).encode()
    stripe_body = json.dumps({"id": "evt_1", "object": "event", "account": "acct_1"}).encode()
    custom_body = json.dumps({"account": "c-1", "n": 1}).encode()
    cases = [
        ("hubspot-v1", hub_body, v1),
        ("hubspot-v2", hub_body, v2),
        ("hubspot", hub_body, h.hubspot_headers(hub_body)),
        ("slack", h.slack_event(), h.slack_headers(h.slack_event())),
        ("std", std_body, h.std_headers(std_body)),
        ("stripe-like", stripe_body, h.stripe_headers(stripe_body)),
        ("custom", custom_body, {"X-Custom-Token": h.CUSTOM_SECRET}),
    ]
    for provider, body, headers in cases:
        resp = post(client, f"/webhooks/{provider}", body, headers)
        assert (provider, resp.status_code, resp.json.get("enqueued")) == (provider, 200, 1)
    assert sorted(j.kwargs["install_id"] for j in jobs(webhook_queue)) == [
        "inst-a", "inst-c", "inst-d", "inst-e", "inst-f", "inst-g", "inst-h"]
    bad = post(client, "/webhooks/custom", custom_body, {"X-Custom-Token": "guess"})
    assert bad.status_code == 401


def test_slack_url_verification_is_answered_with_the_challenge_after_verification(
    client, webhook_queue, h
):
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge,
                       "type": "url_verification"}).encode()
    resp = post(client, "/webhooks/slack", body, h.slack_headers(body))
    assert resp.status_code == 200 and resp.json == {"challenge": challenge}
    forged = post(client, "/webhooks/slack", body, h.slack_headers(body, secret="nope"))
    assert forged.status_code == 401 and "challenge" not in forged.text
    assert len(webhook_queue) == 0


def test_slack_retry_of_the_same_event_id_is_enqueued_once(client, webhook_queue, h):
    body = h.slack_event(event_id="Ev42")
    assert post(client, "/webhooks/slack", body, h.slack_headers(body)).json["enqueued"] == 1
    retry = {**h.slack_headers(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"}
    assert post(client, "/webhooks/slack", body, retry).json["duplicates"] == 1
    assert len(webhook_queue) == 1


def test_standard_webhooks_dedupes_on_the_webhook_id_header(client, webhook_queue, h):
    body = json.dumps({"account_id": "acct-1"}).encode()
    headers = h.std_headers(body, msg_id="msg_same")
    assert post(client, "/webhooks/std", body, headers).json["enqueued"] == 1
    assert post(client, "/webhooks/std", body, h.std_headers(body, msg_id="msg_same")).json[
        "duplicates"] == 1
    assert post(client, "/webhooks/std", body, h.std_headers(body, msg_id="msg_other")).json[
        "enqueued"] == 1
    assert len(webhook_queue) == 2


def test_dedupe_marks_expire_after_the_configured_ttl(
    env, store, redis_client, providers, webhook_queue, h
):
    from nexus_core.config import load_settings
    from nexus_core.web import create_app

    env["NEXUS_WEBHOOK_DEDUPE_TTL"] = "3600"
    client = testing.TestClient(
        create_app(load_settings(env, env_file=None), store, redis_client, providers))
    body = json.dumps({"account_id": "acct-1"}).encode()
    assert post(client, "/webhooks/std", body, h.std_headers(body, msg_id="m")).status_code == 200
    (key,) = redis_client.keys("nexus:webhook:seen:*")
    assert redis_client.get(key) == b"done"
    # the provider's declared window (3 days by default) wins over a shorter setting
    assert 3 * 24 * 3600 - 5 <= redis_client.ttl(key) <= 3 * 24 * 3600


# -- bad input: each answered without enqueueing anything ----------------------------------------


@pytest.fixture
def nothing_enqueued(webhook_queue, redis_client):
    yield
    assert len(webhook_queue) == 0
    assert redis_client.keys("nexus:webhook:seen:*") == []


def _hub(h, **kw):
    body = json.dumps(h.hubspot_events(62515)).encode()
    return body, h.hubspot_headers(body, **kw)


def test_tampered_body_is_401(client, nothing_enqueued, h):
    body, headers = _hub(h)
    resp = post(client, "/webhooks/hubspot", body.replace(b"62515", b"62516"), headers)
    assert resp.status_code == 401 and resp.json == {"error": "signature mismatch"}


def test_signature_by_a_wrong_secret_is_401(client, nothing_enqueued, h):
    body, headers = _hub(h, secret="not-the-secret")
    assert post(client, "/webhooks/hubspot", body, headers).status_code == 401


def test_missing_signature_headers_are_401(client, nothing_enqueued, h):
    body, headers = _hub(h)
    for name in ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"):
        partial = {k: v for k, v in headers.items() if k != name}
        resp = post(client, "/webhooks/hubspot", body, partial)
        assert resp.status_code == 401 and resp.json["error"] == f"missing {name} header"


def test_malformed_signature_headers_are_401(client, nothing_enqueued, h):
    body, headers = _hub(h)
    for bad in ({"X-HubSpot-Request-Timestamp": "yesterday"},
                {"X-HubSpot-Signature-v3": "not base64 at all"}):
        assert post(client, "/webhooks/hubspot", body, {**headers, **bad}).status_code == 401
    stripe_body = b'{"id": "evt_9", "account": "acct_1"}'
    resp = post(client, "/webhooks/stripe-like", stripe_body, {"Stripe-Signature": "t=1"})
    assert resp.status_code == 401 and "malformed" in resp.json["error"]


@pytest.mark.parametrize("offset_s", [-301, -7200, 301, 7200])
def test_timestamp_outside_the_window_is_401(client, nothing_enqueued, h, offset_s):
    body, headers = _hub(h, ts_ms=int((time.time() + offset_s) * 1000))
    resp = post(client, "/webhooks/hubspot", body, headers)
    assert resp.status_code == 401 and "window" in resp.json["error"]


def test_body_reserialized_after_signing_is_401(client, nothing_enqueued, h):
    body, headers = _hub(h)
    respaced = json.dumps(json.loads(body), indent=1).encode()
    assert post(client, "/webhooks/hubspot", respaced, headers).status_code == 401


def test_oversize_body_is_413(client, nothing_enqueued, h):
    body = json.dumps(h.hubspot_events(*[62515] * 600)).encode()
    assert len(body) > 65536
    resp = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    assert resp.status_code == 413


def test_oversize_body_is_refused_on_content_length_without_reading_it(
    app, nothing_enqueued
):
    class Exploding:
        def read(self, *a):
            raise AssertionError("the body was read")

        readline = readlines = read

    env = testing.create_environ("/webhooks/hubspot", method="POST",
                                 headers={"Content-Length": str(10 * 1024 * 1024)})
    env["wsgi.input"] = Exploding()
    status = {}
    chunks = app(env, lambda s, hdrs, *a: status.setdefault("s", s))
    assert status["s"].startswith("413")
    assert b"larger than" in b"".join(chunks)


def test_oversize_chunked_body_without_content_length_is_413(app, nothing_enqueued, h):
    import io

    body = b"[" + b" " * 70000 + b"]"
    env = testing.create_environ("/webhooks/hubspot", method="POST",
                                 headers=h.hubspot_headers(body))
    env.pop("CONTENT_LENGTH", None)
    env["HTTP_TRANSFER_ENCODING"] = "chunked"  # the server has de-chunked wsgi.input
    env["wsgi.input"] = io.BytesIO(body)
    status = {}
    app(env, lambda s, hdrs, *a: status.setdefault("s", s))
    assert status["s"].startswith("413")


def test_non_json_body_is_400_after_verification(client, nothing_enqueued, h):
    body = b"token=abc&team_id=T1"
    resp = post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    assert resp.status_code == 400 and resp.json == {"error": "body is not JSON"}
    unsigned = post(client, "/webhooks/hubspot", body, {})
    assert unsigned.status_code == 401  # a forger learns nothing about the body check


def test_unknown_provider_is_404(client, nothing_enqueued, h):
    body, headers = _hub(h)
    assert post(client, "/webhooks/nope", body, headers).status_code == 404
    assert post(client, "/webhooks/nope/inst-a", body, headers).status_code == 404
    assert post(client, "/webhooks/quiet", body, headers).status_code == 404  # no webhooks


def test_unknown_webhook_key_is_404(client, store, nothing_enqueued, h):
    path = "/webhooks/hubspot/no-such-key"
    body = json.dumps(h.hubspot_events(62515)).encode()
    resp = post(client, path, body, h.hubspot_headers(body, path))
    assert resp.status_code == 404 and resp.json["error"] == "unknown webhook URL"
    slack_key = store.get_installation("tenant-c", "inst-c").webhook_key
    other = f"/webhooks/hubspot/{slack_key}"  # exists, but for another provider
    assert post(client, other, body, h.hubspot_headers(body, other)).status_code == 404


def test_unknown_install_with_a_bad_signature_is_401_not_404(client, nothing_enqueued, h):
    """Install ids are not disclosed to unauthenticated callers."""
    body = json.dumps(h.hubspot_events(62515)).encode()
    resp = post(client, "/webhooks/hubspot/no-such-install", body, {})
    assert resp.status_code == 401


def test_missing_secret_configuration_is_503_so_the_provider_retries(
    env, store, redis_client, providers, nothing_enqueued, h
):
    from nexus_core.config import load_settings
    from nexus_core.web import create_app

    del env["SLACK_SIGNING_SECRET"]
    client = testing.TestClient(
        create_app(load_settings(env, env_file=None), store, redis_client, providers))
    body = h.slack_event()
    assert post(client, "/webhooks/slack", body, h.slack_headers(body)).status_code == 503


def test_redis_unreachable_is_503_never_200(settings, store, providers, webhook_queue, h):
    import redis

    from nexus_core.testing import free_port
    from nexus_core.web import create_app

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    client = testing.TestClient(create_app(settings, store, dead, providers))
    body, headers = _hub(h)
    resp = post(client, "/webhooks/hubspot", body, headers)
    assert resp.status_code == 503 and resp.headers.get("Retry-After")
    assert len(webhook_queue) == 0


def test_a_failed_enqueue_leaves_no_dedupe_mark_so_the_retry_is_enqueued(
    client, webhook_queue, redis_client, h
):
    """Redis refuses a write half-way through the enqueue (the queue key holds a string): the
    answer is 503 and no dedupe mark is left, so the provider's retry becomes a job."""
    body, headers = _hub(h)
    redis_client.set(webhook_queue.key, b"not a list")
    assert post(client, "/webhooks/hubspot", body, headers).status_code == 503
    assert redis_client.keys("nexus:webhook:seen:*") == []
    redis_client.delete(webhook_queue.key)
    assert post(client, "/webhooks/hubspot", body, h.hubspot_headers(body)).status_code == 200
    assert len(webhook_queue) == 1
    assert redis_client.keys("nexus:webhook:seen:*")


def test_concurrent_copies_of_a_delivery_enqueue_one_job_and_all_get_200(
    app, webhook_queue, h
):
    """Providers retry on timeouts, so copies can arrive at once on different server threads:
    the mark and the job are written in one atomic step, so exactly one copy is enqueued."""
    from concurrent.futures import ThreadPoolExecutor

    body, _ = _hub(h)

    def deliver(_):
        return post(testing.TestClient(app), "/webhooks/hubspot", body,
                    h.hubspot_headers(body)).json

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, range(16)))
    assert len(webhook_queue) == 1
    assert sum(a["enqueued"] for a in answers) == 1
    assert sum(a["duplicates"] for a in answers) == 15


def test_metrics_count_deliveries_by_provider_and_outcome(client, h):
    body, headers = _hub(h)
    post(client, "/webhooks/hubspot", body, headers)
    post(client, "/webhooks/hubspot", body, h.hubspot_headers(body))
    post(client, "/webhooks/hubspot", body, h.hubspot_headers(body, secret="x"))
    post(client, "/webhooks/ghost", body, headers)
    resp = client.simulate_get("/metrics", headers=METRICS_AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for outcome in ("enqueued", "duplicate", "rejected_401"):
        assert f'nexus_webhook_deliveries_total{{outcome="{outcome}",provider="hubspot"}}' in text
    assert 'nexus_webhook_deliveries_total{outcome="rejected_404",provider="unknown"}' in text
    assert 'nexus_webhook_rejections_total{provider="hubspot",reason="signature"}' in text
    assert 'nexus_webhook_rejections_total{provider="unknown",reason="unknown_target"}' in text
    assert "ghost" not in text  # unknown names never become label values


REASONS = {"signature", "timestamp", "missing_signature", "malformed_signature",
           "account_mismatch", "unknown_target", "too_large", "bad_body", "no_secret",
           "unavailable"}


@given(message=st.text(max_size=80), status=st.sampled_from([400, 401, 403, 404, 413, 503]))
def test_a_rejection_reason_is_one_of_a_bounded_set(message, status):
    from nexus_core.errors import WebhookRejected
    from nexus_core.webhooks import rejection_reason

    reason = rejection_reason(WebhookRejected(message or "x", status=status))
    assert reason in REASONS or reason == f"status_{status}"
    if status == 401:
        assert reason in {"signature", "timestamp", "missing_signature", "malformed_signature"}


def test_trailing_slash_is_routed_and_signed_as_called(client, webhook_queue, h):
    body = json.dumps(h.hubspot_events(62515)).encode()
    resp = post(client, "/webhooks/hubspot/", body, h.hubspot_headers(body, "/webhooks/hubspot/"))
    assert resp.status_code == 200 and len(webhook_queue) == 1


def test_only_post_is_allowed_on_webhook_urls(client):
    assert client.simulate_get("/webhooks/hubspot").status == falcon.HTTP_405
