"""The plugin manager: discovery through the ``nexus`` entry-point group, isolation of broken
plugins, and dispatch of operation hooks to the one plugin that provides a provider.

Loading happens once, lazily (``load_plugins()``), never at import time: ``nexus --help`` stays
fast however many plugins are installed.
"""

from __future__ import annotations

import difflib
import inspect
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import attrs
import pluggy
from loguru import logger

from nexus_core import hookspecs
from nexus_core.connector import BaseConnector
from nexus_core.errors import PluginError
from nexus_core.models import Provider

ENTRY_POINT_GROUP = "nexus"
HOOK_NAMES: frozenset[str] = frozenset(
    name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(_, hookspecs.PROJECT + "_spec")
)


@attrs.frozen
class PluginInfo:
    """What ``nexus plugins list`` shows for one plugin, loaded or not."""

    name: str
    status: Literal["ok", "skipped"]
    distribution: str | None = None
    version: str | None = None
    hooks: tuple[str, ...] = ()
    provider: str | None = None
    reason: str | None = None


class NexusPluginManager(pluggy.PluginManager):
    """Also accepts :class:`BaseConnector` methods named after hooks as implementations."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if (
            opts is None
            and isinstance(plugin, BaseConnector)
            and name in HOOK_NAMES
            and callable(getattr(plugin, name, None))
        ):
            return {}
        return opts


def did_you_mean(name: str, candidates: Iterable[str], cutoff: float = 0.8) -> str:
    """`` (did you mean X?)`` for the closest candidate, else ""."""
    close = difflib.get_close_matches(name.lower(), sorted(candidates), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


def _looks_like_a_typo_of_a_hook(name: str) -> str:
    """did_you_mean for a method name, strict: a helper named after a hook plus a word
    (``backfill_page``, ``fetch_delta``) is a helper, not a typo."""
    lower = name.lower()
    hooks = [h for h in HOOK_NAMES
             if not (lower.startswith(h + "_") or lower.endswith("_" + h))]
    return did_you_mean(name, hooks, cutoff=0.85)


def _misspelt_methods(plugin: Any) -> list[str]:
    """Public methods of a :class:`BaseConnector` subclass whose names are close to a hook
    name but are not one: in class style any method named after a hook is a hook, so a typo
    (``healthcheck``) would otherwise be a method nobody calls."""
    problems = []
    for cls in type(plugin).__mro__:
        if cls in (BaseConnector, object):
            continue
        for name, value in vars(cls).items():
            if name.startswith("_") or name in HOOK_NAMES or not callable(value):
                continue
            hint = _looks_like_a_typo_of_a_hook(name)
            if hint:
                problems.append(f"method {name}() is not a hook{hint}")
    return sorted(set(problems))


def provider_problems(provider: Provider, hooks: Iterable[str]) -> list[str]:
    """What keeps a provider's metadata from working, each a sentence naming the fix."""
    from nexus_core.webhook_schemes import SCHEMES

    hooks = set(hooks)
    problems = []
    if provider.auth_type == "oauth2" and provider.oauth is None:
        problems.append(
            "auth_type is 'oauth2' (the default) but no oauth=OAuthConfig(authorize_url=..., "
            "token_url=...) is declared; declare it, or set auth_type to 'api_key', 'basic' "
            "or 'none'"
        )
    if not provider.streams:
        problems.append("declares no streams; set Provider.streams, e.g. "
                        "streams=(Stream(\"items\", cursor_field=\"updated_at\"),)")
    webhook = provider.webhook
    if webhook is not None:
        known = {*SCHEMES, "hmac", "custom"}
        if webhook.scheme not in known:
            problems.append(f"unknown webhook scheme {webhook.scheme!r}"
                            f"{did_you_mean(webhook.scheme, known)}; known schemes: "
                            f"{', '.join(sorted(known))}")
        elif webhook.scheme == "custom" and "verify_webhook" not in hooks:
            problems.append("webhook scheme 'custom' needs a verify_webhook hook (without it "
                            "every delivery would be rejected); implement it, or declare a "
                            "built-in scheme such as 'hmac'")
        elif webhook.scheme == "hmac" and webhook.hmac is None:
            problems.append("webhook scheme 'hmac' needs hmac=HmacSpec(header=...) in "
                            "WebhookConfig")
        if webhook.body_format == "custom" and "parse_webhook_body" not in hooks:
            problems.append("webhook body_format 'custom' needs a parse_webhook_body hook "
                            "(without it no delivery could be routed)")
        for scheme in webhook.fallback_schemes:
            if scheme not in known:
                problems.append(f"unknown fallback webhook scheme {scheme!r}"
                                f"{did_you_mean(scheme, known)}; known schemes: "
                                f"{', '.join(sorted(known))}")
            elif scheme == webhook.scheme or webhook.fallback_schemes.count(scheme) > 1:
                problems.append(f"webhook scheme {scheme!r} is listed twice (scheme and "
                                "fallback_schemes)")
            elif scheme == "custom" and "verify_webhook" not in hooks:
                problems.append("fallback webhook scheme 'custom' needs a verify_webhook hook")
            elif scheme == "hmac" and webhook.hmac is None:
                problems.append("fallback webhook scheme 'hmac' needs hmac=HmacSpec(...)")
    return problems


