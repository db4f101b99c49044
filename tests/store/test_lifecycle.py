"""An installation's life through the real CLI: added as pending_authorization, connected through
a connect link on the public app, reconfigured with `installs update`, its webhook URL shown and
rotated; ids that cannot be stored are refused up front."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from falcon import testing

from nexus_core.crypto import KeyRing
from nexus_core.store import Store


@pytest.fixture
def env(db_url, keys, fakes, token_server):
    return {"NEXUS_DATABASE_URL": db_url, "NEXUS_PUBLIC_URL": "https://connect.example.com",
            **fakes.settings_env(token_server.url, keys)}


@pytest.fixture
def open_store(db_url, keys):
    store = Store.from_url(db_url, KeyRing.from_string(keys))
    yield store
    store.close()


def test_oauth_installation_waits_for_its_tenant_then_connects_through_a_link(
    cli_env, env, acme_registry, token_server, open_store, redis_client
):
    from nexus_core.config import load_settings
    from nexus_core.web import create_app

    added = cli_env(["installs", "add", "acme", "--tenant", "t1", "--install", "i1"], env)
    assert added.exit_code == 0, added.output
    assert "pending_authorization" in added.output and "nexus auth link acme" in added.output
    assert open_store.get_installation("t1", "i1").status == "pending_authorization"
    enable = cli_env(["installs", "enable", "--tenant", "t1", "--install", "i1"], env)
    assert enable.exit_code == 1 and "no credentials yet" in enable.output

    link = cli_env(["auth", "link", "acme", "--tenant", "t1", "--install", "i1",
                    "--set", "streams=[\"contacts\"]", "--json"], env)
    assert link.exit_code == 0, link.output
    info = json.loads(link.stdout)
    assert info["intent"] == "connect" and info["url"].startswith(
        "https://connect.example.com/integrations/acme/authorize?token=")

    settings = load_settings(env, env_file=None)
    client = testing.TestClient(create_app(settings, open_store, redis_client, acme_registry))
    parts = urlsplit(info["url"])
    consent = client.simulate_get(parts.path, query_string=parts.query)
    assert consent.status_code == 302
    q = {k: v[0] for k, v in parse_qs(urlsplit(consent.headers["location"]).query).items()}
    token_server.add_code("the-code", q["code_challenge"])
    done = client.simulate_get("/integrations/acme/callback",
                               params={"code": "the-code", "state": q["state"]})
    assert done.status_code == 200, done.text
    inst = open_store.get_installation("t1", "i1")
    assert inst.status == "active" and inst.config == {"streams": ["contacts"]}
    assert open_store.get_credentials("t1", "i1").access_token


def test_installs_update_sets_keys_validates_and_replaces(cli_env, env, acme_registry,
                                                          open_store):
    cli_env(["installs", "add", "acme", "--tenant", "t1", "--install", "i1",
             "--config", '{"streams": ["contacts"], "keep": 1}'], env)
    result = cli_env(["installs", "update", "--tenant", "t1", "--install", "i1",
                      "--set", "rate_limits.requests_per_second=20", "--set", "label=ops team",
                      "--set", "keep=null"], env)
    assert result.exit_code == 0, result.output
    assert open_store.get_installation("t1", "i1").config == {
        "streams": ["contacts"], "rate_limits": {"requests_per_second": 20},
        "label": "ops team"}
    bad = cli_env(["installs", "update", "--tenant", "t1", "--install", "i1",
                   "--set", "rate_limits.requests_per_second=-1"], env)
    assert bad.exit_code == 1
    assert "rate_limits.requests_per_second must be a number > 0" in bad.output
    assert open_store.get_installation("t1", "i1").config["rate_limits"] == {
        "requests_per_second": 20}
    replaced = cli_env(["installs", "update", "--tenant", "t1", "--install", "i1",
                        "--config", "{}"], env)
    assert replaced.exit_code == 0 and open_store.get_installation("t1", "i1").config == {}
    nothing = cli_env(["installs", "update", "--tenant", "t1", "--install", "i1"], env)
    assert nothing.exit_code == 2


def test_installs_show_prints_the_webhook_url_and_rotate_changes_it(
    cli_env, env, acme_registry, open_store
):
    from nexus_core import WebhookConfig
    from nexus_core.plugins import registered

    class Hooked(acme_registry.pm.get_plugin("acme").__class__):
        provider = acme_registry.providers["acme"].__class__(
            id="hooked", name="Hooked", version="1", auth_type="api_key", streams=("s",),
            webhook=WebhookConfig(scheme="standard-webhooks", secret_envs=("X",)))

    with registered(Hooked, "hooked", registry=acme_registry):
        cli_env(["installs", "add", "hooked", "--tenant", "t1", "--install", "i1"], env)
        show = json.loads(cli_env(["installs", "show", "--tenant", "t1", "--install", "i1",
                                   "--json"], env).stdout)
        key = open_store.get_installation("t1", "i1").webhook_key
        assert show["webhook_url"] == f"https://connect.example.com/webhooks/hooked/{key}"
        rotated = cli_env(["installs", "rotate-webhook-key", "--tenant", "t1", "--install",
                           "i1"], env)
        new_key = open_store.get_installation("t1", "i1").webhook_key
        assert new_key != key and new_key in rotated.output
        assert open_store.find_installation_by_webhook_key("hooked", key) is None
        assert open_store.find_installation_by_webhook_key("hooked", new_key).tenant_id == "t1"


@pytest.mark.parametrize(("tenant", "message"), [
    ("x" * 10_000, "tenant_id is 10000 characters long; the limit is 200"),
    ("a\nb", "tenant_id contains a control character"),
])
def test_ids_that_cannot_be_stored_are_refused_up_front(cli_env, env, acme_registry, tenant,
                                                        message, open_store):
    """Defect 2: a 10 KB tenant id was accepted, then every backfill failed with "File name too
    long"."""
    result = cli_env(["installs", "add", "acme", "--tenant", tenant, "--install", "i"], env)
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output
    assert open_store.list_all_installations() == []


