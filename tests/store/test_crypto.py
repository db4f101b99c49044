"""Encryption at rest: the key ring, tenant binding, key rotation through the real CLI, the
development key file, and plaintext never reaching the database file or a log line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from nexus_core.config import load_settings
from nexus_core.crypto import (
    DecryptionError,
    KeyRing,
    associated_data,
    generate_key,
    keyring_from_settings,
)
from nexus_core.errors import ConfigError
from nexus_core.models import Credentials
from nexus_core.store import Store


def test_first_key_encrypts_and_every_key_decrypts():
    a, b = generate_key(), generate_key()
    aad = associated_data("t", "i")
    sealed_a = KeyRing.from_string(a).encrypt(b"secret", aad)
    ring = KeyRing.from_string(f"{b}, {a}")
    sealed_b = ring.encrypt(b"secret", aad)
    assert ring.decrypt(sealed_a, aad) == ring.decrypt(sealed_b, aad) == b"secret"
    assert ring.key_id_of(sealed_b) == ring.primary_id != ring.key_id_of(sealed_a)
    assert ring.needs_rotation(sealed_a) and not ring.needs_rotation(sealed_b)
    assert b"secret" not in sealed_a.encode()
    assert ring.encrypt(b"secret", aad) != sealed_b  # fresh nonce every time


def test_a_missing_key_is_named_with_what_to_do():
    a, b = generate_key(), generate_key()
    sealed = KeyRing.from_string(a).encrypt(b"x", b"aad")
    with pytest.raises(DecryptionError, match="not in NEXUS_ENCRYPTION_KEYS") as err:
        KeyRing.from_string(b).decrypt(sealed, b"aad")
    assert "nexus keys rotate" in str(err.value)


@pytest.mark.parametrize("bad", ["short", "!!!not base64!!!", "A" * 43 + "AAAA"],
                         ids=["short", "not-base64", "36-bytes"])
def test_malformed_keys_are_a_config_error_naming_the_variable(bad):
    with pytest.raises(ConfigError, match="NEXUS_ENCRYPTION_KEYS") as err:
        KeyRing.from_string(f"{generate_key()},{bad}")
    assert bad not in str(err.value)  # never echo key material


def test_ciphertext_copied_into_another_tenants_row_fails_to_decrypt(store):
    store.add_installation("tenant-a", "i1", "acme", credentials=Credentials(access_token="A"))
    store.add_installation("tenant-b", "i1", "acme", credentials=Credentials(access_token="B"))
    creds = sa.table("nexus_credentials", sa.column("tenant_id"), sa.column("install_id"),
                     sa.column("ciphertext"))
    with store.engine.begin() as conn:
        stolen = conn.execute(
            sa.select(creds.c.ciphertext).where(creds.c.tenant_id == "tenant-b")
        ).scalar_one()
        conn.execute(sa.update(creds).where(creds.c.tenant_id == "tenant-a")
                     .values(ciphertext=stolen))
    with pytest.raises(DecryptionError, match="another tenant"):
        store.get_credentials("tenant-a", "i1")
    assert store.get_credentials("tenant-b", "i1").access_token == "B"


def _nexus(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, "NEXUS_ENV": "development", **env}
    return subprocess.run([sys.executable, "-m", "nexus_core.cli", *args], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_key_rotation_a_then_b_a_then_b_only_with_the_real_cli(db_url, tmp_path):
    key_a, key_b = generate_key(), generate_key()
    under_a = Store.from_url(db_url, KeyRing.from_string(key_a))
    for n in range(3):
        under_a.add_installation(
            "t", f"i{n}", "acme",
            credentials=Credentials(access_token=f"at-{n}", refresh_token=f"rt-{n}"),
        )
    under_a.put_oauth_state("state-1", "t", "i0", "acme", redirect_uri="https://cb",
                            code_verifier="verifier-1",
                            expires_at=datetime.now(UTC) + timedelta(minutes=5))
    under_a.close()

    b_only = Store.from_url(db_url, KeyRing.from_string(key_b))
    with pytest.raises(DecryptionError):  # before rotation, B alone cannot read A's rows
        b_only.get_credentials("t", "i0")

    env = {"NEXUS_DATABASE_URL": db_url, "NEXUS_ENCRYPTION_KEYS": f"{key_b},{key_a}"}
    result = _nexus(["keys", "rotate"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 4 secret(s)" in result.stdout
    again = _nexus(["keys", "rotate"], env, tmp_path)
    assert "re-encrypted 0 secret(s)" in again.stdout and "4 already used it" in again.stdout

    for n in range(3):
        creds = b_only.get_credentials("t", f"i{n}")
        assert (creds.access_token, creds.refresh_token) == (f"at-{n}", f"rt-{n}")
    assert b_only.consume_oauth_state("state-1").code_verifier == "verifier-1"
    assert b_only.key_usage() == {b_only.keyring.primary_id: 3}
    status = _nexus(["keys", "status"],
                    {"NEXUS_DATABASE_URL": db_url, "NEXUS_ENCRYPTION_KEYS": key_b}, tmp_path)
    assert f"{b_only.keyring.primary_id}  primary" in status.stdout
    assert "3 credential(s)" in status.stdout
    b_only.close()


def test_development_without_a_key_generates_a_0600_key_file_and_warns(tmp_path, captured_logs):
    key_file = tmp_path / "secrets" / "nexus.key"
    settings = load_settings(environ={"NEXUS_KEY_FILE": str(key_file)}, env_file=None)
    ring = keyring_from_settings(settings)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert any("WARNING" in line and "generated a development key" in line
               for line in captured_logs)
    captured_logs.clear()
    again = keyring_from_settings(settings)  # reused, not regenerated
    assert again.primary_id == ring.primary_id
    assert not any("generated" in line for line in captured_logs)
    sealed = ring.encrypt(b"x", b"aad")
    assert again.decrypt(sealed, b"aad") == b"x"


def test_production_without_a_key_refuses_to_start(tmp_path, sqlite_url):
    settings = load_settings(
        environ={"NEXUS_ENV": "production", "NEXUS_KEY_FILE": str(tmp_path / "k"),
                 "NEXUS_DATABASE_URL": sqlite_url},
        env_file=None,
    )
    with pytest.raises(ConfigError, match="NEXUS_ENCRYPTION_KEYS is not set") as err:
        Store.from_settings(settings)
    assert "nexus keys generate" in str(err.value)
    assert not (tmp_path / "k").exists()
    result = _nexus(["installs", "list"], {"NEXUS_ENV": "production",
                                           "NEXUS_DATABASE_URL": sqlite_url,
                                           "NEXUS_ENCRYPTION_KEYS": ""}, tmp_path)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr and "Traceback" not in result.stderr


def test_plaintext_tokens_never_reach_the_sqlite_file_or_the_logs(
    make_db_url, keys, fakes, token_server, acme_registry, redis_client, captured_logs, caplog
):
    from nexus_core import oauth

    settings = load_settings(environ=fakes.settings_env(token_server.url, keys), env_file=None)
    url = make_db_url("sqlite")
    store = Store.from_url(url, settings=settings)
    link = oauth.authorization_url(store, acme_registry, "acme", "t", "i", settings=settings)
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    token_server.add_code("the-code", query["code_challenge"])
    oauth.complete_authorization(store, acme_registry, "acme", "the-code", query["state"],
                                 settings=settings)
    first = store.get_credentials("t", "i")
    refreshed = oauth.refresh_credentials(store, redis_client, acme_registry, "t", "i",
                                          stale=first, settings=settings)
    # an invalid_grant answer logs an error: it must not carry the token either
    store.save_credentials("t", "i", refreshed)
    token_server.valid_refresh.clear()
    with pytest.raises(Exception, match="reconnect"):
        oauth.refresh_credentials(store, redis_client, acme_registry, "t", "i",
                                  stale=refreshed, settings=settings)
    store.close()

    secrets_seen = [*token_server.issued_access, *token_server.issued_refresh,
                    query["state"], fakes.CLIENT_SECRET]
    assert len(token_server.issued_access) == 2
    db_path = Path(sa.make_url(url).database)
    blobs = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert b"nexus_credentials" in blobs and b"62515" in blobs  # we read the real file
    logs = "\n".join(captured_logs) + caplog.text
    assert "needs_reauth" in logs  # the logs were really captured
    for secret in secrets_seen:
        assert secret.encode() not in blobs, secret
        assert secret not in logs, secret
