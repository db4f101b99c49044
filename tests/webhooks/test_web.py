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

# -- OAuth ----------------------------------------------------------------------------------------


def _authorize(client, tenant="t-9", install="i-9"):
    resp = client.simulate_get("/integrations/hubspot/authorize",
                               params={"tenant_id": tenant, "install_id": install})
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


def test_authorize_redirects_to_the_provider_with_state(client):
    location = urlsplit(_authorize(client))
    assert f"{location.scheme}://{location.netloc}{location.path}" == \
        "https://app.hubspot.com/oauth/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == ["hs-client-id"]
    assert query["redirect_uri"] == ["http://localhost:3000/integrations/hubspot/callback"]
    assert len(query["state"][0]) >= 32


def test_callback_stores_the_installation_enqueues_the_first_backfill_and_says_so(
    client, store, redis_client
):
    state = parse_qs(urlsplit(_authorize(client)).query)["state"][0]
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


def test_callback_with_a_refused_code_shows_why_and_enqueues_nothing(client, redis_client):
    state = parse_qs(urlsplit(_authorize(client)).query)["state"][0]
    resp = client.simulate_get("/integrations/hubspot/callback",
                               params={"code": "bad", "state": state})
    assert resp.status_code == 400 and "refused the code" in resp.text
    assert len(Queue(BACKFILL, connection=redis_client, serializer=JSONSerializer)) == 0
    assert queues.active_job_id(
        redis_client, queues.sync_key("backfill", "hubspot", "t-9", "i-9", None)) is None


def test_callback_with_a_provider_error_or_missing_params_is_400(client):
    denied = client.simulate_get("/integrations/hubspot/callback",
                                 params={"error": "access_denied",
                                         "error_description": "<b>User said no</b>"})
    assert denied.status_code == 400 and "&lt;b&gt;User said no" in denied.text
    assert client.simulate_get("/integrations/hubspot/callback").status_code == 400


def test_authorize_needs_tenant_and_install_and_a_known_provider(client):
    assert client.simulate_get("/integrations/hubspot/authorize",
                               params={"tenant_id": "t"}).status_code == 400
    assert client.simulate_get("/integrations/nope/authorize",
                               params={"tenant_id": "t", "install_id": "i"}).status_code == 404


# -- probes ---------------------------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200 and ready.json == {"ready": True, "redis": "ok", "store": "ok"}


def test_readyz_is_503_when_redis_or_the_store_is_down(settings, store, providers, redis_client):
    import redis

    from nexus_core.testing import free_port
    from nexus_core.web import create_app

    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    client = testing.TestClient(create_app(settings, store, dead, providers))
    resp = client.simulate_get("/readyz")
    assert resp.status_code == 503 and resp.json["redis"].startswith("unreachable")
    assert client.simulate_get("/healthz").status_code == 200

    class BrokenStore:
        def schema_version(self):
            from nexus_core.errors import StoreError

            raise StoreError("database is unreachable")

    client = testing.TestClient(create_app(settings, BrokenStore(), redis_client, providers))
    resp = client.simulate_get("/readyz")
    assert resp.status_code == 503 and resp.json["store"] == "unreachable: StoreError"


# -- the service-side entry point -----------------------------------------------------------------


def test_ingest_webhook_enqueues_exactly_like_the_http_route(
    settings, providers, redis_client, webhook_queue, h
):
    """IntegrationService.process_webhook(provider, tenant, install, headers, body) calls this."""
    body = json.dumps(h.hubspot_events(62515)).encode()
    headers = h.hubspot_headers(body, "/webhooks/hubspot/inst-x")
    kw = {"tenant_id": "tenant-x", "install_id": "inst-x", "settings": settings,
          "registry": providers, "redis": redis_client}
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
        200, b'{"ok":true,"enqueued":1,"duplicates":0,"unknown_account_events":0}')
    assert call("POST", "/webhooks/example", body, headers)[0] == 200  # replay
    status, text = call("POST", "/webhooks/example", body + b" ", headers)
    assert status == 401 and b"signature mismatch" in text
    assert call("POST", "/webhooks/example", b"x" * 5000, headers)[0] == 413
    assert call("GET", "/readyz") == (200, b'{"ready":true,"redis":"ok","store":"ok"}')
    status, metrics = call("GET", "/metrics")
    assert b'nexus_webhook_deliveries_total{outcome="duplicate",provider="example"} 1.0' in metrics
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
    assert "NEXUS_WEBHOOK_MAX_BODY must be a number of bytes, got 'lots'" in result.output
