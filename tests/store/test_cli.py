"""`nexus installs`, `nexus auth url` and `nexus keys` through the real click CLI."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from nexus_core import oauth
from nexus_core.config import load_settings
from nexus_core.crypto import KeyRing
from nexus_core.store import Store

SECRET_ACCESS = "cli-access-token-3f9a1c"
SECRET_REFRESH = "cli-refresh-token-77b2e0"


@pytest.fixture
def env(db_url, keys, fakes, token_server):
    return {"NEXUS_DATABASE_URL": db_url, **fakes.settings_env(token_server.url, keys)}


@pytest.fixture
def creds_file(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({
        "access_token": SECRET_ACCESS, "refresh_token": SECRET_REFRESH,
        "expires_at": "2030-01-01T00:00:00Z", "scopes": ["crm.read"],
    }))
    return path


def test_installs_add_list_show_disable_remove_without_ever_printing_secrets(
    cli_env, env, acme_registry, creds_file, db_url, keys
):
    added = cli_env(["installs", "add", "acme", "--tenant", "t1", "--install", "i1",
                     "--account-id", "62515", "--config", '{"streams": ["contacts"]}',
                     "--credentials-file", str(creds_file)], env)
    assert added.exit_code == 0, added.output
    assert "added acme installation i1 for tenant t1 (with credentials)" in added.output
    cli_env(["installs", "add", "acme", "--tenant", "t2", "--install", "other"], env)

    table = cli_env(["installs", "list"], env)
    assert table.exit_code == 0
    assert "TENANT" in table.output and "t1" in table.output and "t2" in table.output
    as_json = json.loads(cli_env(["installs", "list", "--tenant", "t1", "--json"], env).output)
    assert [(r["install_id"], r["account_id"], r["status"]) for r in as_json] == [
        ("i1", "62515", "active")]
    assert as_json[0]["config"] == {"streams": ["contacts"]}

    show = cli_env(["installs", "show", "--tenant", "t1", "--install", "i1", "--json"], env)
    data = json.loads(show.output)
    assert data["credentials"]["has_refresh_token"] is True
    assert data["credentials"]["expires_at"].startswith("2030-01-01")
    assert data["credentials"]["key_id"] == KeyRing.from_string(keys).primary_id
    text_show = cli_env(["installs", "show", "--tenant", "t1", "--install", "i1"], env)
    for output in (table.output, show.output, text_show.output, json.dumps(as_json)):
        assert SECRET_ACCESS not in output and SECRET_REFRESH not in output

    disabled = cli_env(["installs", "disable", "--tenant", "t1", "--install", "i1"], env)
    assert "is now disabled" in disabled.output
    only = json.loads(cli_env(["installs", "list", "--status", "disabled", "--json"], env).output)
    assert [r["install_id"] for r in only] == ["i1"]
    assert "is now active" in cli_env(
        ["installs", "enable", "--tenant", "t1", "--install", "i1"], env).output

    aborted = cli_env(["installs", "remove", "--tenant", "t1", "--install", "i1"], env, input="n\n")
    assert aborted.exit_code == 1
    removed = cli_env(["installs", "remove", "--tenant", "t1", "--install", "i1", "--yes"], env)
    assert removed.exit_code == 0 and "removed installation i1" in removed.output
    store = Store.from_url(db_url, KeyRing.from_string(keys))
    assert store.list_installations("t1") == []
    assert [i.install_id for i in store.list_installations("t2")] == ["other"]
    store.close()


def test_unknown_install_lists_only_that_tenants_installs(cli_env, env, acme_registry):
    cli_env(["installs", "add", "acme", "--tenant", "t1", "--install", "alpha"], env)
    cli_env(["installs", "add", "acme", "--tenant", "t2", "--install", "t2-private"], env)
    for cmd in (["show"], ["disable"], ["remove", "--yes"]):
        result = cli_env(["installs", *cmd, "--tenant", "t1", "--install", "beta"], env)
        assert result.exit_code == 1
        assert "installation 'beta' not found for tenant 't1'; this tenant has: alpha" in (
            result.output)
        assert "t2-private" not in result.output and "Traceback" not in result.output
    empty = cli_env(["installs", "list", "--tenant", "ghost"], env)
    assert "No installations for tenant 'ghost'" in empty.output


def test_unknown_provider_and_bad_input_are_clear_errors(cli_env, env, acme_registry, tmp_path):
    unknown = cli_env(["installs", "add", "hubspott", "--tenant", "t", "--install", "i"], env)
    assert unknown.exit_code == 1
    assert "unknown provider 'hubspott'; known providers: acme" in unknown.output
    bad_json = cli_env(["installs", "add", "acme", "--tenant", "t", "--install", "i",
                        "--config", "{nope"], env)
    assert bad_json.exit_code == 2 and "--config is not valid JSON" in bad_json.output
    bad_config = cli_env(["installs", "add", "acme", "--tenant", "t", "--install", "i",
                          "--config", '{"streams": ["tickets"]}'], env)
    assert bad_config.exit_code == 1 and "unknown stream(s) tickets" in bad_config.output
    creds = tmp_path / "bad.json"
    creds.write_text('{"acess_token": "x"}')
    typo = cli_env(["installs", "add", "acme", "--tenant", "t", "--install", "i",
                    "--credentials-file", str(creds)], env)
    assert typo.exit_code == 2 and "unknown credential field(s) acess_token" in typo.output
    dup = cli_env(["installs", "add", "acme", "--tenant", "t", "--install", "i"], env)
    assert dup.exit_code == 0
    again = cli_env(["installs", "add", "acme", "--tenant", "t", "--install", "i"], env)
    assert again.exit_code == 1 and "already exists" in again.output


def test_auth_url_prints_a_working_one_time_link(
    cli_env, env, acme_registry, token_server, db_url, keys
):
    result = cli_env(["auth", "url", "acme", "--tenant", "t1", "--install", "i1"], env)
    assert result.exit_code == 0, result.output
    link = result.output.strip()
    assert link.startswith("https://app.acme.test/oauth/authorize?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    token_server.add_code("code", q["code_challenge"])
    settings = load_settings(environ=env, env_file=None)
    store = Store.from_url(db_url, KeyRing.from_string(keys))
    inst = oauth.complete_authorization(store, acme_registry, "acme", "code", q["state"],
                                        settings=settings)
    assert inst.status == "active" and store.get_credentials("t1", "i1").access_token
    store.close()
    missing = cli_env(["auth", "url", "nope", "--tenant", "t1", "--install", "i1"], env)
    assert missing.exit_code == 1 and "known providers: acme" in missing.output


def test_keys_generate_prints_a_usable_key(cli_env, env):
    result = cli_env(["keys", "generate"], env)
    key = result.output.strip()
    ring = KeyRing.from_string(key)
    assert ring.decrypt(ring.encrypt(b"x", b"a"), b"a") == b"x"
