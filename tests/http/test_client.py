"""ProviderSession against local provider servers: timeouts, retries, errors, auth, logging."""

from __future__ import annotations

import base64
import time

import pytest
from prometheus_client import REGISTRY

from nexus_core.errors import AuthError, ProviderError
from nexus_core.models import Credentials, RetryConfig, Timeouts
from nexus_core.testing import free_port

TOKEN = "tok-SECRET-123"


def creds(token: str = TOKEN, **kw) -> Credentials:
    return Credentials(access_token=token, refresh_token="r-SECRET", **kw)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_relative_paths_resolve_against_the_base_url_override(provider_server, open_session):
    session = open_session(provider_server.url)
    resp = session.get("/crm/v3/objects/contacts", params={"limit": 2})
    assert resp.status_code == 200
    assert provider_server.seen[0].path == "/crm/v3/objects/contacts?limit=2"


def test_full_urls_are_used_as_given(provider_server, open_session):
    session = open_session("")
    assert session.get(provider_server.url + "/x").status_code == 200


def test_connection_pool_is_reused_across_calls(provider_server, open_session):
    session = open_session(provider_server.url)
    for _ in range(3):
        session.get("/ping")
    ports = {s.headers.get("Host") for s in provider_server.seen}
    assert len(provider_server.seen) == 3 and len(ports) == 1
    pool = next(iter(session.session.adapters["http://"].poolmanager.pools._container.values()))
    assert pool.num_connections == 1


def test_never_answering_provider_fires_the_read_timeout(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.HANG)
    provider = kit.make_provider(timeouts=Timeouts(connect=1, read=0.3),
                                 retry=RetryConfig(max_retries=1, max_backoff=0.05))
    session = open_session(provider_server.url, provider=provider)
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        session.get("/slow")
    elapsed = time.monotonic() - started
    assert "read timeout (0.3 s)" in str(err.value)
    assert "after 2 attempt(s)" in str(err.value)
    assert err.value.retryable is True
    assert len(provider_server.seen) == 2  # retried once, then gave up
    assert 0.6 <= elapsed < 2.0


def test_installation_config_overrides_timeouts(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.HANG)
    provider = kit.make_provider(retry=RetryConfig(max_retries=0))
    session = open_session(provider_server.url, provider=provider,
                           config={"timeouts": {"read": 0.2}})
    started = time.monotonic()
    with pytest.raises(ProviderError, match="read timeout"):
        session.get("/slow")
    assert time.monotonic() - started < 1.5


def test_connection_refused_is_retried_then_a_clear_provider_error(open_session, log_records):
    port = free_port()  # nothing listens there
    session = open_session(f"http://127.0.0.1:{port}", tenant_id="t9", install_id="i9")
    with pytest.raises(ProviderError) as err:
        session.get("/crm/v3/objects/contacts?hapikey=SECRETKEY")
    message = str(err.value)
    assert "Acme CRM could not be reached: connection refused" in message
    assert "127.0.0.1/crm/v3/objects/contacts" in message
    assert "after 3 attempt(s)" in message
    assert "provider=acme" in message and "tenant=t9" in message and "install=i9" in message
    assert "SECRETKEY" not in message and TOKEN not in message
    assert err.value.retryable is True
    retries = [r for r in log_records if "retrying" in r["message"]]
    assert len(retries) == 2


def test_dns_failure_is_a_clear_provider_error_naming_the_host(open_session):
    session = open_session("http://nexus-no-such-host.invalid")
    with pytest.raises(ProviderError) as err:
        session.get("/v1/items")
    assert "DNS lookup failed" in str(err.value)
    assert "nexus-no-such-host.invalid" in str(err.value)
    assert err.value.retryable is True


def test_5xx_on_get_is_retried_with_backoff_then_succeeds(provider_server, open_session, kit):
    provider_server.script(kit.json_answer(503, {}), kit.json_answer(502, {}),
                           kit.json_answer(200, {"results": []}))
    before = sample("nexus_http_retries_total", provider="acme", reason="503")
    session = open_session(provider_server.url)
    resp = session.get("/items")
    assert resp.status_code == 200 and resp.json() == {"results": []}
    assert len(provider_server.seen) == 3
    assert sample("nexus_http_retries_total", provider="acme", reason="503") == before + 1


def test_5xx_after_the_retries_is_a_retryable_provider_error(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(500, {"error": "boom"}))
    session = open_session(provider_server.url)
    with pytest.raises(ProviderError) as err:
        session.get("/items")
    assert err.value.status == 500 and err.value.retryable is True
    assert "answered 500" in str(err.value) and "after 3 attempt(s)" in str(err.value)
    assert len(provider_server.seen) == 3


def test_retry_after_on_503_is_honoured(provider_server, open_session, kit):
    provider_server.script(kit.json_answer(503, {}, **{"Retry-After": "1"}),
                           kit.json_answer(200, {}))
    session = open_session(provider_server.url)
    session.get("/items")
    first, second = provider_server.seen
    assert second.at - first.at >= 0.95


