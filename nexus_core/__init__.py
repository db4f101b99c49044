"""Nexus Integration SDK: reliable third-party API connections as pluggy plugins.

Only the public API lives here. Importing ``nexus_core`` stays cheap: no requests, rq or
SQLAlchemy until something that needs them is used (``IntegrationService`` is loaded lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nexus_core.__about__ import __version__
from nexus_core.connector import BaseConnector
from nexus_core.errors import (
    AuthError,
    ConfigError,
    NexusError,
    NotFound,
    PluginError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    StoreError,
    WebhookRejected,
)
from nexus_core.hookspecs import CORE_API_VERSION, hookimpl, hookspec
from nexus_core.models import (
    BodyErrors,
    ConnectorContext,
    Credentials,
    EnvVar,
    Health,
    HmacSpec,
    Installation,
    IntegrationMetrics,
    OAuthConfig,
    Provider,
    Quota,
    RateLimits,
    RateLimitWait,
    Record,
    RetryConfig,
    Stream,
    StreamPattern,
    SyncPage,
    Timeouts,
    UrlVerification,
    WebhookConfig,
    WebhookEvent,
    WebhookRequest,
    WebhookResult,
)

if TYPE_CHECKING:
    from nexus_core.config import provider_setting
    from nexus_core.plugins import load_plugins, registered
    from nexus_core.service import IntegrationService
    from nexus_core.store import Store

__all__ = [
    "CORE_API_VERSION",
    "AuthError",
    "BaseConnector",
    "BodyErrors",
    "ConfigError",
    "ConnectorContext",
    "Credentials",
    "EnvVar",
    "Health",
    "HmacSpec",
    "Installation",
    "IntegrationMetrics",
    "IntegrationService",
    "NexusError",
    "NotFound",
    "OAuthConfig",
    "PluginError",
    "Provider",
    "ProviderError",
    "ProviderUnavailable",
    "Quota",
    "RateLimited",
    "RateLimits",
    "RateLimitWait",
    "Record",
    "RetryConfig",
    "Store",
    "StoreError",
    "Stream",
    "StreamPattern",
    "SyncPage",
    "Timeouts",
    "UrlVerification",
    "WebhookConfig",
    "WebhookEvent",
    "WebhookRejected",
    "WebhookRequest",
    "WebhookResult",
    "__version__",
    "hookimpl",
    "hookspec",
    "load_plugins",
    "provider_setting",
    "registered",
]

_LAZY = {
    "IntegrationService": "nexus_core.service",
    "load_plugins": "nexus_core.plugins",
    "provider_setting": "nexus_core.config",
    "registered": "nexus_core.plugins",
    "Store": "nexus_core.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nexus_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
