"""The exception hierarchy. Every error says which provider, tenant and installation it concerns
and, where there is one, what to do next — the message is the user interface."""

from __future__ import annotations


class NexusError(Exception):
    """Base class of every error the SDK raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        tenant_id: str | None = None,
        install_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.tenant_id = tenant_id
        self.install_id = install_id
        self.hint = hint
        super().__init__(self._render())

    def one_line(self) -> str:
        """The message, where it happened and what to do, on one line (the CLI's error)."""
        where = self._where()
        text = self.message + (f" [{', '.join(where)}]" if where else "")
        return text + (f"; {self.hint}" if self.hint else "")

    def _where(self) -> list[str]:
        return [
            f"{k}={v}"
            for k, v in (
                ("provider", self.provider),
                ("tenant", self.tenant_id),
                ("install", self.install_id),
            )
            if v
        ]

    def _render(self) -> str:
        where = self._where()
        text = self.message
        if where:
            text += f" [{', '.join(where)}]"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(NexusError):
    """A setting is missing or malformed. Raised at startup, naming the variable."""


class PluginError(NexusError):
    """A plugin could not be loaded or a provider is unknown."""


class NotFound(NexusError):
    """An installation, provider or job that was asked for does not exist (for this tenant)."""


class AuthError(NexusError):
    """Authentication with the provider failed.

    ``needs_reauth`` is True when only the tenant can fix it (revoked grant, bad refresh token):
    the installation is marked ``needs_reauth`` and the job is not retried.
    """

    def __init__(self, message: str, *, needs_reauth: bool = False, **kw: object) -> None:
        self.needs_reauth = needs_reauth
        super().__init__(message, **kw)  # type: ignore[arg-type]


class ProviderError(NexusError):
    """The provider answered with an error or could not be reached.

    ``retryable`` tells the job layer whether trying again later may help.
    """

    def __init__(
        self, message: str, *, retryable: bool = False, status: int | None = None, **kw: object
    ) -> None:
        self.retryable = retryable
        self.status = status
        super().__init__(message, **kw)  # type: ignore[arg-type]


class RateLimited(ProviderError):
    """The shared rate limit (or the provider's 429) asks us to wait ``retry_after`` seconds.

    Jobs reschedule themselves instead of sleeping a worker; this does not consume a retry.
    """

    def __init__(self, message: str, *, retry_after: float, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, retryable=True, **kw)  # type: ignore[arg-type]


class ProviderUnavailable(ProviderError):
    """The circuit breaker for this installation is open; try again after ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, retryable=True, **kw)  # type: ignore[arg-type]


class WebhookRejected(NexusError):
    """A webhook delivery must not become work; ``status`` is the HTTP answer to give."""

    def __init__(self, message: str, *, status: int = 401, **kw: object) -> None:
        self.status = status
        super().__init__(message, **kw)  # type: ignore[arg-type]


class SinkError(NexusError):
    """A sink refused a page or a batch of events: it is retried (the cursor does not move).
    ``sink`` names the sink(s)."""

    def __init__(self, message: str, *, sink: str | None = None, **kw: object) -> None:
        self.sink = sink
        super().__init__(message, **kw)  # type: ignore[arg-type]


class StoreError(NexusError):
    """The store could not be reached or refused a write; nothing was half-written."""


def describe_error(exc: BaseException) -> str | None:
    """One line for an *expected* error (bad setting, unreachable Redis or database, unknown
    provider/tenant/installation): what went wrong and what to do. None for anything else,
    which is a bug and keeps its traceback."""
    if isinstance(exc, NexusError):
        return exc.one_line()
    module = type(exc).__module__ or ""
    if module.startswith("redis"):
        import redis

        from nexus_core.config import get_settings

        check = "REDIS_URL and that redis-server is running"
        try:
            settings = get_settings()
            where = _safe_url(settings.redis_url)
            if settings.redis_sentinels:
                where = settings.redis_location
                check = ("REDIS_SENTINELS / REDIS_SENTINEL_MASTER and that the sentinels and a "
                         "master they agree on are running")
        except NexusError:
            where = "REDIS_URL"
        denied = redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError
        if isinstance(exc, denied):
            return (f"Redis at {where} refused our credentials ({exc}); check the password in "
                    "REDIS_URL / REDIS_PASSWORD")
        if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return f"Redis at {where} is unreachable ({exc}); check {check}"
        if isinstance(exc, redis.exceptions.ResponseError):
            return f"Redis at {where} refused a command ({exc}); is it Redis >= 5?"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    return None


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return parts._replace(netloc=user + netloc).geturl()
    return url
