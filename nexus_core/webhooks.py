"""Verified webhook ingress: replay protection, routing and enqueueing.

:class:`WebhookIngress` is shared by the web app's ``/webhooks/...`` routes and
``IntegrationService.process_webhook``. The order of work is fixed and is the security argument:
body cap (413) → signature and timestamp (401) → parse (JSON, or the provider's
``parse_webhook_body`` hook for another ``WebhookConfig.body_format``) → route to installations
(by the provider's account id, or by the opaque webhook key of a per-installation URL — whose
events must name that installation's account when ``WebhookConfig.account_check`` is set, else
403; installations that are disabled or still waiting for their OAuth authorization are
answered 200 and not enqueued) → dedupe by delivery id in Redis (a duplicate is a 200 with
nothing enqueued) → enqueue one job per delivery and installation
(:mod:`nexus_core.sync.webhook`: the dedupe mark and the job in one atomic round trip) → 200.
Redis unreachable → 503: a delivery is never acknowledged unless its job is in the queue.

The signature schemes live in :mod:`nexus_core.webhook_schemes` and are re-exported here
(``from nexus_core.webhooks import verify_hubspot_v3`` keeps working).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import orjson
from loguru import logger
from prometheus_client import Counter, Histogram

from nexus_core import queues
from nexus_core.errors import PluginError, WebhookRejected
from nexus_core.models import Installation, Provider, WebhookRequest
from nexus_core.webhook_schemes import (
    DEFAULT_TOLERANCE,
    SCHEMES,
    Check,
    Verifier,
    configured_secrets,
    hmac_message,
    hubspot_uri,
    parse_stripe_header,
    sign_hmac,
    sign_hubspot_v1,
    sign_hubspot_v2,
    sign_hubspot_v3,
    sign_slack,
    sign_standard_webhooks,
    sign_stripe,
    standard_webhooks_key,
    stripe_header,
    verify_hmac,
    verify_hubspot_v1,
    verify_hubspot_v2,
    verify_hubspot_v3,
    verify_request,
    verify_slack,
    verify_standard_webhooks,
    verify_stripe,
)

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.plugins import PluginRegistry
    from nexus_core.seams import RedisClient, SyncStore

__all__ = [
    "DEFAULT_DEDUPE_TTL", "DEFAULT_MAX_BODY", "DEFAULT_TOLERANCE", "SCHEMES",
    "Check", "IngressOptions", "IngressResult", "Target", "Verifier", "WebhookIngress",
    "configured_secrets", "delivery_id", "hmac_message", "hubspot_uri", "ingest_webhook",
    "parse_stripe_header", "public_request_url", "record_outcome", "record_rejection",
    "rejection_reason", "sign_hmac",
    "sign_hubspot_v1", "sign_hubspot_v2", "sign_hubspot_v3", "sign_slack",
    "sign_standard_webhooks", "sign_stripe", "standard_webhooks_key", "stripe_header",
    "verify_hmac", "verify_hubspot_v1", "verify_hubspot_v2", "verify_hubspot_v3",
    "verify_request", "verify_slack", "verify_standard_webhooks", "verify_stripe",
]

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_DEDUPE_TTL = 3 * 24 * 3600

# -- ingress -----------------------------------------------------------------------------------


@attrs.frozen
class IngressOptions:
    max_body: int = DEFAULT_MAX_BODY
    dedupe_ttl: float = DEFAULT_DEDUPE_TTL
    tolerance: float = DEFAULT_TOLERANCE
    #: NEXUS_PUBLIC_URL: the scheme+host(+prefix) providers call, when behind a proxy.
    public_url: str | None = None
    #: Seconds an installation lookup is reused (unknown accounts: at most 5 s); 0 = off.
    route_cache_ttl: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IngressOptions:
        public = settings.public_url
        return cls(
            max_body=settings.webhook_max_body,
            dedupe_ttl=settings.webhook_dedupe_ttl,
            tolerance=settings.webhook_tolerance,
            public_url=public.rstrip("/") if public else None,
            route_cache_ttl=settings.webhook_route_cache_ttl,
        )


@attrs.frozen
class Target:
    """One job to enqueue: a delivery for one installation."""

    tenant_id: str
    install_id: str
    delivery_id: str


@attrs.frozen
class IngressResult:
    """What the ingress did with an accepted delivery (the answer is always 200)."""

    provider: str
    #: Job ids enqueued now.
    jobs: tuple[str, ...] = ()
    #: Job ids of installations this delivery was already enqueued for (replays): not re-enqueued.
    duplicate_jobs: tuple[str, ...] = ()
    #: Events dropped because no installation has their account id.
    unknown_account_events: int = 0
    #: A URL handshake (``WebhookConfig.url_verification``): the challenge to answer with.
    challenge: str | None = None
    #: The key it is answered under.
    challenge_field: str = "challenge"
    #: Installations the delivery was for but not enqueued: disabled, or still waiting for
    #: their OAuth authorization.
    ignored_installations: int = 0

    @property
    def outcome(self) -> str:
        if self.challenge is not None:
            return "url_verification"
        if self.jobs:
            return "enqueued"
        if self.duplicate_jobs:
            return "duplicate"
        if self.ignored_installations:
            return "ignored_inactive"
        return "unrouted"


InstallationLookup = Callable[[str, str], "Installation | None"]

#: Installation statuses whose deliveries are answered 200 and not enqueued: nothing could
#: process them (a disabled installation is not synced; a pending one has no credentials).
#: ``needs_reauth`` deliveries are enqueued: they fail into the dead-letter queue and can be
#: requeued once the tenant has reconnected, so no event is lost.
INACTIVE_STATUSES = frozenset({"disabled", "pending_authorization"})
AccountLookup = Callable[[str, str], "list[Installation]"]


def _field(obj: Any, path: str) -> Any:
    if "." not in path:
        return obj.get(path) if isinstance(obj, dict) else None
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _fields(events: list[Any], path: str) -> list[Any]:
    """``_field`` over every event; a list comprehension for the common top-level name (a
    100-event HubSpot batch is read twice per delivery: account ids, then event ids)."""
    if "." in path:
        return [_field(e, path) for e in events]
    return [e.get(path) if isinstance(e, dict) else None for e in events]


def _by_account(events: list[Any], path: str) -> dict[str, list[Any]]:
    """Events grouped by the account id at ``path`` (``""``: none)."""
    by_account: dict[str, list[Any]] = {}
    accounts = ["" if a is None else a if type(a) is str else str(a)
                for a in _fields(events, path)]
    for event, account in zip(events, accounts, strict=True):
        group = by_account.get(account)
        if group is None:
            by_account[account] = [event]
        else:
            group.append(event)
    return by_account


def _digest(parts: Iterable[str]) -> str:
    # JSON keeps the list unambiguous (["a,b"] and ["a", "b"] differ).
    return hashlib.sha256(orjson.dumps(list(parts))).hexdigest()


def delivery_id(provider: Provider, request: WebhookRequest, events: list[Any]) -> str:
    """The replay-protection key of a delivery for one installation: ``i-`` + the header named
    by ``delivery_id_field``, else that field of the body object; ``h-`` + a digest of the field
    over this installation's events (HubSpot ``eventId``s: a retry re-sends the same ids with a
    new ``attemptNumber``); else ``b-`` + a digest of the raw body. The prefixes keep the three
    kinds apart: an id a provider chose can never equal a digest."""
    name = provider.webhook.delivery_id_field if provider.webhook else None
    if name:
        header = request.header(name)
        if header:
            return "i-" + header
        values = _fields(events, name)
        if values and all(v is not None for v in values):
            if len(values) == 1:
                return "i-" + str(values[0])
            return "h-" + _digest(sorted(map(str, values)))
    return "b-" + hashlib.sha256(request.body).hexdigest()


class WebhookIngress:
    """Verify, route, dedupe and enqueue webhook deliveries (shared by web app and service).

    ``find_by_webhook_key(provider, key)`` and ``find_by_account(provider, account_id)``
    resolve installations; they default to the store's indexed lookups of the same purpose
    (:meth:`~nexus_core.store.Store.find_installation_by_webhook_key`,
    :meth:`~nexus_core.store.Store.find_installations_by_account`).
    """

    def __init__(
        self,
        *,
        registry: PluginRegistry,
        redis: RedisClient,
        settings: Settings,
        store: SyncStore | None = None,
        store_factory: Callable[[], Any] | None = None,
        find_by_webhook_key: InstallationLookup | None = None,
        find_by_account: AccountLookup | None = None,
        options: IngressOptions | None = None,
    ) -> None:
        self.registry = registry
        self.redis = redis
        self.settings = settings
        self._store_obj = store
        self._store_factory = store_factory
        self.options = options or IngressOptions.from_settings(settings)
        self._find_by_webhook_key = find_by_webhook_key
        self._find_by_account = find_by_account
        self._queue: Any = None
        self._retry = queues.retry_policy(settings.max_retries, settings.backoff_delay_ms)
        self._routes: dict[tuple[str, ...], tuple[float, Any]] = {}

    # -- lookups (the one place routing touches the store) ----------------------------------

    @property
    def store(self) -> Any:
        """The store, opened on the first lookup that needs it (``store_factory``)."""
        if self._store_obj is None and self._store_factory is not None:
            self._store_obj = self._store_factory()
        return self._store_obj

    def _cached(self, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        """Installation lookups are reused for ``route_cache_ttl`` seconds (a store query per
        delivery would dominate the ingress); "no such account" only for up to 5 s, so a new
        installation starts receiving its webhooks promptly."""
        ttl = self.options.route_cache_ttl
        if ttl <= 0:
            return load()
        now = time.monotonic()
        hit = self._routes.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        if len(self._routes) >= 10_000:
            self._routes.clear()
        self._routes[key] = (now + (ttl if value else min(ttl, 5.0)), value)
        return value

    def find_by_webhook_key(self, provider: str, key: str) -> Installation | None:
        return self._cached(("key", provider, key),
                            lambda: self._load_by_webhook_key(provider, key))

    def find_by_account(self, provider: str, account_id: str) -> list[Installation]:
        return self._cached(("account", provider, account_id),
                            lambda: self._load_by_account(provider, account_id))

    def find_installation(self, tenant_id: str, install_id: str) -> Installation | None:
        """The installation a trusted caller named (``IntegrationService.process_webhook``);
        None when it does not exist. Without a store, no check is possible: taken as given."""
        if self.store is None:
            return None
        from nexus_core.errors import NotFound

        def load() -> Installation | None:
            try:
                return self.store.get_installation(tenant_id, install_id)
            except NotFound:
                return None

        return self._cached(("tenant", tenant_id, install_id), load)

    def _load_by_webhook_key(self, provider: str, key: str) -> Installation | None:
        if self._find_by_webhook_key is not None:
            return self._find_by_webhook_key(provider, key)
        return self.store.find_installation_by_webhook_key(provider, key)

    def _load_by_account(self, provider: str, account_id: str) -> list[Installation]:
        if self._find_by_account is not None:
            return list(self._find_by_account(provider, account_id))
        return list(self.store.find_installations_by_account(provider, account_id))

    # -- the pipeline --------------------------------------------------------------------------

    def provider(self, provider_id: str) -> Provider:
        """The provider's metadata, or 404 — cheap, so the web app calls it before the body."""
        try:
            provider = self.registry.provider(provider_id)
        except PluginError:
            raise WebhookRejected(f"unknown provider {provider_id!r}", status=404) from None
        if provider.webhook is None:
            raise WebhookRejected(f"provider {provider_id!r} does not accept webhooks", status=404)
        return provider

    def check_size(self, length: int | None) -> None:
        if length is not None and length > self.options.max_body:
            raise WebhookRejected(
                f"body larger than {self.options.max_body} bytes", status=413
            )

    def verify(self, provider: Provider, request: WebhookRequest) -> None:
        secrets = configured_secrets(provider, self.settings)
        if not secrets and provider.webhook and provider.webhook.scheme != "custom":
            envs = ", ".join(provider.webhook.secret_envs) or "(none declared)"
            logger.error("no webhook secret configured for {} (set one of {}); delivery refused "
                         "with 503 so the provider retries", provider.id, envs)
            raise WebhookRejected("webhook secret not configured", status=503)
        check = Check(url=request.url, now=time.time(), tolerance=self.options.tolerance)
        verify_request(provider, request, secrets, check, self.registry)

    def ingest(
        self,
        provider_id: str,
        request: WebhookRequest,
        *,
        webhook_key: str | None = None,
        tenant_id: str | None = None,
        install_id: str | None = None,
    ) -> IngressResult:
        """Run one delivery through the whole pipeline; raises :class:`WebhookRejected` with the
        HTTP status to answer (401, 404, 413, 400, 503) when nothing was enqueued.

        App-level when neither ``webhook_key`` nor ``tenant_id``/``install_id`` is given (routed
        by the provider's account id); per-installation with the ``webhook_key`` of the URL
        ``/webhooks/<provider>/<key>``; or for the installation a trusted caller names
        (``IntegrationService.process_webhook``).
        """
        import redis as redis_lib

        provider = self.provider(provider_id)
        webhook = provider.webhook
        assert webhook is not None  # self.provider() answers 404 for a provider without webhooks
        self.check_size(len(request.body))
        self.verify(provider, request)
        if webhook.body_format == "custom":
            events = self.read_body(provider, request)
        else:
            try:
                payload = orjson.loads(request.body)
            except (UnicodeDecodeError, ValueError):
                raise WebhookRejected("body is not JSON", status=400) from None
            handshake = webhook.url_verification
            if (
                handshake is not None
                and isinstance(payload, dict)
                and _field(payload, handshake.type_field) == handshake.type_value
            ):
                challenge = _field(payload, handshake.challenge_field)
                return IngressResult(provider.id, challenge="" if challenge is None
                                     else str(challenge)[:1000],
                                     challenge_field=handshake.challenge_field)
            events = payload if isinstance(payload, list) else [payload]
        try:
            targets, unknown, ignored = self._route(provider, request, events, webhook_key,
                                                    tenant_id, install_id)
            jobs, duplicates = self._enqueue(provider, request, targets)
        except redis_lib.RedisError as exc:
            logger.warning("webhook {} not enqueued, Redis unavailable: {}", provider.id, exc)
            raise WebhookRejected("queue unavailable, retry later", status=503) from exc
        return IngressResult(provider.id, tuple(jobs), tuple(duplicates), unknown,
                             ignored_installations=ignored)

    def read_body(self, provider: Provider, request: WebhookRequest) -> list[Any]:
        """The events of a body in the provider's own format (``parse_webhook_body`` hook):
        :class:`WebhookRejected` (400 unless the hook says otherwise) when it cannot be read."""
        if not self.registry.implements("parse_webhook_body", provider.id):
            logger.error("provider {} declares webhook body_format 'custom' but implements no "
                         "parse_webhook_body hook; every delivery is refused", provider.id)
            raise WebhookRejected("this provider's webhook bodies cannot be read", status=400)
        try:
            events = self.registry.hook("parse_webhook_body", provider.id)(
                provider=provider, request=request)
        except WebhookRejected:
            raise
        except Exception as exc:  # a plugin's parser failing on untrusted input: never a 500
            logger.opt(exception=exc).error("parse_webhook_body of {} failed: {}", provider.id,
                                            type(exc).__name__)
            raise WebhookRejected("body could not be read", status=400) from None
        if not isinstance(events, list):
            logger.error("parse_webhook_body of {} returned {}, not a list of events",
                         provider.id, type(events).__name__)
            raise WebhookRejected("body could not be read", status=400)
        return events

    def enqueue_verified(
        self, provider_id: str, request: WebhookRequest, tenant_id: str, install_id: str
    ) -> str:
        """Enqueue a delivery verified and routed by the caller (the seed's
        ``scheduleWebhookJob``) with the ingress's job id, dedupe and payload; returns the job
        id, the existing one for a replay."""
        provider = self.registry.provider(provider_id)
        if provider.webhook is not None and provider.webhook.body_format == "custom":
            try:
                events = self.read_body(provider, request)
            except WebhookRejected:
                events = []
        else:
            try:
                payload = orjson.loads(request.body)
            except (UnicodeDecodeError, ValueError):
                payload = None
            events = payload if isinstance(payload, list) else [] if payload is None \
                else [payload]
        target = Target(tenant_id, install_id, delivery_id(provider, request, events))
        jobs, duplicates = self._enqueue(provider, request, [target])
        return (jobs or duplicates)[0]

    def _route(
        self,
        provider: Provider,
        request: WebhookRequest,
        events: list[Any],
        webhook_key: str | None,
        tenant_id: str | None,
        install_id: str | None,
    ) -> tuple[list[Target], int, int]:
        """(targets, events of unknown accounts, installations ignored as inactive)."""
        if webhook_key is not None or (tenant_id is not None and install_id is not None):
            if webhook_key is not None:
                install = self._lookup(lambda: self.find_by_webhook_key(provider.id, webhook_key))
                if install is None:
                    raise WebhookRejected("unknown webhook URL", status=404)
            else:
                assert tenant_id is not None and install_id is not None
                install = self._lookup(lambda: self.find_installation(tenant_id, install_id))
                if install is None and self.store is not None:
                    raise WebhookRejected(
                        f"unknown installation {install_id!r} of tenant {tenant_id!r}",
                        status=404)
                if install is not None and install.provider != provider.id:
                    raise WebhookRejected(
                        f"installation {install_id!r} belongs to provider {install.provider!r}",
                        status=404)
            if install is not None:
                self._check_account(provider, install, events)
            if install is not None and install.status in INACTIVE_STATUSES:
                self._note_ignored(provider, install)
                return [], 0, 1
            tenant = install.tenant_id if install is not None else tenant_id
            inst_id = install.install_id if install is not None else install_id
            assert tenant is not None and inst_id is not None
            return [Target(tenant, inst_id, delivery_id(provider, request, events))], 0, 0
        webhook = provider.webhook
        field = webhook.account_id_field if webhook else None
        if webhook is None or not field:
            raise WebhookRejected(
                f"{provider.id} webhooks need the per-installation URL "
                f"/webhooks/{provider.id}/<webhook key> (`nexus installs show` prints it)",
                status=404,
            )
        fields = (field, *webhook.fallback_account_fields)
        pending = [(0, account, group) for account, group in _by_account(events, field).items()]
        targets: list[Target] = []
        unknown = ignored = 0
        while pending:
            level, account, account_events = pending.pop(0)
            installs = self._lookup(partial(self.find_by_account, provider.id, account)) \
                if account else []
            if not installs and level + 1 < len(fields):
                # No installation of this account: the events may belong to one of the
                # account named by the next field (an organization-wide installation).
                pending += [(level + 1, a, g) for a, g in
                            _by_account(account_events, fields[level + 1]).items()]
                continue
            if not installs:
                unknown += len(account_events)
                UNKNOWN_ACCOUNT_EVENTS.labels(provider.id).inc(len(account_events))
                logger.info("webhook {}: {} event(s) for unknown account {!r} dropped",
                            provider.id, len(account_events), account or None)
                continue
            delivery = delivery_id(provider, request, account_events)
            for inst in installs:
                if inst.status in INACTIVE_STATUSES:
                    ignored += 1
                    self._note_ignored(provider, inst)
                    continue
                targets.append(Target(inst.tenant_id, inst.install_id, delivery))
        return targets, unknown, ignored

    @staticmethod
    def _check_account(provider: Provider, install: Installation, events: list[Any]) -> None:
        """With ``WebhookConfig.account_check``: every event of a delivery to an
        installation's own URL names that installation's account, else 403."""
        webhook = provider.webhook
        if webhook is None or not webhook.account_check or not webhook.account_id_field:
            return
        named = {"" if a is None else str(a) for a in _fields(events, webhook.account_id_field)}
        if not events or named != {install.account_id or ""} or not install.account_id:
            ACCOUNT_MISMATCHES.labels(provider.id).inc()
            logger.bind(provider=provider.id, tenant_id=install.tenant_id,
                        install_id=install.install_id).warning(
                "webhook refused: it names account(s) {} at {}, this installation is connected "
                "to {}", sorted(named)[:5], webhook.account_id_field, install.account_id)
            raise WebhookRejected("delivery names another account than this installation's",
                                  status=403)

    @staticmethod
    def _note_ignored(provider: Provider, inst: Installation) -> None:
        IGNORED_INSTALLATIONS.labels(provider.id, inst.status).inc()
        logger.bind(provider=provider.id, tenant_id=inst.tenant_id,
                    install_id=inst.install_id).info(
            "webhook for an installation that is {}: answered, not enqueued", inst.status)

    @staticmethod
    def _lookup(call: Callable[[], Any]) -> Any:
        from nexus_core.errors import StoreError

        try:
            return call()
        except WebhookRejected:
            raise
        except StoreError as exc:
            raise WebhookRejected("store unavailable, retry later", status=503) from exc

    @classmethod
    def seen_key(cls, provider: str, target: Target) -> str:
        """The Redis key remembering that this delivery was enqueued for this installation."""
        return "nexus:webhook:seen:" + cls.job_id(provider, target)

    def queue(self) -> Any:
        if self._queue is None:
            self._queue = queues.queue(queues.WEBHOOK, self.redis)
        return self._queue

    @staticmethod
    def job_id(provider: str, target: Target) -> str:
        return queues.job_id(
            "webhook", provider, target.tenant_id, target.install_id, target.delivery_id
        )

    def _enqueue(
        self, provider: Provider, request: WebhookRequest, targets: list[Target]
    ) -> tuple[list[str], list[str]]:
        """Enqueue the targets not seen before; returns (new job ids, job ids of replays).
        One round trip; the dedupe mark and the job are written atomically
        (:func:`nexus_core.sync.webhook.enqueue_deliveries`)."""
        if not targets:
            return [], []
        from nexus_core.sync.webhook import Delivery, enqueue_deliveries

        provider_ttl = provider.webhook.dedupe_ttl if provider.webhook else 0
        deliveries = [Delivery(t.tenant_id, t.install_id, self.job_id(provider.id, t),
                               self.seen_key(provider.id, t)) for t in targets]
        return enqueue_deliveries(
            self.redis, self.queue(), provider.id, request, deliveries,
            dedupe_ttl=int(max(self.options.dedupe_ttl, provider_ttl)), retry=self._retry,
        )