def test_migration_from_version_1_keeps_data_and_fills_webhook_keys(make_db_url, backend,
                                                                    keyring):
    """A database created by the previous release (schema 1) upgrades in place: rows kept,
    every installation gets its own key, pending_authorization fits the status column."""
    import sqlalchemy as sa

    from nexus_core.store import schema

    url = make_db_url(backend)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        schema.MIGRATIONS[0][2](conn)  # exactly what version 1 created
        schema.schema_version.create(conn)
        conn.execute(sa.insert(schema.schema_version).values(id=1, version=1,
                                                             updated_at=sa.func.now()))
        for tenant in ("t1", "t2"):
            conn.execute(sa.text(
                "INSERT INTO nexus_installations (tenant_id, install_id, provider, status, "
                "config, created_at, updated_at) VALUES (:t, 'main', 'acme', 'active', '{}', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"t": tenant})
    engine.dispose()
    store = Store.from_url(url, keyring)
    try:
        assert store.schema_version() == schema.LATEST_VERSION
        keys = {store.get_installation(t, "main").webhook_key for t in ("t1", "t2")}
        assert len(keys) == 2 and all(k and len(k) >= 32 for k in keys)
        store.add_installation("t3", "new", "acme", status="pending_authorization")
        assert store.get_installation("t3", "new").status == "pending_authorization"
    finally:
        store.close()


def test_the_webhook_key_lookup_uses_its_index(tmp_path, keyring):
    """Defect 9: per-installation URLs scanned every installation of the provider."""
    import sqlalchemy as sa

    store = Store.from_url(f"sqlite:///{tmp_path / 'n.db'}", keyring)
    try:
        with store.engine.connect() as conn:
            plan = conn.execute(sa.text(
                "EXPLAIN QUERY PLAN SELECT * FROM nexus_installations WHERE webhook_key = 'k'"
            )).all()
        assert "USING INDEX ux_nexus_installations_webhook_key" in " ".join(map(str, plan))
    finally:
        store.close()


# -- operator input, property-based -------------------------------------------------------------


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200)
@given(items=st.lists(st.text(max_size=30), max_size=4))
def test_set_assignments_parse_or_refuse_clearly(items):
    import click

    from nexus_core.commands.installs import parse_assignments
    from nexus_core.errors import ConfigError
    from nexus_core.service import _set_path

    try:
        changes = parse_assignments(tuple(items))
    except click.BadParameter as exc:
        assert "is not KEY=VALUE" in exc.message
        return
    config: dict = {}
    for key, value in changes.items():
        try:
            _set_path(config, key, value)
        except ConfigError as exc:
            assert str(exc).startswith("config key")


@settings(max_examples=200)
@given(text=st.one_of(st.text(max_size=20),
                      st.from_regex(r"[0-9]{1,30}(\.[0-9]{0,12})?[smhdwx]", fullmatch=True)))
def test_dlq_durations_parse_or_refuse_clearly(text):
    import click

    from nexus_core.commands.dlq import parse_duration

    try:
        assert parse_duration(text).total_seconds() >= 0
    except click.BadParameter as exc:
        assert "is not a duration" in exc.message


def test_installs_show_prints_the_effective_rate_limits_of_the_installations_tier(
    cli_env, env, acme_registry, open_store
):
    cli_env(["installs", "add", "acme", "--tenant", "t1", "--install", "i1"], env)
    shown = cli_env(["installs", "show", "--tenant", "t1", "--install", "i1"], env)
    assert shown.exit_code == 0, shown.output
    declared = acme_registry.provider("acme").rate_limits
    line = next(x for x in shown.output.splitlines() if x.startswith("rate_limits"))
    assert f"{declared.requests_per_second:g} req/s, burst {declared.burst_size}" in line
    assert "(provider defaults)" in line
    raised = cli_env(["installs", "update", "--tenant", "t1", "--install", "i1",
                      "--set", "rate_limits.requests_per_second=50",
                      "--set", "rate_limits.burst_size=60"], env)
    assert raised.exit_code == 0, raised.output
    data = json.loads(cli_env(["installs", "show", "--tenant", "t1", "--install", "i1",
                               "--json"], env).stdout)
    assert data["rate_limits"] == {"requests_per_second": 50.0, "burst_size": 60,
                                   "buckets": {}, "tier": "installation"}
    text = cli_env(["installs", "show", "--tenant", "t1", "--install", "i1"], env).output
    assert "50 req/s, burst 60 (set by this installation)" in text
