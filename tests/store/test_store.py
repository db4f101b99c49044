"""The store on SQLite and PostgreSQL: installations, tenant isolation, checkpoints, runs,
schema migrations and faults."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from nexus_core.errors import NotFound, StoreError
from nexus_core.models import Credentials
from nexus_core.store import Checkpoint, Conflict, Store
from nexus_core.store.schema import LATEST_VERSION


def _creds(token: str = "at-1", refresh: str = "rt-1") -> Credentials:
    return Credentials(
        access_token=token, refresh_token=refresh, scopes=("a", "b"),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC), extra={"account_id": "62515"},
    )


# -- installations -------------------------------------------------------------------------


def test_installation_round_trips_with_config_account_and_credentials(store):
    inst = store.add_installation(
        "t1", "i1", "acme", config={"streams": ["contacts"]}, credentials=_creds()
    )
    assert (inst.tenant_id, inst.install_id, inst.provider) == ("t1", "i1", "acme")
    assert inst.account_id == "62515"  # taken from the credentials' provider account id
    assert inst.status == "active"
    again = store.get_installation("t1", "i1")
    assert again == inst
    assert again.created_at.tzinfo is not None
    assert store.get_credentials("t1", "i1") == _creds()


def test_adding_an_existing_installation_is_a_conflict_and_changes_nothing(store):
    store.add_installation("t1", "i1", "acme", account_id="A")
    with pytest.raises(Conflict, match="already exists"):
        store.add_installation("t1", "i1", "other", account_id="B")
    assert store.get_installation("t1", "i1").account_id == "A"


def test_unknown_installation_names_the_tenant_and_lists_only_its_installs(store):
    store.add_installation("t1", "alpha", "acme")
    store.add_installation("t1", "beta", "acme")
    store.add_installation("t2", "secret-of-t2", "acme")
    with pytest.raises(NotFound) as err:
        store.get_installation("t1", "gamma")
    text = str(err.value)
    assert "'gamma'" in text and "'t1'" in text and "alpha, beta" in text
    assert "secret-of-t2" not in text
    with pytest.raises(NotFound, match="this tenant has no installations"):
        store.get_installation("nobody", "alpha")


def test_status_account_and_config_updates(store):
    store.add_installation("t1", "i1", "acme")
    assert store.set_status("t1", "i1", "needs_reauth").status == "needs_reauth"
    updated = store.update_installation("t1", "i1", account_id=777, config={"x": 1})
    assert (updated.account_id, updated.config, updated.status) == ("777", {"x": 1}, "needs_reauth")
    assert store.update_installation("t1", "i1", config={"y": 2}).account_id == "777"
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status("t1", "i1", "paused")


def test_list_scopes_operator_listing_and_webhook_routing(store):
    store.add_installation("t1", "i1", "acme", account_id="100")
    store.add_installation("t1", "i2", "slack", account_id="T9")
    store.add_installation("t2", "i1", "acme", account_id="100")
    store.set_status("t2", "i1", "disabled")
    assert [i.install_id for i in store.list_installations("t1")] == ["i1", "i2"]
    assert [(i.tenant_id, i.install_id) for i in store.list_all_installations()] == [
        ("t1", "i1"), ("t1", "i2"), ("t2", "i1")]
    assert [i.tenant_id for i in store.list_all_installations(provider="acme")] == ["t1", "t2"]
    assert [i.tenant_id for i in store.list_all_installations(status="disabled")] == ["t2"]
    routed = store.find_installations_by_account("acme", "100")
    assert [(i.tenant_id, i.install_id) for i in routed] == [("t1", "i1"), ("t2", "i1")]
    assert store.find_installations_by_account("slack", "100") == []


def test_remove_deletes_credentials_checkpoints_and_states(store):
    store.add_installation("t1", "i1", "acme", credentials=_creds())
    store.commit_page("t1", "i1", "contacts", "backfill", "c1", seq=1)
    store.put_oauth_state("st", "t1", "i1", "acme", redirect_uri="r", code_verifier="v",
                          expires_at=datetime.now(UTC) + timedelta(minutes=5))
    store.remove_installation("t1", "i1")
    with pytest.raises(NotFound):
        store.get_credentials("t1", "i1")
    store.add_installation("t1", "i1", "acme")  # same ids again start from scratch
    assert store.get_credentials("t1", "i1") is None
    assert store.get_checkpoint("t1", "i1", "contacts", "backfill") == Checkpoint(None, 0, None)
    assert store.consume_oauth_state("st") is None
    with pytest.raises(NotFound):
        store.remove_installation("t1", "nope")


# -- tenant isolation ----------------------------------------------------------------------


def test_tenant_a_cannot_read_update_or_delete_tenant_b_rows_by_guessing_ids(store):
    store.add_installation("tenant-b", "shared-id", "acme", credentials=_creds("b-token"),
                           config={"owner": "b"})
    store.commit_page("tenant-b", "shared-id", "contacts", "delta", "b-cursor", seq=1)
    run_b = store.start_run("tenant-b", "shared-id", "delta", "contacts")

    attempts = [
        lambda: store.get_installation("tenant-a", "shared-id"),
        lambda: store.get_credentials("tenant-a", "shared-id"),
        lambda: store.save_credentials("tenant-a", "shared-id", _creds("a-token")),
        lambda: store.set_status("tenant-a", "shared-id", "disabled"),
        lambda: store.update_installation("tenant-a", "shared-id", config={"owner": "a"}),
        lambda: store.remove_installation("tenant-a", "shared-id"),
        lambda: store.get_checkpoint("tenant-a", "shared-id", "contacts", "delta"),
        lambda: store.commit_page("tenant-a", "shared-id", "contacts", "delta", "x", seq=2),
        lambda: store.reset_checkpoint("tenant-a", "shared-id", "contacts", "delta"),
        lambda: store.start_run("tenant-a", "shared-id", "delta", "contacts"),
        lambda: store.get_run("tenant-a", run_b),
        lambda: store.finish_run("tenant-a", run_b, "failed", "x"),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            attempt()
    assert store.list_installations("tenant-a") == []
    assert store.list_runs("tenant-a") == []
    # tenant B's rows are untouched
    inst = store.get_installation("tenant-b", "shared-id")
    assert (inst.status, inst.config) == ("active", {"owner": "b"})
    assert store.get_credentials("tenant-b", "shared-id").access_token == "b-token"
    assert store.get_checkpoint("tenant-b", "shared-id", "contacts", "delta").cursor == "b-cursor"
    assert store.get_run("tenant-b", run_b).status == "running"


# -- checkpoints and runs ------------------------------------------------------------------


def test_commit_page_is_compare_and_set_on_seq(store):
    store.add_installation("t", "i", "acme")
    assert store.get_checkpoint("t", "i", "contacts", "backfill").seq == 0
    assert store.commit_page("t", "i", "contacts", "backfill", "p1", seq=1)
    assert not store.commit_page("t", "i", "contacts", "backfill", "zombie", seq=1)
    assert not store.commit_page("t", "i", "contacts", "backfill", "skip", seq=3)
    assert store.commit_page("t", "i", "contacts", "backfill", "p2", seq=2)
    cp = store.get_checkpoint("t", "i", "contacts", "backfill")
    assert (cp.cursor, cp.seq) == ("p2", 2) and cp.updated_at is not None
    # kinds and streams are independent
    assert store.get_checkpoint("t", "i", "contacts", "delta").seq == 0
    assert store.commit_page("t", "i", "deals", "backfill", None, seq=1)
    store.reset_checkpoint("t", "i", "contacts", "backfill")
    assert store.get_checkpoint("t", "i", "contacts", "backfill") == Checkpoint(None, 0, None)
    assert store.list_checkpoints("t", "i")[("deals", "backfill")].seq == 1
    with pytest.raises(ValueError, match="kind must be one of"):
        store.get_checkpoint("t", "i", "contacts", "full")


def test_commit_page_counts_the_page_in_its_run_only_when_it_wins(store):
    store.add_installation("t", "i", "acme")
    run = store.start_run("t", "i", "backfill", "contacts", job_id="job-1")
    assert store.commit_page("t", "i", "contacts", "backfill", "a", seq=1, run_id=run, records=10)
    assert not store.commit_page("t", "i", "contacts", "backfill", "a", seq=1, run_id=run,
                                 records=10)
    assert store.commit_page("t", "i", "contacts", "backfill", "b", seq=2, run_id=run, records=5)
    finished = store.finish_run("t", run, "succeeded")
    assert (finished.pages, finished.records, finished.status) == (2, 15, "succeeded")
    assert finished.finished_at is not None and finished.job_id == "job-1"
    assert store.get_run("t", run) == finished


def test_commit_page_with_an_unknown_run_writes_nothing(store):
    store.add_installation("t", "i", "acme")
    with pytest.raises(NotFound, match="sync run"):
        store.commit_page("t", "i", "contacts", "delta", "c", seq=1, run_id="no-such-run")
    assert store.get_checkpoint("t", "i", "contacts", "delta").seq == 0  # rolled back


def test_page_committer_is_the_same_compare_and_set_as_commit_page(store):
    store.add_installation("t", "i", "acme")
    store.add_installation("other", "i", "acme")
    run = store.start_run("t", "i", "backfill", "s")
    with store.page_committer("t", "i", "s", "backfill") as commit:
        assert commit("p1", seq=1, run_id=run, records=3)
        assert commit("p2", seq=2, run_id=run, records=4)
        assert not commit("zombie", seq=2, run_id=run, records=9)  # already committed
        assert not commit("skip", seq=4, run_id=run, records=9)
        with pytest.raises(NotFound, match="sync run"):
            commit("p3", seq=3, run_id="no-such-run", records=1)
        assert commit("p3", seq=3, run_id=run, records=5)
    cp = store.get_checkpoint("t", "i", "s", "backfill")
    assert (cp.cursor, cp.seq) == ("p3", 3) and cp.updated_at is not None
    run_row = store.get_run("t", run)
    assert (run_row.pages, run_row.records) == (3, 12)
    # another tenant's committer never touches this tenant's row
    with store.page_committer("other", "i", "s", "backfill") as commit:
        assert not commit("x", seq=4)
    with store.page_committer("nobody", "i", "s", "backfill") as commit, \
            pytest.raises(NotFound):
        commit("x", seq=4)
    assert store.get_checkpoint("t", "i", "s", "backfill").cursor == "p3"
    # the committer's connection goes back to synchronous=FULL for ordinary writes
    store.save_credentials("t", "i", _creds())
    assert store.get_credentials("t", "i") == _creds()


def test_load_sync_state_reads_one_tenants_installation_credentials_and_checkpoints(store):
    store.add_installation("t", "i", "acme", credentials=_creds())
    store.add_installation("u", "i", "acme", credentials=_creds("other"))
    store.commit_page("t", "i", "a", "delta", "d1", seq=1)
    store.commit_page("t", "i", "b", "backfill", "b1", seq=1)
    store.commit_page("u", "i", "a", "delta", "u1", seq=1)
    state = store.load_sync_state("t", "i", "delta", credentials=True)
    assert state.installation == store.get_installation("t", "i")
    assert state.credentials == _creds()
    assert {k: (c.cursor, c.seq) for k, c in state.checkpoints.items()} == {"a": ("d1", 1)}
    assert store.load_sync_state("t", "i", "delta").credentials is None
    with pytest.raises(NotFound):
        store.load_sync_state("nobody", "i", "delta")
    store.warm_up()  # harmless, writes nothing
    assert store.list_checkpoints("t", "i")[("a", "delta")].cursor == "d1"


def test_concurrent_committers_of_the_same_page_exactly_one_wins(store):
    store.add_installation("t", "i", "acme")
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def commit(n: int) -> None:
        barrier.wait()
        results.append(store.commit_page("t", "i", "s", "backfill", f"c{n}", seq=1))

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [False] * 5 + [True]
    assert store.get_checkpoint("t", "i", "s", "backfill").seq == 1


def test_runs_list_newest_first_with_tenant_and_operator_scope(store):
    store.add_installation("t1", "i", "acme")
    store.add_installation("t2", "i", "acme")
    first = store.start_run("t1", "i", "backfill", "contacts")
    second = store.start_run("t1", "i", "delta", "contacts")
    other = store.start_run("t2", "i", "delta", "contacts")
    store.finish_run("t1", first, "failed", error="boom")
    assert [r.run_id for r in store.list_runs("t1", "i")] == [second, first]
    assert {r.run_id for r in store.list_runs()} == {first, second, other}
    assert len(store.list_runs(limit=1)) == 1
    assert store.get_run("t1", first).error == "boom"
    with pytest.raises(ValueError, match="status must be one of"):
        store.finish_run("t1", first, "exploded")
    with pytest.raises(ValueError, match="needs tenant_id"):
        store.list_runs(install_id="i")


# -- schema --------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_records_the_version(backend, make_db_url, keyring):
    url = make_db_url(backend)
    store = Store.from_url(url, keyring, migrate=False)
    assert store.schema_version() == 0
    assert store.migrate() == LATEST_VERSION
    store.add_installation("t", "i", "acme")
    assert store.migrate() == LATEST_VERSION  # again: no error, data kept
    other = Store.from_url(url, keyring)
    assert other.get_installation("t", "i").provider == "acme"
    assert store.schema_version() == LATEST_VERSION
    other.close()
    store.close()


def test_a_database_newer_than_the_code_is_refused(backend, make_db_url, keyring):
    url = make_db_url(backend)
    store = Store.from_url(url, keyring)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE nexus_schema_version SET version = :v"),
                     {"v": LATEST_VERSION + 1})
    with pytest.raises(StoreError, match="newer than this nexus-core supports"):
        Store.from_url(url, keyring)
    store.close()


# -- faults --------------------------------------------------------------------------------


def test_unreachable_postgres_is_a_clear_store_error(keyring):
    from nexus_core.testing import free_port

    url = f"postgresql+psycopg://nexus:hunter2@127.0.0.1:{free_port()}/nexus"
    with pytest.raises(StoreError) as err:
        Store.from_url(url, keyring)
    text = str(err.value)
    assert "unreachable" in text and "127.0.0.1" in text and "NEXUS_DATABASE_URL" in text
    assert "hunter2" not in text  # the password is never echoed


def test_unwritable_sqlite_path_is_a_clear_store_error(tmp_path, keyring):
    with pytest.raises(StoreError, match="unreachable or refused"):
        Store.from_url(f"sqlite:///{tmp_path}/missing-dir/nexus.db", keyring)


def test_a_failed_transaction_leaves_nothing_half_written(store):
    """add_installation writes the installation and then its credentials in one transaction:
    when the credentials cannot be serialized, the installation is not created either."""
    bad = Credentials(access_token="x", extra={"not-json": object()})
    with pytest.raises(TypeError):
        store.add_installation("t", "i", "acme", credentials=bad)
    assert store.list_installations("t") == []
    store.add_installation("t", "i", "acme")
    with pytest.raises(TypeError):
        store.connect_installation("t", "i", "acme", bad, account_id="new-account")
    assert store.get_installation("t", "i").account_id is None


def test_unsupported_database_url_is_rejected(keyring):
    with pytest.raises(StoreError, match="unsupported database URL"):
        Store.from_url("mysql://u@h/db", keyring)


def test_concurrent_first_starts_migrate_once_without_errors(backend, make_db_url, keyring):
    url = make_db_url(backend)
    stores: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(Store.from_url(url, keyring))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert [s.schema_version() for s in stores] == [LATEST_VERSION] * 4
    with stores[0].engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM nexus_schema_version")).scalar() == 1
    for s in stores:
        s.close()
