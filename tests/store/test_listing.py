"""Installations at scale, on SQLite and PostgreSQL: keyset pages, batched iteration (never all
rows at once), counts in SQL, and the periodic-delta fan-out over them."""

import pytest
import sqlalchemy as sa


def _bulk(store, n, *, status="active", tenants=7, start=0):
    from nexus_core.models import utcnow
    from nexus_core.store import schema

    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(sa.insert(schema.installations), [
            {"tenant_id": f"t{i % tenants}", "install_id": f"i{i:05d}",
             "provider": "p1" if i % 3 else "p2", "account_id": None, "status": status,
             "config": '{"k": 1}', "created_at": now, "updated_at": now}
            for i in range(start, start + n)])


@pytest.fixture
def selects(store):
    """The SELECTs the store sends (statement text), to see how it reads."""
    seen = []

    def record(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "nexus_installations" in statement:
            seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(store.engine, "before_cursor_execute", record)


def test_pages_follow_the_key_order_without_gaps_or_repeats(store):
    _bulk(store, 250)
    _bulk(store, 20, status="disabled", start=250)
    everyone = [(i.tenant_id, i.install_id) for i in store.list_all_installations()]
    seen, after = [], None
    while True:
        page = store.page_installations(limit=40, after=after)
        seen += [(i.tenant_id, i.install_id) for i in page]
        if len(page) < 40:
            break
        after = (page[-1].tenant_id, page[-1].install_id)
    assert seen == everyone and len(seen) == 270
    active_p2 = store.page_installations(limit=1000, status="active", provider="p2")
    assert {i.status for i in active_p2} == {"active"} and {i.provider for i in active_p2} == \
        {"p2"} and len(active_p2) == 84
    one = store.page_installations(limit=1000, tenant_id="t3")
    assert {i.tenant_id for i in one} == {"t3"} and one[0].config == {"k": 1}
    with pytest.raises(ValueError):
        store.page_installations(limit=0)


def test_iteration_reads_in_batches_not_all_rows_at_once(store, selects):
    _bulk(store, 2500)
    got = list(store.iter_installations(batch_size=1000, status="active"))
    assert len(got) == len({(i.tenant_id, i.install_id) for i in got}) == 2500
    assert len(selects) == 3 and all("LIMIT" in s.upper() for s in selects)
    selects.clear()
    batches = list(store.iter_installation_keys(batch_size=1000, status="active"))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert len(selects) == 3
    keys = [k for b in batches for k in b]
    assert keys == sorted(keys) and keys[0]._fields == ("tenant_id", "install_id", "provider")


def test_counts_by_status_in_sql(store, selects):
    _bulk(store, 30)
    _bulk(store, 5, status="disabled", start=30)
    assert store.count_installations() == {"active": 30, "disabled": 5}
    assert store.count_installations(tenant_id="t2") == {"active": 4, "disabled": 1}
    assert all("count(" in s.lower() for s in selects)


def test_the_delta_fan_out_walks_installations_in_batches(store, selects, redis_client):
    from nexus_core import queues
    from nexus_core.sync import SyncOptions
    from nexus_core.sync.cron import fan_out

    _bulk(store, 2500)
    _bulk(store, 10, status="needs_reauth", start=2500)
    slot, interval = 10_000_000, 300
    out = fan_out(redis_client, store, slot, interval=interval, opts=SyncOptions(),
                  batch_size=1000, now=slot * interval)
    assert out.installations == len(out.jobs) == 2500
    assert len(selects) == 3  # three keyset batches; never every row in one read
    delta = queues.queue(queues.DELTA, redis_client)
    assert delta.scheduled_job_registry.count + delta.count == 2500
    again = fan_out(redis_client, store, slot, interval=interval, opts=SyncOptions(),
                    now=slot * interval)
    assert again.jobs == [] and again.taken == 2500


def test_installs_list_pages_with_limit_and_after(cli_env, store, db_url, keys):
    import json

    _bulk(store, 12)
    env = {"NEXUS_DATABASE_URL": db_url, "NEXUS_ENCRYPTION_KEYS": keys}
    first = cli_env(["installs", "list", "--limit", "5", "--json"], env)
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert len(rows) == 5
    hint = first.stderr.strip()
    assert hint.startswith("more: nexus installs list --after ") and hint.endswith("--limit 5")
    seen = [(r["tenant_id"], r["install_id"]) for r in rows]
    while hint:
        cursor = hint.split("--after ")[1].split()[0]
        page = cli_env(["installs", "list", "--limit", "5", "--after", cursor, "--json"], env)
        seen += [(r["tenant_id"], r["install_id"]) for r in json.loads(page.stdout)]
        hint = page.stderr.strip()
    assert seen == sorted(seen) and len(set(seen)) == 12  # every installation once, in order
    table = cli_env(["installs", "list", "--limit", "20"], env)
    assert table.output.count(" p1 ") + table.output.count(" p2 ") == 12
    assert "more:" not in table.output
    bad = cli_env(["installs", "list", "--after", "not-a-cursor"], env)
    assert bad.exit_code == 2 and "--after" in bad.output


def test_every_write_of_an_installation_or_its_credentials_is_announced(store):
    """Workers drop their copy of an installation when told (nexus_core.sync.installations):
    each writer calls ``on_change`` after its commit; a failed write announces nothing."""
    from nexus_core.models import Credentials
    from nexus_core.store import Conflict, Store
    from nexus_core.store._changes import _WRITES

    assert all(callable(getattr(Store, name)) for name in _WRITES)
    heard = []
    store.on_change = lambda tenant, install: heard.append((tenant, install))
    store.add_installation("t1", "i1", "p1")
    store.set_status("t1", "i1", "disabled")
    store.update_installation("t1", "i1", config={"a": 1})
    store.rotate_webhook_key("t1", "i1")
    store.save_credentials("t1", "i1", Credentials(api_key="k"))
    store.connect_installation("t1", "i1", "p1", Credentials(access_token="a"))
    with pytest.raises(Conflict):
        store.add_installation("t1", "i1", "p1")
    store.remove_installation("t1", "i1")
    assert heard == [("t1", "i1")] * 7