def _api_version_problem(obj: Any) -> str | None:
    declared = getattr(obj, "nexus_api_version", hookspecs.CORE_API_VERSION)
    try:
        major = int(str(declared).split(".")[0])
    except ValueError:
        return f"nexus_api_version {declared!r} is not a version number"
    if major != hookspecs.CORE_API_VERSION:
        return (
            f"built for core API version {declared}, this nexus-core provides "
            f"{hookspecs.CORE_API_VERSION}; upgrade the plugin or nexus-core"
        )
    return None


class PluginRegistry:
    """One plugin manager plus what the core knows about each plugin and provider."""

    def __init__(self) -> None:
        self.pm = NexusPluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._providers: dict[str, Provider] = {}
        self._provider_plugin: dict[str, Any] = {}
        self._callers: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()

    # -- registration ------------------------------------------------------------------------

    def register(
        self,
        plugin: Any,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Validate and register one plugin; on any problem it is recorded as skipped."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if inspect.isclass(plugin) and issubclass(plugin, BaseConnector):
            try:
                plugin = plugin()
            except Exception as exc:
                return self.record_failure(
                    name, f"{plugin.__name__}() failed: {type(exc).__name__}: {exc}",
                    distribution, version,
                )
        with self._lock:
            info = self._register(plugin, name, distribution, version)
            self._infos[name] = info
            self._callers.clear()
        if info.status == "skipped":
            logger.error("plugin {} skipped: {}", name, info.reason)
        return info

    def _register(
        self, plugin: Any, name: str, distribution: str | None, version: str | None
    ) -> PluginInfo:
        def skipped(reason: str, hooks: tuple[str, ...] = ()) -> PluginInfo:
            return PluginInfo(name, "skipped", distribution, version, hooks, None, reason)

        problem = _api_version_problem(plugin)
        if problem:
            return skipped(problem)
        if name in self._infos and self._infos[name].status == "ok":
            return skipped(f"a plugin named {name!r} is already loaded")
        if isinstance(plugin, BaseConnector):
            misspelt = _misspelt_methods(plugin)
            if misspelt:
                return skipped("; ".join(misspelt))
        try:
            self.pm.register(plugin, name)
        except Exception as exc:  # pluggy's validation errors, bad signatures
            return skipped(f"invalid hook implementation: {exc}")
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
        unknown = [h for h in hooks if h not in HOOK_NAMES]
        if unknown:
            self.pm.unregister(plugin)
            named = ", ".join(h + did_you_mean(h, HOOK_NAMES) for h in unknown)
            return skipped(
                f"implements unknown hook(s) {named}; known hooks: "
                f"{', '.join(sorted(HOOK_NAMES))}",
                hooks,
            )
        provider_id = None
        if "nexus_provider" in hooks:
            try:
                provider = self._call_nexus_provider(plugin)
                missing = [h for h in hookspecs.REQUIRED_PROVIDER_HOOKS if h not in hooks]
                if missing:
                    raise PluginError(
                        f"provider plugin lacks required hook(s) {', '.join(missing)}"
                    )
                problems = provider_problems(provider, hooks)
                if problems:
                    raise PluginError(f"provider {provider.id!r}: " + "; ".join(problems))
                owner = self._provider_plugin.get(provider.id)
                if owner is not None:
                    raise PluginError(
                        f"provider id {provider.id!r} is already provided by plugin "
                        f"{self.pm.get_name(owner)!r}"
                    )
            except Exception as exc:
                self.pm.unregister(plugin)
                reason = (
                    exc.message
                    if isinstance(exc, PluginError)
                    else f"nexus_provider() failed: {type(exc).__name__}: {exc}"
                )
                return skipped(reason, hooks)
            provider_id = provider.id
            self._providers[provider.id] = provider
            self._provider_plugin[provider.id] = plugin
        return PluginInfo(name, "ok", distribution, version, hooks, provider_id, None)

    def _call_nexus_provider(self, plugin: Any) -> Provider:
        impls = [i for i in self.pm.hook.nexus_provider.get_hookimpls() if i.plugin is plugin]
        provider = impls[0].function()
        if not isinstance(provider, Provider):
            raise PluginError(
                f"nexus_provider() must return nexus_core.Provider, got {type(provider).__name__}"
            )
        return provider

    def record_failure(
        self, name: str, reason: str, distribution: str | None = None, version: str | None = None
    ) -> PluginInfo:
        info = PluginInfo(name, "skipped", distribution, version, (), None, reason)
        with self._lock:
            self._infos[name] = info
        logger.error("plugin {} skipped: {}", name, reason)
        return info

    def unregister(self, name: str) -> None:
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin, name)
                for pid, owner in list(self._provider_plugin.items()):
                    if owner is plugin:
                        del self._provider_plugin[pid]
                        del self._providers[pid]
            self._infos.pop(name, None)
            self._callers.clear()

    # -- queries -----------------------------------------------------------------------------

    @property
    def infos(self) -> list[PluginInfo]:
        return sorted(self._infos.values(), key=lambda i: i.name)

    @property
    def providers(self) -> dict[str, Provider]:
        return dict(sorted(self._providers.items()))

    @property
    def skipped(self) -> list[PluginInfo]:
        """Plugins that failed to load, with their reasons."""
        return [i for i in self.infos if i.status == "skipped"]

    def provider(self, provider_id: str) -> Provider:
        try:
            return self._providers[provider_id]
        except KeyError:
            pass
        known = ", ".join(sorted(self._providers)) or "none loaded"
        skipped = self.skipped
        own = [i for i in skipped if provider_id in (i.name, i.provider)
               or i.distribution == f"nexus-{provider_id}"]
        if own:
            raise PluginError(
                f"provider {provider_id!r} is installed but its plugin failed to load: "
                f"{own[0].reason}",
                hint="fix or upgrade the plugin; `nexus plugins list` shows every plugin",
            )
        hint = f"install it with `pip install nexus-{provider_id}`"
        if skipped:
            hint = (f"{len(skipped)} plugin(s) failed to load "
                    f"({', '.join(i.name for i in skipped)}): see `nexus plugins list`; "
                    f"or {hint}")
        raise PluginError(f"unknown provider {provider_id!r}; known providers: {known}",
                          hint=hint)

    def plugin_info_for(self, provider_id: str) -> PluginInfo | None:
        plugin = self._provider_plugin.get(provider_id)
        name = self.pm.get_name(plugin) if plugin is not None else None
        return self._infos.get(name) if name else None

    def hook(self, hook_name: str, provider_id: str) -> Any:
        """The caller of an operation hook that reaches only ``provider_id``'s plugin (plus
        cross-cutting plugins such as wrappers), cached per provider."""
        key = (hook_name, provider_id)
        caller = self._callers.get(key)
        if caller is None:
            self.provider(provider_id)  # clear error for an unknown provider
            with self._lock:
                others = [p for pid, p in self._provider_plugin.items() if pid != provider_id]
                caller = self.pm.subset_hook_caller(hook_name, others)
                self._callers[key] = caller
        return caller

    def implements(self, hook_name: str, provider_id: str) -> bool:
        plugin = self._provider_plugin.get(provider_id)
        caller = getattr(self.pm.hook, hook_name)
        return any(i.plugin is plugin for i in caller.get_hookimpls())

    # -- discovery ---------------------------------------------------------------------------

    def load_paths(
        self, paths: Iterable[str], allow: Iterable[str] | None = None, deny: Iterable[str] = ()
    ) -> None:
        """In-product plugins (NEXUS_PLUGINS): ``package.module`` (the module's hookimpls) or
        ``package.module:object`` (an object, or a ``BaseConnector`` class), imported from the
        product's own code without packaging — each in isolation like an entry point, named by
        its path for ``nexus plugins list`` and the allow/deny lists. The working directory is
        importable, as with RQ's ``--path .``."""
        import importlib
        import os
        import sys

        paths = [p for p in paths if p]
        if paths and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        for path in paths:
            if not _allowed({path}, allow, deny) or path in self._infos:
                continue
            module_name, _, attr = path.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in filter(None, attr.split(".")):
                    obj = getattr(obj, part)
            except Exception as exc:
                self.record_failure(path, f"NEXUS_PLUGINS: cannot import {path}: "
                                    f"{type(exc).__name__}: {exc}", "NEXUS_PLUGINS")
                continue
            self.register(obj, path, distribution="NEXUS_PLUGINS")
        self.pm.check_pending()

    def load_entry_points(
        self, allow: Iterable[str] | None = None, deny: Iterable[str] = ()
    ) -> None:
        """Load every ``nexus`` entry point, each in isolation.

        We iterate entry points ourselves instead of ``pm.load_setuptools_entrypoints``: that one
        aborts on the first plugin that raises on import, and we must skip it and go on.
        """
        from importlib.metadata import entry_points

        # Sorted, so which of two plugins claiming one provider id wins does not depend on the
        # order of sys.path entries.
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            dist_version = dist.version if dist is not None else None
            names = {ep.name, dist_name}
            if not _allowed(names, allow, deny):
                continue
            if ep.name in self._infos:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                self.record_failure(
                    ep.name, f"import failed: {type(exc).__name__}: {exc}", dist_name, dist_version
                )
                continue
            self.register(obj, ep.name, distribution=dist_name, version=dist_version)
        self.pm.check_pending()


