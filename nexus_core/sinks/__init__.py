"""Built-in sinks: where records and events leave the SDK.

``NEXUS_SINK`` selects one or several (comma-separated): ``jsonl`` (files per tenant, provider
and stream), ``sql`` (tables the product queries, upserted by primary key; see
:mod:`nexus_core.sinks.sql`), ``http`` (signed POSTs to the product; see
:mod:`nexus_core.sinks.http`), ``null`` (discard). They are registered by
:func:`nexus_core.plugins.load_plugins` as one ordinary plugin (``sink-sql+http``, ...), so
``nexus plugins list`` shows them and the allow/deny lists apply (to each ``sink-<kind>``).

With several, every page goes to each of them, whatever the others do; if any fails, the page
fails with an error naming each sink that failed (the cursor is not advanced and the job is
retried; sinks upsert or deduplicate, so the ones that succeeded take the page again
harmlessly). Custom sinks are plugins implementing ``process_records`` / ``process_events``.

Cheap to import: it is loaded by every ``load_plugins()``; the SQL and HTTP sinks import
SQLAlchemy and requests only when selected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nexus_core.errors import ConfigError, SinkError
from nexus_core.hookspecs import hookimpl
from nexus_core.sinks.files import JsonlSink, NullSink

if TYPE_CHECKING:
    from nexus_core.config import Settings
    from nexus_core.models import ConnectorContext, Record, WebhookEvent

__all__ = ["SINKS", "BuiltinSinks", "JsonlSink", "NullSink", "builtin_sink", "builtin_sinks"]

SINKS: tuple[str, ...] = ("jsonl", "sql", "http", "null")


def make_sink(kind: str, settings: Settings) -> Any:
    """One built-in sink, configured from the settings; ConfigError naming what is missing."""
    if kind == "jsonl":
        return JsonlSink(settings.sink_dir)
    if kind == "null":
        return NullSink()
    if kind == "sql":
        from nexus_core.sinks.sql import SqlSink

        return SqlSink(settings.sink_database_url or settings.database_url)
    if kind == "http":
        from nexus_core.sinks.http import HttpSink

        if not settings.sink_url or not settings.sink_secret:
            raise ConfigError("NEXUS_SINK=http needs NEXUS_SINK_URL (the product's endpoint) "
                              "and NEXUS_SINK_SECRET (a whsec_ Standard Webhooks secret)")
        if settings.production and not settings.sink_url.startswith("https://"):
            raise ConfigError("NEXUS_SINK_URL must be https:// with NEXUS_ENV=production: "
                              "records would cross the network in clear text")
        return HttpSink(settings.sink_url, settings.sink_secret)
    raise ConfigError(f"NEXUS_SINK: unknown sink {kind!r}; built-in sinks: {', '.join(SINKS)}")


class BuiltinSinks:
    """The selected built-in sinks as one plugin: each receives every page; their failures are
    collected and raised together (see the module docstring)."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks
        self.name = "sink-" + "+".join(s.name.removeprefix("sink-") for s in sinks)

    def _each(self, method: str, *args: Any) -> None:
        failures: list[str] = []
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception as exc:
                first = first or exc
                text = str(exc)
                failures.append(text if text.startswith(sink.name) else f"{sink.name}: {text}")
        if not failures:
            return
        if len(self.sinks) == 1 and first is not None:
            raise first
        raise SinkError(f"{len(failures)} of {len(self.sinks)} sinks failed: "
                        + "; ".join(failures), sink=",".join(
                            s.name for s in self.sinks)) from first

    @hookimpl
    def process_records(self, ctx: ConnectorContext, stream: str, records: list[Record]
                        ) -> None:
        self._each("process_records", ctx, stream, records)

    @hookimpl
    def process_events(self, ctx: ConnectorContext, events: list[WebhookEvent]) -> None:
        self._each("process_events", ctx, events)


def builtin_sinks(settings: Settings, allowed: Any = None) -> BuiltinSinks | None:
    """The sinks NEXUS_SINK selects (``allowed(name)`` filters them, e.g. by the deny list);
    None when none is left."""
    sinks = [make_sink(kind, settings) for kind in settings.sink]
    if allowed is not None:
        sinks = [s for s in sinks if allowed(s.name)]
    return BuiltinSinks(sinks) if sinks else None


def builtin_sink(settings: Settings) -> Any:
    """The first selected sink (compatibility with code written for a single NEXUS_SINK)."""
    return make_sink(settings.sink[0], settings)
