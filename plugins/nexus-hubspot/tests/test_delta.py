"""Deltas through the search API: past the 10,000-result cap, 10,001 changes at one timestamp,
the index lag, archived records, other object types — each record delivered once, nothing
skipped."""

from __future__ import annotations

import json
from collections import Counter

RAISED_TIER = {"requests_per_second": 45, "burst_size": 5,
               "buckets": {"search": {"requests_per_second": 15, "burst_size": 1}}}


def connect(nexus, sim, **config):
    account = sim.default_account
    inst = nexus.connect("t1", "main", account)
    if config:
        nexus.service.update_installation("t1", "main", changes=config)
    return account, inst


def sync(nexus, kind, stream=None):
    nexus.recorder.clear()
    start = nexus.service.start_backfill if kind == "backfill" else nexus.service.start_delta
    start("hubspot", "t1", "main", stream)
    nexus.run(timeout=240)
    assert nexus.failed_jobs() == []


def delivered(nexus, stream, *, deleted=False):
    return [r["id"] for r in nexus.recorder.rows("record")
            if r["stream"] == stream and r["deleted"] is deleted]


def searches(sim):
    return [r for r in sim.requests(r"/search$") if r.account is not None]


def test_a_delta_past_the_10000_cap_with_10001_changes_at_one_timestamp_skips_nothing(
    make_sim, harness
):
    sim = make_sim(sizes={"contacts": 12_000, "companies": 10, "deals": 10})
    account = sim.default_account
    sim.set_tier(account, per_ten_seconds=600, search_per_second=20)  # a portal on a high tier
    nexus = harness(sim)
    connect(nexus, sim, rate_limits=RAISED_TIER, streams=["contacts"])
    sync(nexus, "backfill")
    assert len(delivered(nexus, "contacts")) == 12_000

    same_second = sim.mutate("contacts", account, 10_001, same_second=True)
    spread = sim.mutate("contacts", account, 1_500)
    changed = same_second | spread
    assert len(changed) > 10_001
    sync(nexus, "delta")
    got = delivered(nexus, "contacts")
    assert len(got) == len(set(got)), "a change delivered twice"
    assert set(got) == changed
    # A naive search (by modified date, paged with `after`) stops at a 400 past 10,000:
    # this one never asked for an offset at all.
    assert sim.app.rate_limit.rejected == 0
    assert not [r for r in sim.requests(r"/search$") if r.status == 400]

    sync(nexus, "delta")  # the overlap is read again, and dropped: nothing changed
    assert delivered(nexus, "contacts") == []


def test_the_overlap_catches_a_change_the_search_index_had_not_seen_yet(sim, nexus):
    account, _ = connect(nexus, sim)
    sync(nexus, "backfill")
    sim.search_lag = 30  # changes younger than 30 s are not searchable yet
    late = sim.mutate("contacts", account, 3)
    sync(nexus, "delta")
    assert delivered(nexus, "contacts") == []  # not in the index when the window was read
    companies = sim.mutate("companies", account, 40)  # 40 s pass
    sync(nexus, "delta")
    assert set(delivered(nexus, "contacts")) == late  # the next window overlaps by 60 s
    assert set(delivered(nexus, "companies")) < companies  # the youngest: next time


def test_without_an_overlap_that_change_would_be_lost(sim, nexus):
    account, _ = connect(nexus, sim, search_lag_seconds=0)
    sync(nexus, "backfill")
    sim.search_lag = 30
    late = sim.mutate("contacts", account, 3)
    sync(nexus, "delta")
    sim.mutate("companies", account, 40)
    sync(nexus, "delta")
    assert set(delivered(nexus, "contacts")) < late  # lost for good: why the overlap exists


