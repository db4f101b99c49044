"""Load-time validation: a plugin whose metadata or hook names cannot work is skipped with a
reason that says what to fix (did-you-mean for typos), shown by ``nexus plugins list``."""

from __future__ import annotations

import json
import types

import pytest
from click.testing import CliRunner

from nexus_core import (
    BaseConnector,
    HmacSpec,
    OAuthConfig,
    Provider,
    Stream,
    SyncPage,
    WebhookConfig,
    hookimpl,
)
from nexus_core.plugins import PluginRegistry

OAUTH = OAuthConfig(authorize_url="https://x.test/authorize", token_url="https://x.test/token")


def connector(provider=None, **methods):
    body = {"provider": provider or Provider(id="acme", name="Acme", version="1",
                                              auth_type="none", streams=("items",)),
            "backfill": lambda self, ctx, stream, cursor: SyncPage(done=True), **methods}
    return type("AcmeConnector", (BaseConnector,), body)


def reason_of(plugin) -> str | None:
    info = PluginRegistry().register(plugin, "acme")
    return info.reason if info.status == "skipped" else None


def test_a_valid_connector_loads_and_helpers_with_unrelated_names_are_fine():
    assert reason_of(connector(fetch_page=lambda self: 1, to_record=lambda self: 2,
                               backfill_all=lambda self: 3, refresh_token=lambda self: 4,
                               fetch_delta=lambda self: 5, health=lambda self: 6)) is None


@pytest.mark.parametrize(("method", "hook"), [
    ("healthcheck", "health_check"), ("authorise", "authorize"), ("handle_webhooks", "handle_webhook"),
    ("verify_webhooks", "verify_webhook"), ("Delta", "delta"), ("is_token_expire", "is_token_expired"),
    ("process_record", "process_records"), ("shouldretry", "should_retry"),
])
def test_a_misspelt_class_style_method_is_skipped_with_did_you_mean(method, hook):
    reason = reason_of(connector(**{method: lambda self, ctx: None}))
    assert reason == f"method {method}() is not a hook (did you mean {hook}?)"


def test_a_misspelt_module_style_hook_is_skipped_with_did_you_mean():
    mod = types.ModuleType("plugin_acme")
    mod.nexus_provider = hookimpl(lambda: Provider(id="acme", name="A", version="1",
                                                   auth_type="none", streams=("s",)))
    mod.backfill = hookimpl(lambda ctx, stream, cursor: SyncPage(done=True))

    def healthcheck(ctx):
        return None

    mod.healthcheck = hookimpl(healthcheck)
    reason = reason_of(mod)
    assert reason.startswith("implements unknown hook(s) healthcheck (did you mean health_check?)")


@pytest.mark.parametrize(("provider", "expected"), [
    (Provider(id="acme", name="A", version="1", streams=("s",)),
     "auth_type is 'oauth2' (the default) but no oauth=OAuthConfig("),
    (Provider(id="acme", name="A", version="1", auth_type="api_key"),
     "declares no streams; set Provider.streams"),
    (Provider(id="acme", name="A", version="1", auth_type="none", streams=("s",),
              webhook=WebhookConfig(scheme="custom", secret_envs=("S",))),
     "webhook scheme 'custom' needs a verify_webhook hook"),
    (Provider(id="acme", name="A", version="1", auth_type="none", streams=("s",),
              webhook=WebhookConfig(scheme="hmac", secret_envs=("S",))),
     "webhook scheme 'hmac' needs hmac=HmacSpec(header=...)"),
    (Provider(id="acme", name="A", version="1", auth_type="none", streams=("s",),
              webhook=WebhookConfig(scheme="hubspot-v4", secret_envs=("S",))),
     "unknown webhook scheme 'hubspot-v4' (did you mean hubspot-v3?); known schemes: custom, "
     "hmac, hubspot-v1"),
])
def test_metadata_that_cannot_work_is_skipped_with_the_fix(provider, expected):
    reason = reason_of(connector(provider))
    assert reason.startswith("provider 'acme': ")
    assert expected in reason


def test_every_problem_is_named_at_once():
    reason = reason_of(connector(Provider(id="acme", name="A", version="1")))
    assert "auth_type is 'oauth2'" in reason and "declares no streams" in reason


def test_what_the_checks_ask_for_loads():
    good = Provider(id="acme", name="A", version="1", oauth=OAUTH,
                    streams=(Stream("items", cursor_field="updated_at"),),
                    webhook=WebhookConfig(scheme="hmac", secret_envs=("S",),
                                          hmac=HmacSpec(header="X-Sig")))
    assert reason_of(connector(good)) is None
    custom = Provider(id="acme", name="A", version="1", auth_type="none", streams=("s",),
                      webhook=WebhookConfig(scheme="custom", secret_envs=("S",)))
    assert reason_of(connector(custom, verify_webhook=lambda self, provider, request, secrets:
                               True)) is None


def test_nexus_plugins_list_shows_the_reason(nexus_registry):
    from nexus_core.cli import cli

    nexus_registry.register(connector(healthcheck=lambda self, ctx: None), "typo")
    nexus_registry.register(connector(Provider(id="nostreams", name="N", version="1",
                                               auth_type="none")), "nostreams")
    result = CliRunner().invoke(cli, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    by_name = {p["name"]: p for p in json.loads(result.stdout)}
    assert by_name["typo"]["status"] == "skipped"
    assert by_name["typo"]["reason"] == "method healthcheck() is not a hook (did you mean " \
                                        "health_check?)"
    assert by_name["nostreams"]["status"] == "skipped"
    assert "declares no streams" in by_name["nostreams"]["reason"]
    table = CliRunner().invoke(cli, ["plugins", "list"])
    assert "did you mean health_check?" in table.output
