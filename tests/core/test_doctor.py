"""`nexus doctor` against real Redis servers (one evicting keys, one set up right), a real
SQLite store and a real `nexus run-worker --with-scheduler` process."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from loguru import logger

from nexus_core.cli import cli
from nexus_core.config import load_settings, reset_settings
from nexus_core.crypto import generate_key
from nexus_core.doctor import diagnose, failed
from nexus_core.testing.redis_server import RedisServer

SECRETS = {"HUBSPOT_CLIENT_ID": "hs-id", "HUBSPOT_CLIENT_SECRET": "hs-secret",
           "HUBSPOT_WEBHOOK_SECRET": "hs-whsec", "SALESFORCE_CLIENT_ID": "sf-id",
           "SALESFORCE_CLIENT_SECRET": "sf-secret", "EXAMPLE_CLIENT_ID": "ex-id",
           "EXAMPLE_CLIENT_SECRET": "ex-secret", "EXAMPLE_WEBHOOK_SECRET": "ex-whsec"}


@pytest.fixture
def good_redis():
    """Set up as the operations guide says: noeviction and AOF."""
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def evicting_redis():
    """A cache-style Redis: allkeys-lru (the server's own setting, as redis.conf would set it)."""
    with RedisServer(appendonly=True) as server:
        import redis

        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "allkeys-lru")
        client.close()
        yield server


def environment(tmp_path, redis_url, **extra):
    env = {"REDIS_URL": redis_url, "NEXUS_DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}",
           "NEXUS_ENCRYPTION_KEYS": generate_key(), "NEXUS_EMBEDDED_REDIS": "off",
           "NEXUS_SINK": "null", **SECRETS, **extra}
    return {k: v for k, v in env.items() if v is not None}


def prepare_store(env, *, installs=1):
    """A migrated store with installations holding encrypted credentials."""
    from nexus_core.models import Credentials
    from nexus_core.store import Store

    store = Store.from_settings(load_settings(env, env_file=None))
    try:
        for n in range(installs):
            store.add_installation("t1", f"i{n}", "example", credentials=Credentials(
                access_token=f"at-{n}", refresh_token=f"rt-{n}"))
    finally:
        store.close()


def run_doctor(monkeypatch, env, *args):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    try:
        result = CliRunner().invoke(cli, ["doctor", *args], catch_exceptions=False)
    finally:
        logger.remove()
        reset_settings()
    return result


def by_check(result):
    return {f["check"]: f for f in json.loads(result.stdout)["findings"]}


@pytest.fixture
def worker(tmp_path):
    """A real `nexus run-worker --workers 1 --with-scheduler` for the given environment,
    waited for until its worker and both schedulers are up, stopped with SIGTERM after."""
    procs = []

    def start(env):
        import redis

        from nexus_core import queues
        from nexus_core.sync.cron import running_schedulers

        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nexus_core.cli", "run-worker", "--workers", "1",
                 "--with-scheduler"], env={**os.environ, **env, "LOG_LEVEL": "WARNING"},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        client = redis.Redis.from_url(env["REDIS_URL"])
        deadline = time.monotonic() + 60
        while True:
            stats = queues.queue_stats(client)["queues"]
            up = all(s["workers"] for s in stats.values()) and running_schedulers(client) \
                and any(queues.queue(q, client).scheduler_pid for q in stats)
            if up:
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, (stats, log.read_text())
            time.sleep(0.2)
        client.close()
        return proc

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_doctor_passes_against_a_correct_setup(tmp_path, monkeypatch, good_redis, worker):
    env = environment(tmp_path, good_redis.url)
    prepare_store(env)
    worker(env)
    result = run_doctor(monkeypatch, env, "--json")
    found = by_check(result)
    assert result.exit_code == 0, json.dumps(found, indent=1)
    assert json.loads(result.stdout)["ok"] is True
    for check in ("redis", "redis.version", "redis.eviction", "redis.persistence", "database",
                  "database.schema", "keys", "keys.decrypt", "plugins", "workers", "scheduler",
                  "scheduler.retries", "dlq", "provider.example"):
        assert found[check]["status"] == "ok", (check, found[check])
    assert "noeviction" in found["redis.eviction"]["message"]
    assert "AOF is on" in found["redis.persistence"]["message"]
    text = run_doctor(monkeypatch, env)
    assert text.exit_code == 0 and "everything checked is in order" in text.stdout
    for value in (*SECRETS.values(), env["NEXUS_ENCRYPTION_KEYS"], "at-0", "rt-0"):
        assert value not in result.stdout + text.stdout  # the doctor names variables only


def test_doctor_fails_against_a_redis_that_evicts_keys(tmp_path, monkeypatch, evicting_redis):
    env = environment(tmp_path, evicting_redis.url)
    prepare_store(env)
    result = run_doctor(monkeypatch, env, "--json")
    assert result.exit_code == 1
    eviction = by_check(result)["redis.eviction"]
    assert eviction["status"] == "fail"
    assert "maxmemory-policy is allkeys-lru" in eviction["message"]
    assert "noeviction" in eviction["fix"]
    text = run_doctor(monkeypatch, env).stdout
    assert "FAIL  redis.eviction" in text and "fix: set `maxmemory-policy noeviction`" in text


@pytest.mark.parametrize(("nexus_env", "status"), [("development", "warn"),
                                                   ("production", "fail")])
def test_redis_without_persistence_warns_in_development_and_fails_in_production(
        tmp_path, redis_url, nexus_env, status):
    settings = load_settings(environment(tmp_path, redis_url, NEXUS_ENV=nexus_env),
                             env_file=None)
    found = {f.check: f for f in diagnose(settings)}
    assert found["redis.persistence"].status == status
    assert "a Redis restart loses every queued job" in found["redis.persistence"].message
    assert "appendonly yes" in found["redis.persistence"].fix