def test_archived_records_are_delivered_once_as_deletions(sim, nexus):
    account, _ = connect(nexus, sim)
    sync(nexus, "backfill")
    gone = {"contacts": sim.delete("contacts", account, 5),
            "deals": sim.delete("deals", account, 2)}
    changed = sim.mutate("contacts", account, 4)
    sync(nexus, "delta")
    for stream, ids in gone.items():
        assert sorted(delivered(nexus, stream, deleted=True)) == sorted(ids)
    assert set(delivered(nexus, "contacts")) == changed
    assert not set(delivered(nexus, "contacts")) & gone["contacts"]  # search never shows them
    archived_lists = sim.requests(r"/crm/v3/objects/\w+$")
    assert archived_lists, "the archive was never read"
    sync(nexus, "delta")
    assert nexus.recorder.rows("record") == []  # the overlap does not repeat deletions


def test_deletions_can_be_left_out(sim, nexus):
    account, _ = connect(nexus, sim, deletions=False)
    sync(nexus, "backfill")
    sim.delete("contacts", account, 3)
    before = len(sim.requests())
    sync(nexus, "delta")
    assert nexus.recorder.rows("record") == []
    assert len(sim.requests()) - before == 3  # one search per stream, no archive reads


def test_other_object_types_sync_through_the_same_stream_with_their_modified_property(
    sim, nexus
):
    account, _ = connect(nexus, sim, streams=["contacts", "tickets"],
                         properties={"tickets": ["subject", "hs_pipeline_stage"]})
    sync(nexus, "backfill")
    assert set(delivered(nexus, "tickets")) == sim.expected_ids("tickets", account)
    ticket = next(r for r in nexus.recorder.rows("record") if r["stream"] == "tickets")
    assert ticket  # recorded; the data shape is checked on the wire below
    changed = sim.mutate("tickets", account, 3)
    sync(nexus, "delta")
    assert set(delivered(nexus, "tickets")) == changed
    # tickets are searched on hs_lastmodifieddate, contacts on lastmodifieddate: the simulator
    # answers 400 to a search on a property a type does not have
    assert [r.status for r in searches(sim)] == [200] * len(searches(sim))
    assert delivered(nexus, "deals") == []  # not among this installation's streams


def test_changes_made_during_the_backfill_come_in_the_first_delta_and_nothing_else(sim, nexus):
    from nexus_hubspot.simulator import ms

    from nexus_core import hookimpl

    account, _ = connect(nexus, sim)

    class ChangesAfterTheFirstPage:
        changed: set[str] = set()
        versions: dict[str, int] = {}

        @hookimpl
        def process_records(self, ctx, stream, records):
            if stream != "contacts":
                return
            for r in records:
                self.versions[r.id] = round(r.updated_at.timestamp() * 1000)
            if not self.changed:
                self.changed = sim.mutate("contacts", account, 200)

    during = ChangesAfterTheFirstPage()
    nexus.registry.register(during, "changes-during-backfill")
    sync(nexus, "backfill")
    current = {oid: ms(sim.data.version(account, "contacts",
                                        int(oid) - sim.id_base("contacts"))[1])
               for oid in during.changed}
    stale = {oid for oid in during.changed if during.versions[oid] != current[oid]}
    assert stale, "no record was delivered in its old version"
    sync(nexus, "delta")
    # those the backfill delivered in their old version come again; those it read after the
    # change (a later page) do not: the first delta remembers what the backfill delivered
    assert set(delivered(nexus, "contacts")) == stale
    assert delivered(nexus, "deals") == [] and delivered(nexus, "companies") == []


def test_the_cursor_is_plain_json_and_remembers_only_the_overlap(sim, nexus):
    account, _ = connect(nexus, sim)
    sync(nexus, "backfill")
    sim.mutate("contacts", account, 3)
    sync(nexus, "delta")
    cp = nexus.store.get_checkpoint("t1", "main", "contacts", "delta")
    cursor = json.loads(cp.cursor)
    assert cursor["phase"] == "search" and cursor["until"] is None
    remembered = Counter(m for m, ids in cursor["seen"] for _ in ids)
    assert remembered and all(m >= cursor["since"] for m in remembered)
