"""The file sinks: ``jsonl`` (one file per tenant, provider and stream) and ``null``."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_core.hookspecs import hookimpl
from nexus_core.ids import file_part

if TYPE_CHECKING:
    from nexus_core.models import ConnectorContext, Record, WebhookEvent


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class JsonlSink:
    """Appends one JSON line per record to ``<dir>/<tenant>/<provider>/streams/<stream>.jsonl``
    and per webhook event to ``<dir>/<tenant>/<provider>/events.jsonl``.

    Each name is :func:`nexus_core.ids.file_part`-encoded: distinct tenants, providers and
    streams never share a file (``a/b`` vs ``a_b``, ``Acme`` vs ``acme`` on a case-insensitive
    disk, a stream named ``events``), and no id can climb out of the directory. Every line also
    carries its tenant, provider and installation. A page is written with one ``write`` and
    flushed before the hook returns, so the cursor is committed only after the page is in the
    file. A page delivered twice (after a crash) is two identical lines — dedupe by id."""

    name = "sink-jsonl"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def path(self, tenant_id: str, provider: str, stream: str) -> Path:
        """The file of one stream's records."""
        return self._dir(tenant_id, provider) / "streams" / f"{file_part(stream)}.jsonl"

    def events_path(self, tenant_id: str, provider: str) -> Path:
        """The file of one provider's webhook events for a tenant."""
        return self._dir(tenant_id, provider) / "events.jsonl"

    def _dir(self, tenant_id: str, provider: str) -> Path:
        return self.directory / file_part(tenant_id) / file_part(provider)

    def _append(self, path: Path, lines: list[str]) -> None:
        if not lines:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(lines)
        with self._lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()

    @hookimpl
    def process_records(self, ctx: ConnectorContext, stream: str, records: list[Record]) -> None:
        lines = [
            json.dumps(
                {"id": r.id, "stream": r.stream, "provider": ctx.provider,
                 "tenant_id": ctx.tenant_id, "install_id": ctx.install_id,
                 "updated_at": r.updated_at, "deleted": r.deleted, "data": r.data},
                default=_json_default, separators=(",", ":"),
            ) + "\n"
            for r in records
        ]
        self._append(self.path(ctx.tenant_id, ctx.provider, stream), lines)

    @hookimpl
    def process_events(self, ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
        lines = [
            json.dumps(
                {"id": e.id, "type": e.type, "provider": e.provider,
                 "tenant_id": ctx.tenant_id, "install_id": ctx.install_id,
                 "object_id": e.object_id, "account_id": e.account_id,
                 "occurred_at": e.occurred_at, "payload": e.payload},
                default=_json_default, separators=(",", ":"),
            ) + "\n"
            for e in events
        ]
        self._append(self.events_path(ctx.tenant_id, ctx.provider), lines)


class NullSink:
    """Discards everything (benchmarks, dry runs); counts what it saw in this process."""

    name = "sink-null"

    def __init__(self) -> None:
        self.records = 0
        self.events = 0

    @hookimpl
    def process_records(self, ctx: ConnectorContext, stream: str, records: list[Record]) -> None:
        self.records += len(records)

    @hookimpl
    def process_events(self, ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
        self.events += len(events)
