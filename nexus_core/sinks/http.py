"""The HTTP forward sink (``NEXUS_SINK=http``): every page of records and every webhook's
events POSTed to the product's endpoint (``NEXUS_SINK_URL``), signed with Standard Webhooks
(``NEXUS_SINK_SECRET``, a ``whsec_`` secret) so the product verifies it with the official
``standardwebhooks`` library::

    from standardwebhooks import Webhook
    payload = Webhook(secret).verify(request.body, request.headers)

The body::

    {"type": "records", "tenant_id": ..., "install_id": ..., "provider": ..., "stream": ...,
     "records": [{"id": ..., "data": {...}, "updated_at": ..., "deleted": false}, ...]}
    {"type": "events", "tenant_id": ..., "install_id": ..., "provider": ...,
     "events": [{"id": ..., "type": ..., "object_id": ..., "occurred_at": ..., "payload": ...}]}

``webhook-id`` (and ``Idempotency-Key``) is the same for the same page on every attempt: a
digest of what it carries, so the product can drop a page it already took. A non-2xx answer or no
answer fails the page (the cursor is not advanced) and the job's retry policy sends it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nexus_core.errors import ConfigError, SinkError
from nexus_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from nexus_core.models import ConnectorContext, Record, WebhookEvent


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=_iso).encode()


class HttpSink:
    """POSTs pages and event batches to the product (see the module docstring)."""

    name = "sink-http"

    def __init__(self, url: str, secret: str, *, timeout: tuple[float, float] = (5.0, 30.0)
                 ) -> None:
        from nexus_core.webhook_schemes import standard_webhooks_key

        try:
            standard_webhooks_key(secret)
        except ValueError:
            raise ConfigError("NEXUS_SINK_SECRET must be a Standard Webhooks secret (whsec_ + "
                              "base64 of 24-64 random bytes)",
                              hint="generate one with `nexus keys generate --webhook`") from None
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _session(self) -> Any:
        pid = os.getpid()
        with self._lock:
            session = self._sessions.get(pid)
            if session is None:
                import requests

                session = requests.Session()
                session.trust_env = False
                self._sessions = {pid: session}
            return session

    def _post(self, what: str, body: dict[str, Any]) -> None:
        from nexus_core.webhook_schemes import sign_standard_webhooks

        data = _dumps(body)
        key = "nx_" + hashlib.sha256(data).hexdigest()[:40]
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "webhook-id": key,
                   "webhook-timestamp": ts, "Idempotency-Key": key,
                   "webhook-signature": sign_standard_webhooks(self.secret, key, ts, data)}
        import requests

        host = urlsplit(self.url).netloc
        try:
            resp = self._session().post(self.url, data=data, headers=headers,
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise SinkError(f"sink-http: {what} not delivered: {host} unreachable "
                            f"({type(exc).__name__})", sink=self.name) from None
        if not 200 <= resp.status_code < 300:
            raise SinkError(f"sink-http: {what} refused by {host} with HTTP {resp.status_code}",
                            sink=self.name)

    @hookimpl
    def process_records(self, ctx: ConnectorContext, stream: str, records: list[Record]
                        ) -> None:
        if not records:
            return
        self._post(f"a page of {len(records)} {stream} record(s)", {
            "type": "records", "tenant_id": ctx.tenant_id, "install_id": ctx.install_id,
            "provider": ctx.provider, "stream": stream,
            "records": [{"id": r.id, "data": r.data, "updated_at": r.updated_at,
                         "deleted": r.deleted} for r in records],
        })

    @hookimpl
    def process_events(self, ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
        if not events:
            return
        self._post(f"{len(events)} event(s)", {
            "type": "events", "tenant_id": ctx.tenant_id, "install_id": ctx.install_id,
            "provider": ctx.provider,
            "events": [{"id": e.id, "type": e.type, "object_id": e.object_id,
                        "account_id": e.account_id, "occurred_at": e.occurred_at,
                        "payload": e.payload} for e in events],
        })
