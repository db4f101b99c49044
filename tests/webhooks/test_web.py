"""The rest of the web app: the OAuth routes, the probes, the service-side entry point, and a
real `nexus serve` (gunicorn) subprocess."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from falcon import testing
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from nexus_core import queues
from nexus_core import webhooks as wh
from nexus_core.errors import WebhookRejected
from nexus_core.queues import BACKFILL, JOB_BACKFILL

#: The public port shows /metrics and the /readyz details only with the metrics token
#: (NEXUS_METRICS_TOKEN in conftest's environment).
METRICS_AUTH = {"Authorization": "Bearer metrics-token-for-tests"}

# -- OAuth ----------------------------------------------------------------------------------------


def _link(store, providers, settings, tenant="t-9", install="i-9", **kw):
    from nexus_core import oauth

    info = oauth.create_connect_link(store, providers, "hubspot", tenant, install,
                                     settings=settings, **kw)
    parts = urlsplit(info.url)
    assert f"{parts.scheme}://{parts.netloc}" == settings.public_url
    return parts.path, dict(parse_qs(parts.query, strict_parsing=True))


def _authorize(client, store, providers, settings, tenant="t-9", install="i-9", **kw):
    path, params = _link(store, providers, settings, tenant, install, **kw)
    resp = client.simulate_get(path, params={k: v[0] for k, v in params.items()})
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


def test_authorize_redirects_to_the_provider_with_state(client, store, providers, settings):
    location = urlsplit(_authorize(client, store, providers, settings))
    assert f"{location.scheme}://{location.netloc}{location.path}" == \
        "https://app.hubspot.com/oauth/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == ["hs-client-id"]
    assert query["redirect_uri"] == ["http://localhost:3000/integrations/hubspot/callback"]
    assert len(query["state"][0]) >= 32


def test_callback_stores_the_installation_enqueues_the_first_backfill_and_says_so(
    client, store, redis_client, providers, settings
):
    state = parse_qs(urlsplit(_authorize(client, store, providers, settings)).query)["state"][0]
    resp = client.simulate_get("/integrations/hubspot/callback",
                               params={"code": "good-4242", "state": state})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert "HubSpot (test) is connected" in resp.text
    install = store.get_installation("t-9", "i-9")
    assert (install.provider, install.account_id, install.status) == ("hubspot", "4242", "active")
    sync = queues.sync_key("backfill", "hubspot", "t-9", "i-9", None)
    job = Job.fetch(queues.active_job_id(redis_client, sync), connection=redis_client,
                    serializer=JSONSerializer)
    assert job.func_name == JOB_BACKFILL and job.origin == BACKFILL
    assert (job.kwargs["provider"], job.kwargs["tenant_id"], job.kwargs["install_id"],
            job.kwargs["stream"]) == ("hubspot", "t-9", "i-9", None)
    # the state works once
    again = client.simulate_get("/integrations/hubspot/callback",
                                params={"code": "good-4242", "state": state})
    assert again.status_code == 400 and "works once" in again.text
    assert queues.active_job_id(redis_client, sync) == job.id


def test_callback_with_a_refused_code_shows_why_and_enqueues_nothing(
    client, redis_client, store, providers, settings
):
    state = parse_qs(urlsplit(_authorize(client, store, providers, settings)).query)["state"][0]
    resp = client.simulate_get("/integrations/hubspot/callback",
                               params={"code": "bad", "state": state})
    assert resp.status_code == 400 and "refused the code" in resp.text
    assert len(Queue(BACKFILL, connection=redis_client, serializer=JSONSerializer)) == 0
    assert queues.active_job_id(
        redis_client, queues.sync_key("backfill", "hubspot", "t-9", "i-9", None)) is None


def test_the_code_exchange_is_an_auth_operation_in_the_metrics(client, store, providers,
                                                              settings):
    from prometheus_client import REGISTRY

    from nexus_core import metrics

    def count(outcome):
        return REGISTRY.get_sample_value("nexus_operation_duration_seconds_count", {
            "provider": "hubspot", "operation": "auth", "outcome": outcome,
            "tenant_id": ""}) or 0

    metrics.reset_tenant_labels(False)
    ok, failed = count("succeeded"), count("failed")
    for install, code in (("i-ok", "good-4242"), ("i-bad", "bad")):
        location = _authorize(client, store, providers, settings, install=install)
        state = parse_qs(urlsplit(location).query)["state"][0]
        client.simulate_get("/integrations/hubspot/callback",
                            params={"code": code, "state": state})
    metrics.reset_tenant_labels(None)
    assert (count("succeeded") - ok, count("failed") - failed) == (1, 1)


def test_callback_with_a_provider_error_or_missing_params_is_400(client):
    denied = client.simulate_get("/integrations/hubspot/callback",
                                 params={"error": "access_denied",
                                         "error_description": "<b>User said no</b>"})
    assert denied.status_code == 400 and "&lt;b&gt;User said no" in denied.text
    assert client.simulate_get("/integrations/hubspot/callback").status_code == 400


def _oauth_rows(store):
    import sqlalchemy as sa

    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM nexus_oauth_states")).scalar()


def test_raw_tenant_and_install_ids_never_start_a_flow(client, store, providers, settings):
    """Defect 11: an anonymous visitor could bind their own provider account to any tenant's
    installation by naming it in the query string."""
    resp = client.simulate_get("/integrations/hubspot/authorize",
                               params={"tenant_id": "tenant-a", "install_id": "inst-a"})
    assert resp.status_code == 401 and "connect link" in resp.text
    assert "location" not in resp.headers
    forged = client.simulate_get("/integrations/hubspot/authorize",
                                 params={"token": "made-up", "tenant_id": "tenant-a"})
    assert forged.status_code == 403
    assert _oauth_rows(store) == 0
    assert client.simulate_get("/integrations/nope/authorize",
                               params={"token": "x"}).status_code == 404


def test_a_connect_link_works_once_for_its_provider_and_expires(
    client, store, providers, settings
):
    path, params = _link(store, providers, settings)
    query = {k: v[0] for k, v in params.items()}
    wrong = client.simulate_get("/integrations/slack/authorize", params=query)
    assert wrong.status_code == 403  # another provider's route: refused, and not spent
    assert client.simulate_get(path, params=query).status_code == 302
    again = client.simulate_get(path, params=query)
    assert again.status_code == 403 and "works once" in again.text
    assert _oauth_rows(store) == 1
    path, params = _link(store, providers, settings, expires_in=0.001)
    time.sleep(0.01)
    expired = client.simulate_get(path, params={k: v[0] for k, v in params.items()})
    assert expired.status_code == 403 and "expired" in expired.text
    assert _oauth_rows(store) == 1


def test_the_link_carries_the_config_through_the_callback(client, store, providers, settings):
    location = _authorize(client, store, providers, settings, tenant="t-c", install="i-c",
                          config={"streams": ["contacts"], "tier": "pro"})
    state = parse_qs(urlsplit(location).query)["state"][0]
    resp = client.simulate_get("/integrations/hubspot/callback",
                               params={"code": "good-5151", "state": state})
    assert resp.status_code == 200, resp.text
    inst = store.get_installation("t-c", "i-c")
    assert inst.config == {"streams": ["contacts"], "tier": "pro"}
    assert (inst.status, inst.account_id) == ("active", "5151")


def test_binding_another_provider_account_needs_a_reconnect_link(
    client, store, providers, settings, nexus_logs
):
    def connect(code, **kw):
        location = _authorize(client, store, providers, settings, tenant="t-r",
                              install="i-r", **kw)
        state = parse_qs(urlsplit(location).query)["state"][0]
        return client.simulate_get("/integrations/hubspot/callback",
                                   params={"code": code, "state": state})

    assert connect("good-1000").status_code == 200
    before = store.get_credentials("t-r", "i-r")
    refused = connect("good-2000")  # an ordinary link, another HubSpot portal
    assert refused.status_code == 400 and "account 1000" in refused.text
    assert store.get_installation("t-r", "i-r").account_id == "1000"
    assert store.get_credentials("t-r", "i-r").access_token == before.access_token
    assert connect("good-1000").status_code == 200  # the same account: a plain reconnect
    assert connect("good-2000", intent="reconnect").status_code == 200
    assert store.get_installation("t-r", "i-r").account_id == "2000"
    assert "reconnected from hubspot account 1000 to 2000" in nexus_logs.text


# -- probes ---------------------------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200 and ready.json == {"ready": True}  # the public: status only
    ready = client.simulate_get("/readyz", headers=METRICS_AUTH)
    assert ready.status_code == 200 and ready.json == {"ready": True, "redis": "ok", "store": "ok"}


def test_readyz_is_503_when_redis_or_the_store_is_down(settings, store, providers, redis_client):
    import redis

    from nexus_core.testing import free_port
    from nexus_core.web import create_app

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    client = testing.TestClient(create_app(settings, store, dead, providers))
    assert client.simulate_get("/readyz").json == {"ready": False}
    resp = client.simulate_get("/readyz", headers=METRICS_AUTH)
    assert resp.status_code == 503 and resp.json["redis"].startswith("unreachable")
    assert client.simulate_get("/healthz").status_code == 200

    class BrokenStore:
        def schema_version(self):
            from nexus_core.errors import StoreError

            raise StoreError("database is unreachable")

    client = testing.TestClient(create_app(settings, BrokenStore(), redis_client, providers))
    resp = client.simulate_get("/readyz", headers=METRICS_AUTH)
    assert resp.status_code == 503 and resp.json["store"] == "unreachable: StoreError"


# -- the service-side entry point -----------------------------------------------------------------


def test_ingest_webhook_enqueues_exactly_like_the_http_route(
    settings, providers, redis_client, webhook_queue, store, h
):
    """IntegrationService.process_webhook(provider, tenant, install, headers, body) calls this."""
    store.add_installation("tenant-x", "inst-x", "hubspot")
    key = store.get_installation("tenant-x", "inst-x").webhook_key
    body = json.dumps(h.hubspot_events(62515)).encode()
    headers = h.hubspot_headers(body, f"/webhooks/hubspot/{key}")  # its URL, by default
    kw = {"tenant_id": "tenant-x", "install_id": "inst-x", "settings": settings,
          "registry": providers, "redis": redis_client, "store": store}
    result = wh.ingest_webhook("hubspot", headers, body, **kw)
    assert result.outcome == "enqueued" and len(result.jobs) == 1
    (job,) = [Job.fetch(i, connection=redis_client, serializer=JSONSerializer)
              for i in webhook_queue.job_ids]
    assert job.id == result.jobs[0]
    assert (job.kwargs["tenant_id"], job.kwargs["install_id"]) == ("tenant-x", "inst-x")
    replay = wh.ingest_webhook("hubspot", headers, body, **kw)
    assert replay.outcome == "duplicate" and replay.duplicate_jobs == result.jobs
    with pytest.raises(WebhookRejected) as exc:
        wh.ingest_webhook("hubspot", headers, body + b" ", **kw)
    assert exc.value.status == 401
    assert len(webhook_queue) == 1


def test_process_webhook_refuses_a_removed_installation_and_ignores_a_disabled_one(
    settings, providers, redis_client, webhook_queue, store, h
):
    """Defect 10 on the service path: a removed installation is a 404, a disabled one is
    answered without a job (both used to be enqueued and fail in the worker)."""
    from nexus_core.service import IntegrationService

    service = IntegrationService(settings, providers)
    service._store, service._redis = store, redis_client
    body = json.dumps(h.hubspot_events(62515)).encode()
    url = "https://hooks.example.com/product/hubspot"
    headers = h.hubspot_headers(body, "/product/hubspot")
    with pytest.raises(WebhookRejected) as exc:
        service.process_webhook("hubspot", "tenant-x", "gone", headers, body, url=url)
    assert exc.value.status == 404
    store.set_status("tenant-a", "inst-a", "disabled")
    assert service.process_webhook("hubspot", "tenant-a", "inst-a", headers, body,
                                   url=url) is None
    assert len(webhook_queue) == 0
    store.set_status("tenant-a", "inst-a", "active")
    assert service.process_webhook("hubspot", "tenant-a", "inst-a", headers, body, url=url)
    assert len(webhook_queue) == 1


# -- a real `nexus serve` -------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, redis_url):
    """`nexus serve` on a free port with the installed example plugin and a store holding one
    installation of it."""
    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.store import Store
    from nexus_core.testing import free_port

    key = generate_key()
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    s = Store.from_url(db, KeyRing.from_string(key))
    s.add_installation("tenant-s", "inst-s", "example", account_id="acct-9")
    s.close()
    port = free_port()
    secret = "whsec_" + __import__("base64").b64encode(os.urandom(32)).decode()
    env = {**os.environ, "REDIS_URL": redis_url, "NEXUS_DATABASE_URL": db,
           "NEXUS_ENCRYPTION_KEYS": key, "EXAMPLE_WEBHOOK_SECRET": secret,
           "NEXUS_WEBHOOK_MAX_BODY": "4096", "NEXUS_LOAD_PLUGINS": "example"}
    env.pop("NEXUS_PUBLIC_URL", None)
    nexus = Path(sys.executable).with_name("nexus")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(nexus), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nexus serve did not start: {log.read_text()}")
            time.sleep(0.1)
        yield port, secret
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_nexus_serve_verifies_routes_and_enqueues_through_gunicorn(served, redis_client):
    port, secret = served
    body = json.dumps({"id": "e1", "type": "widget.created", "account_id": "acct-9"}).encode()
    ts = str(int(time.time()))
    headers = {"webhook-id": "msg_1", "webhook-timestamp": ts, "Content-Type": "application/json",
               "webhook-signature": wh.sign_standard_webhooks(secret, "msg_1", ts, body)}

    def call(method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    assert call("POST", "/webhooks/example", body, headers) == (
        200, b'{"ok":true,"enqueued":1,"duplicates":0,"unknown_account_events":0,'
        b'"ignored_installations":0}')
    assert call("POST", "/webhooks/example", body, headers)[0] == 200  # replay
    status, text = call("POST", "/webhooks/example", body + b" ", headers)
    assert status == 401 and b"signature mismatch" in text
    assert call("POST", "/webhooks/example", b"x" * 5000, headers)[0] == 413
    assert call("GET", "/readyz") == (200, b'{"ready":true}')  # details: the metrics listener
    assert call("GET", "/metrics")[0] == 404  # no NEXUS_METRICS_TOKEN, no --metrics-port
    queue = Queue("integration-webhook", connection=redis_client, serializer=JSONSerializer)
    (job_id,) = queue.job_ids
    job = Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer)
    assert (job.kwargs["tenant_id"], job.kwargs["install_id"]) == ("tenant-s", "inst-s")


@pytest.mark.slow
def test_nexus_serve_reads_a_chunked_body(served, redis_client):
    port, secret = served
    body = json.dumps({"id": "e2", "type": "widget.created", "account_id": "acct-9"}).encode()
    ts = str(int(time.time()))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/webhooks/example", body=iter([body[:10], body[10:]]),
                 headers={"webhook-id": "msg_2", "webhook-timestamp": ts,
                          "webhook-signature": wh.sign_standard_webhooks(secret, "msg_2", ts,
                                                                         body)},
                 encode_chunked=True)
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    assert resp.status == 200, text
    assert len(Queue("integration-webhook", connection=redis_client,
                     serializer=JSONSerializer)) == 1


def test_serve_refuses_a_malformed_webhook_setting_before_starting(monkeypatch):
    from click.testing import CliRunner

    from nexus_core.cli import cli
    from nexus_core.config import reset_settings

    monkeypatch.setenv("NEXUS_WEBHOOK_MAX_BODY", "lots")
    reset_settings()
    try:
        result = CliRunner().invoke(cli, ["serve", "--port", "1"])
    finally:
        reset_settings()
    assert result.exit_code == 1
    assert "NEXUS_WEBHOOK_MAX_BODY must be an integer of bytes >= 1 and <= 67108864, got 'lots'" in result.output
