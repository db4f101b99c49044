"""The SQL sink on SQLite and PostgreSQL: upsert by primary key, newest version wins whatever
the arrival order (property-based over arrival orders and re-deliveries), soft deletes,
idempotent events, its own migrated schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_core.models import ConnectorContext, Record, WebhookEvent
from nexus_core.sinks.sql import SqlSink, event_table, record_table

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def ctx(tenant="t1", provider="hubspot", install="i1"):
    return ConnectorContext(tenant_id=tenant, install_id=install, provider=provider)


def rec(rid, minute, *, deleted=False, stream="contacts", **data):
    return Record(id=rid, stream=stream, data={"id": rid, "v": minute, **data},
                  updated_at=T0 + timedelta(minutes=minute), deleted=deleted)


def rows(sink, tenant="t1", stream="contacts"):
    with sink.engine.connect() as conn:
        found = conn.execute(sa.select(record_table).where(
            record_table.c.tenant_id == tenant, record_table.c.stream == stream)).all()
    return {r.record_id: (r.data["v"], r.deleted_at is not None) for r in found}


@pytest.fixture
def sink(db_url):
    s = SqlSink(db_url)
    yield s
    s.close()


def test_a_page_is_upserted_and_a_redelivered_page_changes_nothing(sink):
    page = [rec("a", 1, name="Ada"), rec("b", 1), rec("c", 2)]
    sink.process_records(ctx(), "contacts", page)
    sink.process_records(ctx(), "contacts", page)  # after a crash: the same page again
    assert rows(sink) == {"a": (1, False), "b": (1, False), "c": (2, False)}
    with sink.engine.connect() as conn:
        data = conn.execute(sa.select(record_table.c.data).where(
            record_table.c.record_id == "a")).scalar()
    assert data == {"id": "a", "v": 1, "name": "Ada"}


def test_data_any_provider_may_send_is_stored_as_json(sink):
    # datetimes, bytes, integers beyond 64 bits and non-string keys: the encoder's fast path
    # refuses some of these; every one must still land as JSON.
    odd = {"when": T0, "raw": b"bytes", "big": 2**70, 7: "int key", "nested": [{"n": -2**65}]}
    sink.process_records(ctx(), "contacts", [rec("a", 1, **{"odd": odd})])
    with sink.engine.connect() as conn:
        data = conn.execute(sa.select(record_table.c.data).where(
            record_table.c.record_id == "a")).scalar()
    assert data["odd"] == {"when": "2025-01-01T00:00:00+00:00", "raw": "bytes", "big": 2**70,
                           "7": "int key", "nested": [{"n": -2**65}]}


def test_an_older_version_never_overwrites_a_newer_one(sink):
    sink.process_records(ctx(), "contacts", [rec("a", 5)])
    sink.process_records(ctx(), "contacts", [rec("a", 3)])  # a late webhook-triggered fetch
    assert rows(sink) == {"a": (5, False)}
    sink.process_records(ctx(), "contacts", [rec("a", 7)])
    assert rows(sink) == {"a": (7, False)}


def test_deletions_are_soft_and_ordered_like_versions(sink):
    sink.process_records(ctx(), "contacts", [rec("a", 1), rec("b", 1)])
    sink.process_records(ctx(), "contacts", [rec("a", 4, deleted=True)])
    assert rows(sink) == {"a": (1, True), "b": (1, False)}  # the last data is kept
    sink.process_records(ctx(), "contacts", [rec("a", 2)])  # older than the deletion
    assert rows(sink)["a"] == (1, True)
    sink.process_records(ctx(), "contacts", [rec("a", 9)])  # restored at the provider
    assert rows(sink)["a"] == (9, False)


def test_tenants_providers_and_streams_are_kept_apart(sink):
    sink.process_records(ctx("t1", "hubspot"), "contacts", [rec("a", 1)])
    sink.process_records(ctx("t2", "hubspot"), "contacts", [rec("a", 2)])
    sink.process_records(ctx("t1", "salesforce"), "contacts", [rec("a", 3)])
    sink.process_records(ctx("t1", "hubspot"), "deals", [rec("a", 4, stream="deals")])
    with sink.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(record_table)).scalar() == 4


def test_a_page_holding_an_id_twice_keeps_its_newest(sink):
    sink.process_records(ctx(), "contacts", [rec("a", 2), rec("a", 5), rec("a", 3)])
    assert rows(sink) == {"a": (5, False)}


def test_events_are_appended_once_per_event_id(sink):
    events = [WebhookEvent(id="e1", type="contact.creation", provider="hubspot",
                           object_id="1", payload={"x": 1}),
              WebhookEvent(id="e2", type="contact.deletion", provider="hubspot")]
    sink.process_events(ctx(), events)
    sink.process_events(ctx(), events[:1])  # a replay
    with sink.engine.connect() as conn:
        got = conn.execute(sa.select(event_table.c.event_id, event_table.c.type)
                           .order_by(event_table.c.event_id)).all()
    assert [tuple(r) for r in got] == [("e1", "contact.creation"), ("e2", "contact.deletion")]


def test_the_schema_is_versioned_and_a_newer_database_is_refused(db_url):
    from nexus_core.errors import StoreError

    SqlSink(db_url).engine.dispose()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT version FROM nexus_sink_schema_version")
                            ).scalar() == 1
        conn.execute(sa.text("UPDATE nexus_sink_schema_version SET version = 99"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this nexus-core"):
        _ = SqlSink(db_url).engine


# -- convergence, property-based ---------------------------------------------------------------

version = st.tuples(st.sampled_from("abcde"), st.integers(0, 20), st.booleans())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(versions=st.lists(version, min_size=1, max_size=25, unique_by=lambda v: (v[0], v[1])),
       data=st.data())
def test_any_arrival_order_with_redeliveries_converges_to_the_newest_versions(
    sink, versions, data
):
    """Backfill pages, delta pages and webhook-triggered fetches deliver versions of the same
    records in any order, some more than once: the table ends with exactly the newest version
    of each record (deleted or not)."""
    with sink.engine.begin() as conn:
        conn.execute(sa.delete(record_table))
        conn.execute(sa.delete(event_table))
    deliveries = data.draw(st.lists(
        st.lists(st.sampled_from(versions), min_size=1, max_size=6), min_size=1, max_size=12))
    everything = [v for page in deliveries for v in page]
    for page in deliveries + [versions]:  # every version arrives at least once
        sink.process_records(ctx(), "contacts",
                             [rec(rid, minute, deleted=gone) for rid, minute, gone in page])
    newest: dict[str, tuple[int, bool]] = {}
    for rid, minute, gone in versions + everything:
        if rid not in newest or minute > newest[rid][0]:
            newest[rid] = (minute, gone)
    got = rows(sink)
    for rid, (minute, gone) in newest.items():
        assert got[rid][1] == gone, (rid, got[rid], newest[rid])
        if not gone:
            assert got[rid][0] == minute, (rid, got[rid], newest[rid])
    # Webhook deliveries, retried and replayed in any order: each event once.
    batches = data.draw(st.lists(st.lists(st.sampled_from([f"ev{i}" for i in range(8)]),
                                          min_size=1, max_size=5), min_size=1, max_size=6))
    for batch in batches:
        sink.process_events(ctx(), [WebhookEvent(id=e, type="t", provider="hubspot")
                                    for e in batch])
    with sink.engine.connect() as conn:
        stored = conn.execute(sa.select(event_table.c.event_id)).scalars().all()
    assert sorted(stored) == sorted({e for b in batches for e in b})
