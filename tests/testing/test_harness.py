"""The simulator harness itself (what every provider's simulator is built on) and the author's
commands on top of it: `nexus simulate` and `nexus dev`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner
from nexus_example.simulator import ExampleSimulator

from nexus_core.testing.sim_app import SimApp, SimRateLimit, SimRequest, SimResponse
from nexus_core.testing.sim_data import DataSet, iso, parse_iso
from nexus_core.testing.sim_oauth import OAuthServer
from nexus_core.testing.simulator import SimulatorServer


@pytest.fixture
def oauth_app():
    app = SimApp("t")
    oauth = OAuthServer(client_id="c", client_secret="s", rotate_refresh=True)
    oauth.mount(app)

    @app.route("GET", "/data")
    def data(req: SimRequest) -> SimResponse:
        return SimResponse.json({"account": oauth.authenticate(req)})

    with SimulatorServer(app) as server:
        yield app, oauth, server.url


def _token(url, **form):
    return requests.post(f"{url}/oauth/token", data={"client_id": "c", "client_secret": "s",
                                                     **form}, timeout=5)


def test_refresh_tokens_rotate_and_an_old_one_is_refused_for_good(oauth_app):
    app, oauth, url = oauth_app
    code = oauth.issue_code("acct-1")
    first = _token(url, grant_type="authorization_code", code=code).json()
    assert _token(url, grant_type="authorization_code", code=code).status_code == 400  # once
    second = _token(url, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    reuse = _token(url, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert (oauth.refreshes, oauth.refused_reuse) == (1, 1)
    ok = requests.get(f"{url}/data", headers={"Authorization": f"Bearer {second['access_token']}"},
                      timeout=5)
    assert ok.json() == {"account": "acct-1"}
    oauth.revoke("acct-1")
    assert requests.get(f"{url}/data", headers={
        "Authorization": f"Bearer {second['access_token']}"}, timeout=5).status_code == 401
    assert _token(url, grant_type="refresh_token",
                  refresh_token=second["refresh_token"]).status_code == 400


def test_pkce_and_client_credentials_are_checked(oauth_app):
    import base64
    import hashlib

    _, oauth, url = oauth_app
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).decode().rstrip("=")
    code = oauth.issue_code("a", challenge=challenge)
    assert _token(url, grant_type="authorization_code", code=code,
                  code_verifier="wrong").status_code == 400
    code = oauth.issue_code("a", challenge=challenge)
    assert _token(url, grant_type="authorization_code", code=code,
                  code_verifier=verifier).status_code == 200
    bad = requests.post(f"{url}/oauth/token", data={"client_id": "c", "client_secret": "x",
                                                    "grant_type": "refresh_token"}, timeout=5)
    assert bad.json()["error"] == "invalid_client"


def test_faults_and_the_rate_limit_answer_like_a_provider(oauth_app):
    app, oauth, url = oauth_app
    token = oauth.issue_tokens("a")["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    app.faults.fail_next(502, times=2)
    app.faults.rate_limit_next(retry_after=3)
    got = [requests.get(f"{url}/data", headers=auth, timeout=5) for _ in range(4)]
    assert [r.status_code for r in got] == [502, 502, 429, 200]
    assert got[2].headers["Retry-After"] == "3"
    with app.faults.down():
        assert requests.get(f"{url}/data", headers=auth, timeout=5).status_code == 503
    app.rate_limit = SimRateLimit(2, 60)
    codes = [requests.get(f"{url}/data", headers=auth, timeout=5).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert [r.status for r in app.requests("/data")][-3:] == codes


def test_data_sets_are_deterministic_and_changes_are_ordered():
    a, b = DataSet({"s": 50}, seed=7), DataSet({"s": 50}, seed=7)
    assert a.mutate("x", "s", 5) == b.mutate("x", "s", 5)
    before = a.now
    changed = a.mutate("x", "s", 3, same_second=True)
    assert a.changed_since("x", "s", before + 1) == sorted(changed)
    gone = a.delete("x", "s", 2)
    assert not set(gone) & set(a.indexes("x", "s"))
    assert a.count("x", "s") == 50 and len(list(a.indexes("x", "s"))) == 48
    assert parse_iso(iso(12345)) == 12345


def test_a_late_commit_takes_a_timestamp_other_changes_already_have():
    data = DataSet({"s": 20}, seed=1)
    first = data.mutate("a", "s", 3)
    boundary = data.version("a", "s", first[-1])[1]
    late = data.change_at("a", "s", [0, 1, first[-1] + 100], boundary)
    assert late == [0, 1]  # an index past the end is no record
    assert data.version("a", "s", 0) == (1, boundary)
    assert data.changed_since("a", "s", boundary)[-3:] == sorted([0, 1, first[-1]])
    data.delete("a", "s", 20)
    assert data.change_at("a", "s", [0], boundary) == []  # deleted records do not change


def test_nexus_dev_runs_hooks_in_process_against_the_simulator(monkeypatch, tmp_path):
    from nexus_core.cli import cli
    from nexus_core.config import reset_settings
    from nexus_core.plugins import set_registry

    with ExampleSimulator() as sim:
        account = sim.add_account("acct-1")
        for key, value in sim.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        reset_settings()
        previous = set_registry(None)
        try:
            creds = json.dumps({"access_token": sim.credentials(account).access_token,
                                "extra": {"account_id": account}})
            out = CliRunner().invoke(cli, ["dev", "backfill", "example", "--credentials", creds,
                                           "--stream", "gadgets", "--max-pages", "5"])
            assert out.exit_code == 0, out.output
            ids = [json.loads(line)["id"] for line in out.stdout.splitlines()]
            assert sorted(ids) == sorted(sim.expected_ids("gadgets", account))
            assert "gadgets: 180 records in 2 page(s)" in out.stderr
            body = sim.webhook_body(sim.webhook_events(account, 1))
            (tmp_path / "body.json").write_bytes(body)
            headers = sim.sign_webhook(body, "http://localhost/webhooks/dev")
            args = ["dev", "webhook", "example", "--body", str(tmp_path / "body.json"),
                    "--verify", *[x for k, v in headers.items() for x in ("-H", f"{k}: {v}")]]
            good = CliRunner().invoke(cli, args + ["--account-id", account])
            assert good.exit_code == 0, good.output
            assert json.loads(good.stdout)["type"] == "widget.updated"
            (tmp_path / "body.json").write_bytes(body + b" ")
            tampered = CliRunner().invoke(cli, args)
            assert tampered.exit_code == 1 and "signature mismatch" in tampered.output
            health = CliRunner().invoke(cli, ["dev", "health", "example", "--credentials", creds])
            assert health.exit_code == 0 and json.loads(health.stdout)["healthy"] is True
            bad = CliRunner().invoke(cli, ["dev", "backfill", "example", "--credentials", "{x"])
            assert bad.exit_code == 2 and "not valid JSON" in bad.output
        finally:
            set_registry(previous)
            reset_settings()


@pytest.mark.slow
def test_nexus_simulate_serves_a_plugins_simulator(tmp_path):
    env_file = tmp_path / "sim.env"
    log = tmp_path / "sim.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nexus_core.cli", "simulate", "example",
                                 "--port", "0", "--env-file", str(env_file)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not env_file.exists() or not env_file.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        creds = json.loads(log.read_text().split("credentials of account-1:")[1].strip())
        me = requests.get(env["EXAMPLE_BASE_URL"] + "/v1/me", timeout=5,
                          headers={"Authorization": f"Bearer {creds['access_token']}"})
        assert me.json()["account_id"] == "account-1"
        unknown = subprocess.run([sys.executable, "-m", "nexus_core.cli", "simulate", "nope"],
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode == 1 and "simulators: example" in unknown.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize("scheme", ["hubspot-v1", "hubspot-v2", "hubspot-v3", "slack-v0",
                                    "standard-webhooks", "stripe", "hmac"])
def test_the_webhook_sender_signs_what_the_core_verifies_for_every_scheme(scheme):
    from nexus_core import HmacSpec, Provider, WebhookConfig, WebhookRequest
    from nexus_core.errors import WebhookRejected
    from nexus_core.testing.sim_paging import WebhookSender
    from nexus_core.webhook_schemes import Check, verify_request

    spec = HmacSpec(header="X-Sig", prefix="sha256=", timestamp_header="X-Ts",
                    message="{timestamp}.{body}") if scheme == "hmac" else None
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    provider = Provider(id="p", name="P", version="1", auth_type="none", streams=("s",),
                        webhook=WebhookConfig(scheme=scheme, hmac=spec))
    url, body = "https://hooks.example.com/webhooks/p?x=a%3Ab", b'[{"id": 1}]'
    sender = WebhookSender(scheme, secret, hmac_spec=spec)
    headers = sender.headers(body, url)
    verify_request(provider, WebhookRequest("POST", url, headers, body), [secret],
                   Check(url=url))
    with pytest.raises(WebhookRejected):
        verify_request(provider, WebhookRequest("POST", url, headers, body + b" "), [secret],
                       Check(url=url))


def test_paging_helpers_walk_every_item_once():
    from nexus_core.testing.sim_paging import (
        cursor_page,
        decode_token,
        link_header,
        number_page,
        offset_page,
    )

    items = list(range(25))
    seen, token = [], None
    while True:
        page, token = cursor_page(items, token, 10)
        seen += page
        if token is None:
            break
    assert seen == items and decode_token("garbage!") is None
    with pytest.raises(ValueError):
        cursor_page(items, "not-a-token", 10)
    assert offset_page(items, 20, 10) == (list(range(20, 25)), None)
    assert number_page(items, 3, 10) == (list(range(20, 25)), None)
    assert number_page(items, 4, 10) == ([], None)
    assert link_header("http://h/v1/x", {"page": 2}) == {"Link": '<http://h/v1/x?page=2>; rel="next"'}


def test_the_control_api_changes_the_simulated_world_and_sends_signed_webhooks():
    """`/_sim/...`: what a demo script or a manual test drives a running simulator with."""
    from nexus_core.testing.sim_app import SimApp as App

    received = []
    sink = App("receiver")

    @sink.route("POST", "/hook", auth=False)
    def hook(req: SimRequest) -> SimResponse:
        received.append(req)
        return SimResponse.json({"ok": True})

    with ExampleSimulator() as sim, SimulatorServer(sink) as receiver:
        account = sim.add_account("acct-x")
        state = requests.get(f"{sim.url}/_sim", timeout=5).json()
        assert state["accounts"] == ["acct-x"] and state["sizes"]["widgets"] == 250
        changed = requests.post(f"{sim.url}/_sim/mutate", json={"stream": "widgets", "n": 3},
                                timeout=5).json()
        assert len(changed["ids"]) == 3 and changed["clock"] > state["clock"]
        gone = requests.post(f"{sim.url}/_sim/delete", json={"stream": "gadgets", "n": 2},
                             timeout=5).json()["ids"]
        assert not set(gone) & sim.expected_ids("gadgets", account)
        bad = requests.post(f"{sim.url}/_sim/mutate", json={"stream": "nope"}, timeout=5)
        assert bad.status_code == 400 and "unknown stream" in bad.json()["error"]
        for tamper in (False, True):
            sent = requests.post(f"{sim.url}/_sim/webhook", json={
                "url": f"{receiver.url}/hook", "n": 2, "tamper": tamper}, timeout=5).json()
            assert sent["status"] == 200 and sent["events"] == 2
    from nexus_core.models import WebhookRequest
    from nexus_core.webhooks import Check, verify_standard_webhooks

    genuine, tampered = (WebhookRequest("POST", "http://x/hook", r.headers, r.body)
                         for r in received)
    verify_standard_webhooks(genuine, [ExampleSimulator.webhook_secret], Check(url="http://x"))
    with pytest.raises(Exception, match="mismatch"):
        verify_standard_webhooks(tampered, [ExampleSimulator.webhook_secret],
                                 Check(url="http://x"))


def test_an_account_can_have_its_own_rate_limit_tier():
    limiter = SimRateLimit(2, 60.0)
    limiter.set_limit("big", 4, 60.0)
    req = SimRequest("GET", "/x", {}, {}, b"")
    small = [limiter.check("small", req) is None for _ in range(4)]
    big = [limiter.check("big", req) is None for _ in range(5)]
    assert small == [True, True, False, False] and big == [True] * 4 + [False]
    assert limiter.remaining("big")[:2] == (4, 0)


def test_token_status_tells_an_expired_token_from_an_unknown_one():
    oauth = OAuthServer(token_lifetime=3600)
    token = oauth.issue_tokens("a1")["access_token"]
    assert oauth.token_status(token) == "live"
    oauth.expire_access_tokens()
    assert (oauth.token_status(token), oauth.token_status("made-up"),
            oauth.token_status(None)) == ("expired", "unknown", "unknown")


def test_token_account_tells_an_expired_token_from_a_revoked_grant():
    oauth = OAuthServer(token_lifetime=3600, rotate_refresh=True)
    token = oauth.issue_tokens("a1")["access_token"]
    other = oauth.issue_tokens("a2")["access_token"]
    oauth.expire_access_tokens()
    assert oauth.token_account(token) == ("a1", False)  # expired, the grant lives
    oauth.revoke("a1")
    assert oauth.token_account(token) == ("a1", True)
    assert oauth.token_account(other) == ("a2", False)
    assert oauth.token_account("made-up") == (None, False)
    assert oauth.token_account(None) == (None, False)