def test_unreachable_redis_and_database_are_failures_with_fixes(tmp_path):
    from nexus_core.testing.redis_server import free_port

    settings = load_settings(environment(
        tmp_path, f"redis://127.0.0.1:{free_port()}/0",
        NEXUS_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:1/none"), env_file=None)
    findings = diagnose(settings)
    found = {f.check: f for f in findings}
    assert failed(findings)
    assert found["redis"].status == "fail" and "unreachable" in found["redis"].message
    assert "REDIS_URL" in found["redis"].fix
    assert found["database"].status == "fail" and "NEXUS_DATABASE_URL" in found["database"].fix
    assert found["workers"].status == "skip" and found["keys.decrypt"].status == "skip"


def test_a_missing_sqlite_file_fails_and_is_not_created(tmp_path, redis_url):
    settings = load_settings(environment(tmp_path, redis_url), env_file=None)
    found = {f.check: f for f in diagnose(settings)}
    assert found["database"].status == "fail" and "does not exist" in found["database"].message
    assert not (tmp_path / "n.db").exists()


def test_an_unmigrated_database_fails(tmp_path, redis_url):
    import sqlalchemy as sa

    settings = load_settings(environment(tmp_path, redis_url), env_file=None)
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:  # an empty database file
        conn.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
    engine.dispose()
    found = {f.check: f for f in diagnose(settings)}
    assert found["database.schema"].status == "fail"
    assert "schema version 0" in found["database.schema"].message
    # The doctor only looks: a second run finds it unmigrated still.
    assert {f.check: f for f in diagnose(settings)}["database.schema"].status == "fail"


def test_credentials_under_a_key_no_longer_configured_fail_to_decrypt(tmp_path, redis_url):
    env = environment(tmp_path, redis_url)
    prepare_store(env)
    other = {**env, "NEXUS_ENCRYPTION_KEYS": generate_key()}
    found = {f.check: f for f in diagnose(load_settings(other, env_file=None))}
    assert found["keys"].status == "ok"
    assert found["keys.decrypt"].status == "fail"
    assert "cannot be decrypted" in found["keys.decrypt"].message
    assert "nexus keys rotate" in found["keys.decrypt"].fix
    rotated = {**env, "NEXUS_ENCRYPTION_KEYS": f"{generate_key()},{env['NEXUS_ENCRYPTION_KEYS']}"}
    assert {f.check: f for f in diagnose(load_settings(rotated, env_file=None))}[
        "keys.decrypt"].status == "ok"


def test_production_without_encryption_keys_fails(tmp_path, redis_url):
    env = environment(tmp_path, redis_url, NEXUS_ENV="production", NEXUS_ENCRYPTION_KEYS=None)
    found = {f.check: f for f in diagnose(load_settings(env, env_file=None))}
    assert found["keys"].status == "fail" and "NEXUS_ENCRYPTION_KEYS" in found["keys"].fix


def test_a_plugin_that_did_not_load_fails_with_its_reason(tmp_path, redis_url, nexus_registry):
    from nexus_core import BaseConnector, Provider

    class Broken(BaseConnector):
        provider = Provider(id="broken", name="Broken", version="1", auth_type="none",
                            streams=())

    nexus_registry.register(Broken, "broken")
    settings = load_settings(environment(tmp_path, redis_url), env_file=None)
    found = {f.check: f for f in diagnose(settings, registry=nexus_registry)}
    assert found["plugin.broken"].status == "fail"
    assert "was not loaded" in found["plugin.broken"].message
    assert "NEXUS_DISABLE_PLUGINS=broken" in found["plugin.broken"].fix


def test_a_provider_missing_its_client_secret_fails_once_it_has_installations(
        tmp_path, redis_url):
    env = environment(tmp_path, redis_url, EXAMPLE_CLIENT_ID=None, EXAMPLE_WEBHOOK_SECRET=None)
    settings = load_settings(env, env_file=None)
    found = {f.check: f for f in diagnose(settings)}
    assert found["provider.example"].status == "warn"  # nothing migrated, no installation
    prepare_store(env)
    found = {f.check: f for f in diagnose(settings)}
    example = found["provider.example"]
    assert example.status == "fail" and "it has installations" in example.message
    assert "EXAMPLE_CLIENT_ID" in example.message and "EXAMPLE_WEBHOOK_SECRET" in example.message
    assert "ex-secret" not in example.message
    assert found["provider.hubspot"].status == "ok"


def test_no_workers_no_scheduler_and_a_dead_letter_queue_are_reported(tmp_path, redis_url,
                                                                       redis_client):
    from nexus_core import queues

    env = environment(tmp_path, redis_url)
    prepare_store(env, installs=2)
    job = queues.queue(queues.DELTA, redis_client).enqueue_call(
        "nexus_core.jobs.run_delta", kwargs={}, job_id="doomed")
    job.set_status("failed")
    queues.queue(queues.DELTA, redis_client).failed_job_registry.add(job, ttl=600)
    found = {f.check: f for f in diagnose(load_settings(env, env_file=None))}
    assert found["workers"].status == "fail"
    assert "no worker listens on integration-backfill, integration-delta" in \
        found["workers"].message
    assert "nexus run-worker" in found["workers"].fix
    assert found["scheduler"].status == "fail"
    assert "for 2 active installation(s)" in found["scheduler"].message
    assert found["scheduler.retries"].status == "fail"
    assert found["dlq"].status == "warn" and "1 job(s)" in found["dlq"].message
    assert "nexus dlq list" in found["dlq"].fix
