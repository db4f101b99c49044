"""The plugin machinery on fresh registries: validation, isolation, per-provider dispatch."""

import types

import pytest

from nexus_core import BaseConnector, Provider, SyncPage, hookimpl
from nexus_core.errors import PluginError
from nexus_core.plugins import PluginRegistry, registered


def provider_module(pid, **extra):
    mod = types.ModuleType(f"plugin_{pid}")

    @hookimpl
    def nexus_provider():
        return Provider(id=pid, name=pid.title(), version="1.0")

    @hookimpl
    def backfill(ctx, stream, cursor):
        return SyncPage(records=[], next_cursor=f"{pid}-next", done=True)

    mod.nexus_provider = nexus_provider
    mod.backfill = backfill
    for name, fn in extra.items():
        setattr(mod, name, fn)
    return mod


def test_two_providers_each_get_only_their_own_operation_calls():
    reg = PluginRegistry()
    assert reg.register(provider_module("alpha"), "alpha").status == "ok"
    assert reg.register(provider_module("beta"), "beta").status == "ok"
    page = reg.hook("backfill", "beta")(ctx=None, stream="s", cursor=None)
    assert page.next_cursor == "beta-next"
    page = reg.hook("backfill", "alpha")(ctx=None, stream="s", cursor=None)
    assert page.next_cursor == "alpha-next"


def test_dispatch_cache_follows_registration_changes():
    reg = PluginRegistry()
    reg.register(provider_module("alpha"), "alpha")
    assert reg.hook("backfill", "alpha")(ctx=None, stream="s", cursor=None).next_cursor == "alpha-next"
    reg.register(provider_module("beta"), "beta")  # registered after the alpha caller was cached
    assert reg.hook("backfill", "alpha")(ctx=None, stream="s", cursor=None).next_cursor == "alpha-next"
    reg.unregister("beta")
    with pytest.raises(PluginError, match="unknown provider 'beta'; known providers: alpha"):
        reg.hook("backfill", "beta")


def test_unknown_provider_error_lists_known_ids_and_how_to_install():
    reg = PluginRegistry()
    reg.register(provider_module("alpha"), "alpha")
    with pytest.raises(PluginError) as err:
        reg.provider("nope")
    assert "known providers: alpha" in str(err.value)
    assert "pip install nexus-nope" in str(err.value)


def test_a_provider_whose_plugin_failed_to_load_is_named_as_such(nexus_registry):
    """`providers list` said "No providers installed" and `sync` said "install it with pip" for
    a provider that IS installed but failed to load."""
    from click.testing import CliRunner

    from nexus_core.cli import cli

    nexus_registry.record_failure("hubspot", "import failed: ModuleNotFoundError: No module "
                                  "named 'hubspot_sdk'", "nexus-hubspot", "1.0")
    with pytest.raises(PluginError) as err:
        nexus_registry.provider("hubspot")
    assert "provider 'hubspot' is installed but its plugin failed to load: import failed" in \
        str(err.value)
    with pytest.raises(PluginError) as err:
        nexus_registry.provider("slack")
    assert "1 plugin(s) failed to load (hubspot): see `nexus plugins list`" in str(err.value)
    result = CliRunner().invoke(cli, ["providers", "list"])
    assert result.exit_code == 0
    assert "No providers loaded." in result.stdout and "No providers installed" not in \
        result.stdout
    assert "1 plugin(s) failed to load (hubspot); `nexus plugins list` says why" in result.stderr


def test_duplicate_provider_id_is_skipped_and_the_first_keeps_working():
    reg = PluginRegistry()
    reg.register(provider_module("alpha"), "first")
    info = reg.register(provider_module("alpha"), "second")
    assert info.status == "skipped"
    assert "already provided by plugin 'first'" in info.reason
    assert reg.hook("backfill", "alpha")(ctx=None, stream="s", cursor=None).done
    assert [i.name for i in reg.infos if i.status == "ok"] == ["first"]


def test_provider_without_required_hook_is_skipped_with_reason():
    mod = types.ModuleType("nobackfill")
    mod.nexus_provider = hookimpl(lambda: Provider(id="x", name="X", version="1"))
    info = PluginRegistry().register(mod, "nobackfill")
    assert info.status == "skipped" and "lacks required hook(s) backfill" in info.reason


def test_misspelt_hook_is_skipped_naming_it():
    mod = provider_module("alpha", backfil=hookimpl(lambda ctx: None))
    reg = PluginRegistry()
    info = reg.register(mod, "typo")
    assert info.status == "skipped"
    assert "unknown hook(s) backfil" in info.reason
    assert reg.providers == {}
    reg.pm.check_pending()  # nothing half-registered is left behind


def test_incompatible_api_version_is_skipped():
    mod = provider_module("alpha")
    mod.nexus_api_version = 2
    info = PluginRegistry().register(mod, "future")
    assert info.status == "skipped" and "core API version 2" in info.reason


def test_nexus_provider_returning_garbage_is_skipped():
    mod = provider_module("alpha")
    mod.nexus_provider = hookimpl(lambda: {"id": "alpha"})
    info = PluginRegistry().register(mod, "garbage")
    assert info.status == "skipped" and "must return nexus_core.Provider" in info.reason


def test_class_style_connector_methods_are_hooks_without_decorators():
    class Classy(BaseConnector):
        provider = Provider(id="classy", name="Classy", version="1")

        def backfill(self, ctx, stream, cursor):
            return SyncPage(next_cursor=f"classy:{stream}", done=True)

        def helper_not_a_hook(self):
            raise AssertionError("never registered")

    reg = PluginRegistry()
    info = reg.register(Classy, "classy")
    assert info.status == "ok"
    assert info.hooks == ("backfill", "nexus_provider")
    assert reg.hook("backfill", "classy")(ctx=None, stream="s", cursor=None).next_cursor == "classy:s"


def test_class_without_provider_attribute_is_skipped():
    class Nameless(BaseConnector):
        def backfill(self, ctx, stream, cursor):
            return SyncPage(done=True)

    info = PluginRegistry().register(Nameless, "nameless")
    assert info.status == "skipped" and "provider = Provider" in info.reason


def test_registered_context_manager_unregisters_and_refuses_broken_plugins():
    reg = PluginRegistry()
    with registered(provider_module("alpha"), registry=reg) as info:
        assert info.provider == "alpha"
        assert "alpha" in reg.providers
    assert reg.providers == {} and reg.infos == []
    broken = types.ModuleType("broken")
    broken.nexus_provider = hookimpl(lambda: Provider(id="b", name="B", version="1"))
    with pytest.raises(PluginError, match="lacks required hook"):
        with registered(broken, registry=reg):
            pass
    assert reg.infos == []


def test_wrapper_plugin_sees_every_provider_operation():
    calls = []

    class Audit:
        @hookimpl(wrapper=True)
        def backfill(self, ctx, stream):
            result = yield
            calls.append((stream, result.next_cursor))
            return result

    reg = PluginRegistry()
    reg.register(provider_module("alpha"), "alpha")
    reg.register(provider_module("beta"), "beta")
    reg.register(Audit(), "audit")
    reg.hook("backfill", "alpha")(ctx=None, stream="s1", cursor=None)
    reg.hook("backfill", "beta")(ctx=None, stream="s2", cursor=None)
    assert calls == [("s1", "alpha-next"), ("s2", "beta-next")]