# -- metrics -----------------------------------------------------------------------------------

DELIVERIES = Counter(
    "nexus_webhook_deliveries",
    "Webhook deliveries received, by provider and outcome "
    "(enqueued, duplicate, unrouted, url_verification, rejected_<status>)",
    ["provider", "outcome"],
)
IGNORED_INSTALLATIONS = Counter(
    "nexus_webhook_ignored_installations",
    "Webhook deliveries answered without enqueueing because their installation is disabled "
    "or waiting for its OAuth authorization",
    ["provider", "status"],
)
ACCOUNT_MISMATCHES = Counter(
    "nexus_webhook_account_mismatches",
    "Deliveries to an installation's own URL refused because they name another account "
    "(WebhookConfig.account_check)",
    ["provider"],
)
UNKNOWN_ACCOUNT_EVENTS = Counter(
    "nexus_webhook_unknown_account_events",
    "Webhook events dropped because no installation has their account id",
    ["provider"],
)
INGRESS_SECONDS = Histogram(
    "nexus_webhook_ingress_seconds",
    "Time from request to answer in the webhook ingress",
    ["provider"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


REJECTIONS = Counter(
    "nexus_webhook_rejections",
    "Webhook deliveries refused, by reason: signature, timestamp, missing_signature, "
    "malformed_signature, account_mismatch, unknown_target, too_large, bad_body, no_secret, "
    "unavailable (or status_<code>)",
    ["provider", "reason"],
)


def record_outcome(provider: str, outcome: str) -> None:
    DELIVERIES.labels(provider, outcome).inc()


def rejection_reason(exc: WebhookRejected) -> str:
    """A bounded name for why a delivery was refused (a metric label; the message is logged)."""
    text = exc.message.lower()
    if exc.status == 401:
        for word, reason in (("timestamp", "timestamp"), ("missing", "missing_signature"),
                             ("malformed", "malformed_signature"),
                             ("expected a", "malformed_signature")):
            if word in text:
                return reason
        return "signature"
    if "another account" in text:
        return "account_mismatch"
    if "secret not configured" in text:
        return "no_secret"
    return {400: "bad_body", 404: "unknown_target", 413: "too_large",
            503: "unavailable"}.get(exc.status, f"status_{exc.status}")


def record_rejection(provider: str, exc: WebhookRejected) -> None:
    """Count a refused delivery: its outcome ``rejected_<status>`` and its reason."""
    record_outcome(provider, f"rejected_{exc.status}")
    REJECTIONS.labels(provider, rejection_reason(exc)).inc()


def public_request_url(options: IngressOptions, raw_path_and_query: str, seen_url: str) -> str:
    """The URI the provider called: NEXUS_PUBLIC_URL + path when set (behind a proxy), else
    the URL this server saw."""
    if options.public_url:
        return options.public_url + raw_path_and_query
    parts = urlsplit(seen_url)
    return f"{parts.scheme}://{parts.netloc}{raw_path_and_query}"


def ingest_webhook(
    provider: str,
    headers: dict[str, str],
    body: bytes,
    *,
    tenant_id: str | None = None,
    install_id: str | None = None,
    method: str = "POST",
    url: str | None = None,
    settings: Settings | None = None,
    registry: PluginRegistry | None = None,
    redis: RedisClient | None = None,
    store: SyncStore | None = None,
) -> IngressResult:
    """Run one delivery through the ingress exactly as ``POST /webhooks/...`` does.

    For ``IntegrationService.process_webhook(provider, tenant_id, install_id, headers, body)``:
    with ``tenant_id`` and ``install_id`` the delivery goes to that installation (checked in
    ``store`` when one is given: unknown → 404, disabled or pending → answered, not enqueued).
    ``url`` is the URI the provider called (HubSpot v2/v3 sign it); by default the installation's
    webhook URL under NEXUS_PUBLIC_URL. Raises :class:`WebhookRejected` (with the HTTP status)
    when nothing was enqueued.
    """
    from nexus_core.config import get_settings
    from nexus_core.plugins import load_plugins

    settings = settings or get_settings()
    ingress = WebhookIngress(
        registry=registry or load_plugins(),
        redis=redis if redis is not None else queues.redis_connection(settings),
        settings=settings,
        store=store,
    )
    if url is None:
        key = None
        if tenant_id and install_id:
            found = ingress.find_installation(tenant_id, install_id)
            key = found.webhook_key if found is not None else None
        path = f"/webhooks/{provider}" + (f"/{key}" if key else "")
        url = (ingress.options.public_url or "http://localhost") + path
    request = WebhookRequest(method=method, url=url, headers=dict(headers), body=body)
    try:
        result = ingress.ingest(provider, request, install_id=install_id, tenant_id=tenant_id)
    except WebhookRejected as exc:
        record_rejection(provider, exc)
        raise
    record_outcome(provider, result.outcome)
    return result