def test_post_is_not_retried_without_an_idempotency_key(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(503, {}))
    session = open_session(provider_server.url)
    with pytest.raises(ProviderError):
        session.post("/contacts", json={"email": "a@b.c"})
    assert len(provider_server.seen) == 1


def test_post_with_an_idempotency_key_is_retried_and_sends_the_key(
    provider_server, open_session, kit
):
    provider_server.script(kit.json_answer(503, {}), kit.json_answer(201, {"id": "1"}))
    session = open_session(provider_server.url)
    resp = session.post("/contacts", json={"email": "a@b.c"}, idempotency_key="job-42")
    assert resp.status_code == 201
    assert [s.headers.get("Idempotency-Key") for s in provider_server.seen] == ["job-42"] * 2
    assert provider_server.seen[1].body == b'{"email": "a@b.c"}'


def test_4xx_answers_are_returned_not_raised(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(404, {"message": "not found"}))
    session = open_session(provider_server.url)
    assert session.get("/missing").status_code == 404
    assert len(provider_server.seen) == 1


# -- auth --------------------------------------------------------------------------------------


def test_bearer_token_is_injected(provider_server, open_session):
    session = open_session(provider_server.url, credentials=lambda: creds())
    session.get("/me")
    assert provider_server.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_api_key_is_injected_in_the_configured_header(provider_server, open_session, kit):
    provider = kit.make_provider(auth_type="api_key")
    key = Credentials(api_key="k-SECRET")
    session = open_session(provider_server.url, provider=provider, credentials=lambda: key)
    session.get("/a")
    custom = open_session(provider_server.url, provider=provider, credentials=lambda: key,
                          config={"api_key_header": "X-API-Key"})
    custom.get("/b")
    first, second = provider_server.seen
    assert first.headers["Authorization"] == "Bearer k-SECRET"
    assert second.headers["X-API-Key"] == "k-SECRET" and "Authorization" not in second.headers


def test_basic_auth_is_injected(provider_server, open_session, kit):
    provider = kit.make_provider(auth_type="basic")
    basic = Credentials(username="ann", password="pw-SECRET")
    session = open_session(provider_server.url, provider=provider, credentials=lambda: basic)
    session.get("/a")
    expected = "Basic " + base64.b64encode(b"ann:pw-SECRET").decode()
    assert provider_server.seen[0].headers["Authorization"] == expected


def test_credentials_are_never_sent_to_a_foreign_host(provider_server, open_session):
    other = provider_server.url.replace("127.0.0.1", "localhost")
    session = open_session(provider_server.url, credentials=lambda: creds())
    session.get(other + "/download")
    assert "Authorization" not in provider_server.seen[0].headers


def test_bare_401_refreshes_once_and_retries_with_the_new_token(
    provider_server, open_session, kit
):
    def app(req):
        if req.headers.get("Authorization") == "Bearer fresh":
            return kit.json_answer(200, {"ok": True})
        return kit.json_answer(401, {"message": "expired"})

    provider_server.answer(app)
    stale = creds("stale")
    calls = []

    def refresh(old):
        calls.append(old)
        return creds("fresh")

    session = open_session(provider_server.url, credentials=lambda: stale, refresh=refresh)
    assert session.get("/me").status_code == 200
    assert calls == [stale]
    assert [s.headers["Authorization"] for s in provider_server.seen] == [
        "Bearer stale", "Bearer fresh"
    ]
    # The caller still hands out the stale credentials: the fresh ones are used, no new refresh.
    session.get("/me")
    assert len(calls) == 1


def test_still_expired_after_refresh_is_an_auth_error(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(401, {}))
    calls = []
    session = open_session(provider_server.url, credentials=lambda: creds(),
                           refresh=lambda old: calls.append(old) or creds("fresh"))
    with pytest.raises(AuthError) as err:
        session.get("/me")
    assert len(calls) == 1 and len(provider_server.seen) == 2
    assert err.value.needs_reauth is True
    assert "even after a refresh" in str(err.value)


def test_failed_refresh_is_an_auth_error_without_secrets(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(401, {}))

    def refresh(old):
        raise RuntimeError("token endpoint said refresh_token=r-SECRET is bad")

    session = open_session(provider_server.url, credentials=lambda: creds(), refresh=refresh)
    with pytest.raises(AuthError) as err:
        session.get("/me")
    assert "refreshing the Acme CRM access token failed" in str(err.value)
    assert "r-SECRET" not in str(err.value)


def test_401_without_a_refresh_hook_needs_reauth(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(401, {}))
    session = open_session(provider_server.url, credentials=lambda: creds())
    with pytest.raises(AuthError) as err:
        session.get("/me")
    assert err.value.needs_reauth is True


# -- logging and metrics -----------------------------------------------------------------------


