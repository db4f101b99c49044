"""Built-in sinks: where records and events leave the SDK when no custom sink plugin is installed.

Selected by NEXUS_SINK and registered by :func:`nexus_core.plugins.load_plugins` as an ordinary
plugin (``sink-jsonl`` / ``sink-null``), so ``nexus plugins list`` shows it and the allow/deny
lists apply to it like to any plugin. Custom sinks are plugins implementing ``process_records`` /
``process_events``; several sinks may be active at once (every implementation is called).

Cheap to import: it is loaded by every ``load_plugins()``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus_core.errors import ConfigError
from nexus_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.models import ConnectorContext, Record, WebhookEvent

SINKS: tuple[str, ...] = ("jsonl", "null")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _part(value: str) -> str:
    # A path component from a tenant id or stream name: never a separator or "..".
    cleaned = _UNSAFE.sub("_", value).lstrip(".")
    return cleaned or "_"


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class JsonlSink:
    """Appends one JSON line per record to ``<dir>/<tenant>/<stream>.jsonl`` and per event to
    ``<dir>/<tenant>/events.jsonl``. A page is written with one ``write`` and flushed before the
    hook returns, so the cursor is committed only after the page is in the file. Lines carry the
    record id: a page delivered twice (after a crash) is two identical lines — dedupe by id."""

    name = "sink-jsonl"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def path(self, tenant_id: str, stream: str) -> Path:
        return self.directory / _part(tenant_id) / f"{_part(stream)}.jsonl"

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
                 "install_id": ctx.install_id, "updated_at": r.updated_at, "deleted": r.deleted,
                 "data": r.data},
                default=_json_default, separators=(",", ":"),
            ) + "\n"
            for r in records
        ]
        self._append(self.path(ctx.tenant_id, stream), lines)

    @hookimpl
    def process_events(self, ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
        lines = [
            json.dumps(
                {"id": e.id, "type": e.type, "provider": e.provider, "install_id": ctx.install_id,
                 "object_id": e.object_id, "account_id": e.account_id,
                 "occurred_at": e.occurred_at, "payload": e.payload},
                default=_json_default, separators=(",", ":"),
            ) + "\n"
            for e in events
        ]
        self._append(self.path(ctx.tenant_id, "events"), lines)


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


def builtin_sink(settings: Settings) -> JsonlSink | NullSink:
    """The sink NEXUS_SINK selects; :class:`ConfigError` naming the variable when unknown."""
    kind = (settings.get("NEXUS_SINK") or "jsonl").strip().lower()
    if kind == "jsonl":
        return JsonlSink(settings.get("NEXUS_SINK_DIR") or "nexus-data")
    if kind == "null":
        return NullSink()
    raise ConfigError(
        f"NEXUS_SINK must be one of {', '.join(SINKS)}, got {kind!r}",
        hint="custom sinks are plugins implementing process_records/process_events; "
        "set NEXUS_SINK=null to use only them",
    )
