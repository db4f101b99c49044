"""What the public port shows: /metrics only with the bearer token (404 without one configured),
/readyz status only; the separate listener; the settings that drive them; the files of a
worker's work-horses."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from falcon import testing
from hypothesis import given
from hypothesis import strategies as st

from nexus_core.config import load_settings, parse_setting
from nexus_core.errors import ConfigError
from nexus_core.exporter import create_metrics_app, token_ok

TOKEN = "s3cret-metrics-token-0123456789"


@pytest.fixture
def app_for(redis_url, sqlite_url, nexus_registry):
    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.store import Store
    from nexus_core.web import create_app

    store = Store.from_url(sqlite_url, KeyRing.from_string(generate_key()))
    made = []

    def make(*, token=None, listener=False):
        env = {"REDIS_URL": redis_url, "NEXUS_DATABASE_URL": sqlite_url}
        if token:
            env["NEXUS_METRICS_TOKEN"] = token
        settings = load_settings(env, env_file=None)
        import redis

        client = redis.Redis.from_url(redis_url)
        made.append(client)
        if listener:
            return testing.TestClient(create_metrics_app(settings, client, store))
        return testing.TestClient(create_app(settings, store, client, nexus_registry))

    yield make
    for client in made:
        client.close()
    store.close()


def test_public_metrics_is_a_404_without_a_configured_token(app_for):
    client = app_for()
    resp = client.simulate_get("/metrics")
    assert resp.status_code == 404 and "--metrics-port" in resp.json["error"]
    resp = client.simulate_get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 404  # no token configured: no token opens it


def test_public_metrics_needs_the_bearer_token(app_for):
    client = app_for(token=TOKEN)
    assert client.simulate_get("/metrics").status_code == 401
    assert client.simulate_get("/metrics").headers["www-authenticate"].startswith("Bearer")
    for bad in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer"):
        assert client.simulate_get("/metrics", headers={"Authorization": bad}).status_code == 401
    resp = client.simulate_get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert "nexus_dlq_jobs" in resp.text and "nexus_metrics_source_up" in resp.text


def test_public_readyz_shows_the_status_only_and_the_details_with_the_token(app_for):
    client = app_for(token=TOKEN)
    assert client.simulate_get("/readyz").json == {"ready": True}
    resp = client.simulate_get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.json == {"ready": True, "redis": "ok", "store": "ok"}
    resp = client.simulate_get("/readyz", headers={"Authorization": "Bearer wrong-token-xxxxxx"})
    assert resp.json == {"ready": True}


def test_the_metrics_listener_serves_metrics_and_readyz_details(app_for):
    client = app_for(listener=True)
    resp = client.simulate_get("/metrics")
    assert resp.status_code == 200 and "nexus_queue_jobs" in resp.text
    assert client.simulate_get("/readyz").json == {"ready": True, "redis": "ok", "store": "ok"}
    assert client.simulate_get("/webhooks/example").status_code == 404  # nothing public here


def test_the_metrics_listener_asks_for_the_token_when_one_is_set(app_for):
    client = app_for(token=TOKEN, listener=True)
    assert client.simulate_get("/metrics").status_code == 401
    assert client.simulate_get("/readyz").status_code == 401
    assert client.simulate_get("/healthz").status_code == 200  # a liveness probe
    resp = client.simulate_get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200


@given(header=st.one_of(st.none(), st.text(max_size=80),
                        st.text(max_size=40).map(lambda t: "Bearer " + t),
                        st.binary(max_size=40).map(lambda b: "Bearer " + b.decode("latin-1"))))
def test_only_the_exact_token_is_accepted_and_nothing_raises(header):
    assert token_ok(header, TOKEN) is (header is not None and header.strip().partition(" ")[0]
                                       .lower() == "bearer"
                                       and header.strip().partition(" ")[2].strip() == TOKEN)
    assert token_ok(header, None) is False


@given(raw=st.text(max_size=60))
def test_tenant_labels_setting_parses_a_switch_or_refuses_in_one_line(raw):
    try:
        value = parse_setting("NEXUS_METRICS_TENANT_LABELS", raw)
    except ConfigError as exc:
        assert "NEXUS_METRICS_TENANT_LABELS must be true or false" in str(exc)
        assert "\n" not in str(exc)
        assert raw.strip().lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0")
        return
    assert value is (raw.strip().lower() in ("true", "yes", "on", "1"))


@given(raw=st.text(max_size=80))
def test_metrics_token_setting_accepts_long_visible_tokens_only(raw):
    try:
        value = parse_setting("NEXUS_METRICS_TOKEN", raw)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("NEXUS_METRICS_TOKEN must be") and "\n" not in message
        assert raw.strip() not in message or len(raw.strip()) < 4  # the secret is not echoed
        stripped = raw.strip()
        assert len(stripped) < 16 or not all(33 <= ord(c) <= 126 for c in stripped)
        return
    assert value == raw.strip() and len(value) >= 16
    assert all(33 <= ord(c) <= 126 for c in value)


def test_metrics_token_is_not_in_the_settings_repr():
    settings = load_settings({"NEXUS_METRICS_TOKEN": TOKEN}, env_file=None)
    assert settings.metrics_token == TOKEN and TOKEN not in repr(settings)


@given(raw=st.text(max_size=60))
def test_metrics_dir_setting_is_a_path_or_a_one_line_error(raw):
    try:
        value = parse_setting("NEXUS_METRICS_DIR", raw)
    except ConfigError as exc:
        assert "NEXUS_METRICS_DIR" in str(exc) and "\n" not in str(exc)
        assert any(ord(c) < 32 or ord(c) == 127 for c in raw)
        return
    assert value == raw.strip()


# -- work-horses' files ---------------------------------------------------------------------------

_CHILD = r"""
import os, sys
from nexus_core import metrics
metrics.use_private_dir("t", None)
metrics.SYNC_RECORDS.labels("p", "backfill", "").inc(5)
metrics.QUEUE_WAIT.labels("q").observe(0.2)
metrics.BREAKER_STATE.labels("p", "i").set(2)
for n in range(3):  # three work-horses, one after the other, each counting on its own
    pid = os.fork()
    if pid == 0:
        metrics.become_work_horse(os.getppid())
        metrics.SYNC_RECORDS.labels("p", "backfill", "").inc(10)
        metrics.QUEUE_WAIT.labels("q").observe(2.0)
        metrics.SYNC_PAGES.labels("p", "backfill", "").inc()
        os._exit(0)
    os.waitpid(pid, 0)