def test_every_request_is_logged_with_context_and_without_secrets(
    provider_server, open_session, log_records, kit
):
    provider_server.script(kit.json_answer(200, {}), kit.json_answer(404, {}))
    session = open_session(provider_server.url, credentials=lambda: creds(),
                           tenant_id="tenant-7", install_id="inst-7")
    session.get("/contacts?access_token=SECRETQ&limit=1", headers={"X-Trace": "1"})
    session.get("/contacts?access_token=SECRETQ&limit=2")
    lines = [r for r in log_records if "GET /contacts" in r["message"]]
    assert len(lines) == 2
    ok, missing = lines
    # A plain success is logged at DEBUG (a backfill makes thousands); anything else at INFO.
    assert ok["level"] == "DEBUG"
    assert "-> 200 in" in ok["message"] and "(attempt 1)" in ok["message"]
    assert missing["level"] == "INFO" and "-> 404 in" in missing["message"]
    for line in lines:
        assert line["extra"] == {"provider": "acme", "tenant_id": "tenant-7",
                                 "install_id": "inst-7"}
    text = repr(log_records)
    assert TOKEN not in text and "SECRETQ" not in text


def test_metrics_count_requests_by_status_and_latency(provider_server, open_session, kit):
    provider_server.script(kit.json_answer(200, {}), kit.json_answer(404, {}))
    labels = {"provider": "acme", "method": "GET"}
    ok_before = sample("nexus_http_requests_total", status="200", **labels)
    nf_before = sample("nexus_http_requests_total", status="404", **labels)
    n_before = sample("nexus_http_request_duration_seconds_count", **labels)
    session = open_session(provider_server.url)
    session.get("/a")
    session.get("/b")
    assert sample("nexus_http_requests_total", status="200", **labels) == ok_before + 1
    assert sample("nexus_http_requests_total", status="404", **labels) == nf_before + 1
    assert sample("nexus_http_request_duration_seconds_count", **labels) == n_before + 2


def test_without_redis_the_limiter_and_breaker_are_disabled_and_that_is_logged(
    provider_server, open_session, log_records
):
    session = open_session(provider_server.url)
    assert session.limiter is None and session.breaker is None
    assert any("DISABLED" in r["message"] for r in log_records)


def test_default_rate_limit_headers_feed_rate_limit_status(provider_server, open_session, kit):
    provider_server.answer(lambda req: kit.json_answer(
        200, {}, **{"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42"}))
    session = open_session(provider_server.url)
    assert session.rate_limit_status() is None
    session.get("/a")
    assert session.rate_limit_status() == {"max": 100, "remaining": 42}


def test_sessions_of_one_process_share_keep_alive_connections(provider_server, open_session):
    """One job's session after another (a worker's jobs): the second reuses the connection the
    first opened instead of connecting again."""
    first = open_session(provider_server.url)
    first.get("/a")
    first.close()  # what the job harness does at the end of a job
    second = open_session(provider_server.url)
    second.get("/b")
    a, b = provider_server.seen
    assert a.port == b.port


def test_a_forked_child_opens_its_own_connection(provider_server, open_session):
    """A work-horse must never write to a socket its parent pooled: after fork the child's
    requests go over a new connection, and the parent's keep working on theirs."""
    import os

    session = open_session(provider_server.url)
    session.get("/parent-1")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new session, as a work-horse's job builds one
        code = 1
        try:
            from nexus_core.http import ProviderSession

            from .conftest import make_provider, make_settings

            child = ProviderSession(make_provider(), tenant_id="t1", install_id="i1",
                                    settings=make_settings(provider_server.url))
            code = 0 if child.get("/child").status_code == 200 else 1
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"\x00"
    os.waitpid(pid, 0)
    session.get("/parent-2")
    by_path = {s.path: s.port for s in provider_server.seen}
    assert by_path["/child"] != by_path["/parent-1"]
    assert by_path["/parent-2"] == by_path["/parent-1"]


def test_proxy_variables_are_honoured_and_read_again_by_the_next_session(
    provider_server, open_session, monkeypatch
):
    """HTTP_PROXY routes the request through the proxy (absolute-form request target); the
    per-process cache is keyed by the variables, so a session opened after they change sees
    the change; NO_PROXY bypasses."""
    monkeypatch.setenv("HTTP_PROXY", provider_server.url)
    proxied = open_session("")
    assert proxied.get("http://provider.invalid/via-proxy").status_code == 200
    assert provider_server.seen[-1].path == "http://provider.invalid/via-proxy"

    monkeypatch.setenv("NO_PROXY", "provider.invalid")
    with pytest.raises(ProviderError, match="provider.invalid"):
        open_session("").get("http://provider.invalid/bypassed")

    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.delenv("NO_PROXY")
    direct = open_session("")
    assert direct.get(provider_server.url + "/direct").status_code == 200
    assert provider_server.seen[-1].path == "/direct"
