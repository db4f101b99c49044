"""The last health check of each installation (schema version 3), on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from nexus_core.errors import NotFound
from nexus_core.models import Health
from nexus_core.store import Store


def _check(healthy, *, minutes=0, **details):
    return Health(healthy=healthy, auth_valid=healthy, api_accessible=True,
                  rate_limit_status="max=100 remaining=7" if healthy else None,
                  error_count=0 if healthy else 1,
                  checked_at=datetime(2026, 12, 3, 12, 0, tzinfo=UTC) + timedelta(minutes=minutes),
                  details=details)


def test_record_health_keeps_the_last_check_and_returns_the_one_it_replaced(store):
    store.add_installation("t1", "i1", "acme")
    assert store.get_health("t1", "i1") is None
    first = _check(True)
    assert store.record_health("t1", "i1", first) is None
    assert store.get_health("t1", "i1") == first
    second = _check(False, minutes=5, error="token revoked", needs_reauth=True)
    assert store.record_health("t1", "i1", second) == first
    stored = store.get_health("t1", "i1")
    assert stored == second
    assert stored.checked_at == datetime(2026, 12, 3, 12, 5, tzinfo=UTC)
    assert stored.details == {"error": "token revoked", "needs_reauth": True}


def test_health_is_scoped_by_tenant_and_listed_for_a_page_in_one_read(store):
    for tenant in ("t1", "t2"):
        store.add_installation(tenant, "main", "acme")
    store.add_installation("t1", "never-checked", "acme")
    store.record_health("t1", "main", _check(True))
    store.record_health("t2", "main", _check(False, error="down"))
    assert store.get_health("t1", "main").healthy
    assert not store.get_health("t2", "main").healthy
    found = store.health_of([("t1", "main"), ("t2", "main"), ("t1", "never-checked"),
                             ("t3", "main")])
    assert set(found) == {("t1", "main"), ("t2", "main")}
    assert found[("t2", "main")].details == {"error": "down"}
    assert store.health_of([]) == {}


def test_a_check_of_an_unknown_installation_is_refused_and_removal_forgets_it(store):
    with pytest.raises(NotFound, match="installation 'nope' not found for tenant 't1'"):
        store.record_health("t1", "nope", _check(True))
    store.add_installation("t1", "i1", "acme")
    store.record_health("t1", "i1", _check(True))
    store.remove_installation("t1", "i1")
    store.add_installation("t1", "i1", "acme")  # the same ids again: a new installation
    assert store.get_health("t1", "i1") is None


def test_migration_from_version_2_adds_the_health_table_and_keeps_data(make_db_url, backend,
                                                                       keyring):
    import sqlalchemy as sa

    from nexus_core.store import schema

    url = make_db_url(backend)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for version, _description, step in schema.MIGRATIONS[:2]:  # what release 2 created
            step(conn)
        schema.schema_version.create(conn)
        conn.execute(sa.insert(schema.schema_version).values(id=1, version=2,
                                                             updated_at=sa.func.now()))
        conn.execute(sa.text(
            "INSERT INTO nexus_installations (tenant_id, install_id, provider, status, "
            "config, created_at, updated_at, webhook_key) VALUES ('t1', 'main', 'acme', "
            "'active', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'k1')"))
        assert not sa.inspect(conn).has_table("nexus_installation_health")
    engine.dispose()
    store = Store.from_url(url, keyring)
    try:
        assert store.schema_version() == schema.LATEST_VERSION == 3
        assert store.get_installation("t1", "main").webhook_key == "k1"
        store.record_health("t1", "main", _check(True))
        assert store.get_health("t1", "main").healthy
    finally:
        store.close()