sys.stdout.write(repr((metrics.exposition(), os.getpid(),
                       sorted(os.listdir(metrics.multiprocess_dir())))))
"""


def test_the_horses_of_a_worker_add_up_in_one_set_of_files(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    env = {**os.environ, "NEXUS_METRICS_DIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text, worker, files = eval(out.stdout)  # noqa: S307 - our own child's repr
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    labels = (("operation", "backfill"), ("provider", "p"), ("tenant_id", ""))
    assert got[("nexus_sync_records_total", labels)] == 5 + 3 * 10  # nothing lost or doubled
    assert got[("nexus_sync_pages_total", labels)] == 3
    assert got[("nexus_queue_wait_seconds_count", (("queue", "q"),))] == 4
    # the worker's own files and one set for all its horses: not a set per job
    assert {f.rsplit("_", 1)[1] for f in files} == {f"{worker}.db", f"{worker}h0.db"}, files


def test_a_metrics_port_in_use_is_a_one_line_error(tmp_path, redis_url):
    import socket

    from nexus_core.testing import free_port

    busy = socket.socket()
    busy.bind(("127.0.0.1", free_port()))
    busy.listen()
    port = busy.getsockname()[1]
    env = {**os.environ, "REDIS_URL": redis_url, "NEXUS_METRICS_DIR": str(tmp_path / "m"),
           "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
           "NEXUS_KEY_FILE": str(tmp_path / "key")}
    try:
        out = subprocess.run(
            [str(Path(sys.executable).with_name("nexus")), "metrics", "serve", "--port",
             str(port)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        busy.close()
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_nexus_metrics_serve_sums_every_process_directory_of_the_machine(tmp_path, redis_url):
    """Two `processes` that left their directories (live pids: this test's) are summed."""
    from nexus_core.testing import free_port

    root = tmp_path / "m"
    child = r"""
import sys, time
from nexus_core import metrics
metrics.use_private_dir(sys.argv[1], None)
metrics.SYNC_PAGES.labels("p", "delta", "").inc(int(sys.argv[2]))
print("ready", flush=True)
time.sleep(120)
"""
    env = {**os.environ, "REDIS_URL": redis_url, "NEXUS_METRICS_DIR": str(root),
           "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
           "NEXUS_KEY_FILE": str(tmp_path / "key")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    procs = []
    try:
        for role, n in (("worker", 3), ("serve", 4)):
            p = subprocess.Popen([sys.executable, "-c", child, role, str(n)], env=env,
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"
        port = free_port()
        server = subprocess.Popen([str(Path(sys.executable).with_name("nexus")), "metrics",
                                   "serve", "--port", str(port)], env=env,
                                  stderr=subprocess.DEVNULL)
        procs.append(server)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    conn.request("GET", "/metrics")
                    text = conn.getresponse().read().decode()
                finally:
                    conn.close()
                break
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.1)
        assert 'nexus_sync_pages_total{operation="delta",provider="p",tenant_id=""} 7.0' in text
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


@pytest.mark.parametrize("command", [["serve"], ["run-worker", "--burst"]])
def test_an_unusable_metrics_dir_is_a_one_line_error(tmp_path, redis_url, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = {**os.environ, "REDIS_URL": redis_url, "NEXUS_METRICS_DIR": str(blocker / "m"),
           "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
           "NEXUS_KEY_FILE": str(tmp_path / "key")}
    out = subprocess.run([str(Path(sys.executable).with_name("nexus")), *command], env=env,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert f"cannot create the metrics directory {blocker / 'm'}" in out.stderr
    assert "NEXUS_METRICS_DIR" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_running_scheduler_keeps_its_heartbeat_for_nexus_scheduler_up(tmp_path, redis_url,
                                                                        redis_client):
    from nexus_core.sync.cron import running_schedulers

    env = {**os.environ, "REDIS_URL": redis_url,
           "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
           "NEXUS_KEY_FILE": str(tmp_path / "key")}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("nexus")), "scheduler"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not running_schedulers(redis_client):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert running_schedulers(redis_client)[0].endswith(f":{proc.pid}")
    finally:
        proc.terminate()
        proc.wait(20)
