"""A plugin's own settings: ``EnvVar`` declarations, the variables the core derives from the
metadata, ``provider_setting`` (environment over ``.env``, like the core) and ``nexus providers
show``, which says what is set and never prints a secret."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nexus_core import (
    BaseConnector,
    EnvVar,
    HmacSpec,
    OAuthConfig,
    Provider,
    SyncPage,
    WebhookConfig,
    provider_setting,
)
from nexus_core.config import reset_settings
from nexus_core.plugins import registered

CRM = Provider(
    id="my-crm", name="My CRM", version="1", base_url="https://api.crm.test",
    base_url_env="MY_CRM_BASE_URL", streams=("contacts",),
    env=(EnvVar("MY_CRM_REGION", "data center: us or eu", required=True),
         EnvVar("MY_CRM_API_TOKEN", "an admin token for the audit stream", secret=True),
         "MY_CRM_DEBUG"),
    oauth=OAuthConfig(authorize_url="https://crm.test/oauth/authorize",
                      token_url="https://api.crm.test/oauth/token"),
    webhook=WebhookConfig(scheme="hmac", hmac=HmacSpec(header="X-Sig"),
                          secret_envs=("MY_CRM_WEBHOOK_SECRET", "MY_CRM_CLIENT_SECRET")),
)


class CrmConnector(BaseConnector):
    provider = CRM

    def backfill(self, ctx, stream, cursor):
        return SyncPage(done=True)


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A clean working directory (for ``.env``) and environment; settings re-read."""
    monkeypatch.chdir(tmp_path)
    for name in [v.name for v in CRM.variables()]:
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield tmp_path
    reset_settings()


def test_variables_are_the_declared_ones_then_the_derived_ones():
    by_name = {v.name: v for v in CRM.variables()}
    assert list(by_name) == [
        "MY_CRM_REGION", "MY_CRM_API_TOKEN", "MY_CRM_DEBUG",
        "MY_CRM_CLIENT_ID", "MY_CRM_CLIENT_SECRET", "MY_CRM_REDIRECT_URI",
        "MY_CRM_AUTHORIZE_URL", "MY_CRM_TOKEN_URL", "MY_CRM_WEBHOOK_SECRET", "MY_CRM_BASE_URL",
    ]
    assert by_name["MY_CRM_CLIENT_ID"].required and not by_name["MY_CRM_CLIENT_ID"].secret
    assert by_name["MY_CRM_CLIENT_SECRET"].secret and by_name["MY_CRM_CLIENT_SECRET"].required
    assert by_name["MY_CRM_WEBHOOK_SECRET"].secret
    assert by_name["MY_CRM_DEBUG"] == EnvVar("MY_CRM_DEBUG")
    assert "https://api.crm.test" in by_name["MY_CRM_BASE_URL"].help
    assert "https://api.crm.test/oauth/token" in by_name["MY_CRM_TOKEN_URL"].help


def test_explicit_names_win_and_a_variable_listed_twice_stays_secret():
    provider = Provider(
        id="x", name="X", version="1", streams=("s",),
        env=(EnvVar("SHARED_SECRET", "declared without secret=True"),),
        oauth=OAuthConfig(authorize_url="https://a", token_url="https://t", pkce=True,
                          client_id_env="X_APP_ID", client_secret_env="SHARED_SECRET",
                          redirect_uri_env="X_CALLBACK"),
    )
    by_name = {v.name: v for v in provider.variables()}
    assert {"X_APP_ID", "SHARED_SECRET", "X_CALLBACK"} <= set(by_name)
    assert "X_CLIENT_ID" not in by_name
    assert by_name["SHARED_SECRET"].secret  # the core knows it is the client secret
    assert by_name["SHARED_SECRET"].help == "declared without secret=True"
    assert not by_name["SHARED_SECRET"].required  # a PKCE client may have no secret
    assert Provider(id="n", name="N", version="1", auth_type="none").variables() == ()


def test_env_var_names_are_checked():
    for bad in ("", "1ABC", "MY-VAR", "A B"):
        with pytest.raises(ValueError, match="environment variable name"):
            EnvVar(bad)


def test_provider_setting_reads_the_environment_over_dotenv_like_the_core(
    environment, monkeypatch
):
    (environment / ".env").write_text("MY_CRM_REGION=eu\nMY_CRM_DEBUG=\nMY_CRM_API_TOKEN=tok\n")
    assert provider_setting("MY_CRM_REGION") == "eu"
    assert provider_setting("MY_CRM_DEBUG", "off") == "off"  # empty means unset
    assert provider_setting("MY_CRM_NOPE") is None
    monkeypatch.setenv("MY_CRM_REGION", "us")
    reset_settings()
    assert provider_setting("MY_CRM_REGION") == "us"
    from nexus_core.config import get_settings

    assert get_settings().get("MY_CRM_REGION") == provider_setting("MY_CRM_REGION")


def test_providers_show_lists_every_variable_and_never_a_secret_value(
    environment, monkeypatch, nexus_registry
):
    from nexus_core.cli import cli

    (environment / ".env").write_text("MY_CRM_API_TOKEN=tok-from-dotenv-123\n")
    monkeypatch.setenv("MY_CRM_REGION", "eu-central")
    monkeypatch.setenv("MY_CRM_CLIENT_ID", "client-id-visible")
    monkeypatch.setenv("MY_CRM_CLIENT_SECRET", "client-secret-hidden-456")
    monkeypatch.setenv("MY_CRM_WEBHOOK_SECRET", "whsec-hidden-789")
    reset_settings()
    secrets = ("tok-from-dotenv-123", "client-secret-hidden-456", "whsec-hidden-789")
    with registered(CrmConnector, "my-crm", registry=nexus_registry):
        text = CliRunner().invoke(cli, ["providers", "show", "my-crm"])
        as_json = CliRunner().invoke(cli, ["providers", "show", "my-crm", "--json"])
    assert text.exit_code == 0 and as_json.exit_code == 0, text.output + as_json.output
    for output in (text.output, as_json.output):
        assert not any(secret in output for secret in secrets)
    lines = {line.split()[0]: line for line in text.output.splitlines()
             if line.startswith("  MY_CRM_")}
    assert len(lines) == len(CRM.variables())
    assert "set: eu-central" in lines["MY_CRM_REGION"] and "required" in lines["MY_CRM_REGION"]
    assert "set: client-id-visible" in lines["MY_CRM_CLIENT_ID"]
    assert "set: (secret)" in lines["MY_CRM_API_TOKEN"]  # from .env
    assert "set: (secret)" in lines["MY_CRM_CLIENT_SECRET"]
    assert "unset" in lines["MY_CRM_REDIRECT_URI"]
    variables = {v["name"]: v for v in json.loads(as_json.stdout)["variables"]}
    assert variables["MY_CRM_WEBHOOK_SECRET"] == {
        "name": "MY_CRM_WEBHOOK_SECRET", "secret": True, "required": False, "set": True,
        "value": None, "help": "webhook signing secret (comma-separated during rotation)"}
    assert variables["MY_CRM_CLIENT_ID"]["value"] == "client-id-visible"
    assert variables["MY_CRM_BASE_URL"]["set"] is False