def _allowed(names: set[str | None], allow: Iterable[str] | None, deny: Iterable[str]) -> bool:
    """NEXUS_LOAD_PLUGINS / NEXUS_DISABLE_PLUGINS: a plugin may load when none of its
    ``names`` (entry-point and distribution name) is denied and, with an allow-list, one is
    allowed."""
    if names & set(deny):
        return False
    return allow is None or bool(names & set(allow))


_registry: PluginRegistry | None = None
_load_lock = threading.Lock()


def load_plugins() -> PluginRegistry:
    """The process-wide registry, loading installed plugins on first use (once)."""
    global _registry
    if _registry is None:
        with _load_lock:
            if _registry is None:
                from nexus_core.config import get_settings

                settings = get_settings()
                registry = PluginRegistry()
                registry.load_entry_points(settings.load_plugins, settings.disable_plugins)
                registry.load_paths(settings.plugins, settings.load_plugins,
                                    settings.disable_plugins)
                _register_builtin_sink(registry, settings)
                _registry = registry
    return _registry


def _register_builtin_sink(registry: PluginRegistry, settings: Any) -> None:
    """Register the sinks NEXUS_SINK selects, as one ordinary plugin (``sink-jsonl``,
    ``sink-sql+http``); the allow/deny lists apply to each ``sink-<kind>``."""
    from nexus_core.sinks import builtin_sinks

    sinks = builtin_sinks(settings, lambda name: _allowed(
        {name}, settings.load_plugins, settings.disable_plugins))
    if sinks is not None:
        registry.register(sinks, sinks.name, distribution="nexus-core")


def set_registry(registry: PluginRegistry | None) -> PluginRegistry | None:
    """Swap the process-wide registry (tests); returns the previous one."""
    global _registry
    previous, _registry = _registry, registry
    return previous


@contextmanager
def registered(
    plugin: Any, name: str | None = None, registry: PluginRegistry | None = None
) -> Iterator[PluginInfo]:
    """Register a plugin for the duration of a ``with`` block (tests, scripts).

    Raises :class:`PluginError` if the plugin would be skipped, so a broken test plugin fails
    the test instead of silently doing nothing.
    """
    registry = registry or load_plugins()
    info = registry.register(plugin, name)
    if info.status != "ok":
        registry.unregister(info.name)
        raise PluginError(f"plugin {info.name!r} was not registered: {info.reason}")
    try:
        yield info
    finally:
        registry.unregister(info.name)
