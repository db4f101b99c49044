"""Per-tenant fairness, measured: one tenant's big backfill does not starve another tenant's
delta. Two worker processes; tenant A backfills 4 installations x 300 slow pages; tenant B asks
for a delta. With the per-tenant RQ RateLimit (NEXUS_BACKFILL_TENANT_CONCURRENCY=1) and a short
time budget, A holds at most one worker and B's delta starts at once; without them (limit 8,
long budget) B waits for a worker to come free."""

import time

import pytest

pytestmark = pytest.mark.slow


def _delta_latency(make_cluster, redis_url, wait, **env):
    c = make_cluster(redis_url, total=30000, page_size=100, **env)
    for page in range(1, 301):
        c.sim.slow_page(page, 0.01)
    for n in range(4):
        c.install("A", f"a{n}")
    c.install("B", "b1")
    c.store.commit_page("B", "b1", "records", "delta", "0", seq=1)  # B's backfill is done
    service = c.service()
    c.worker("--workers", "2")
    for n in range(4):
        service.start_backfill("sim", "A", f"a{n}")
    wait(lambda: c.store.get_checkpoint("A", "a0", "records", "backfill").seq >= 5,
         what="tenant A's backfill to be under way")
    wait(lambda: sum(c.store.get_checkpoint("A", f"a{n}", "records", "backfill").seq > 0
                     for n in range(4)) >= 1)
    time.sleep(0.5)
    started = time.monotonic()
    service.start_delta("sim", "B", "b1")
    wait(lambda: c.store.list_runs("B", "b1") and
         c.store.list_runs("B", "b1")[0].status == "succeeded", timeout=60,
         what="tenant B's delta", interval=0.02)
    latency = time.monotonic() - started
    c.stop_all()
    return latency


def test_one_tenants_backfill_does_not_starve_another_tenants_delta(make_cluster, redis_url,
                                                                    wait, capsys):
    fair = _delta_latency(make_cluster, redis_url, wait,
                          NEXUS_BACKFILL_TENANT_CONCURRENCY="1", NEXUS_BACKFILL_TIME_BUDGET="0.5")
    with capsys.disabled():
        print(f"\ntenant B delta latency while tenant A backfills 4x300 pages on 2 workers: "
              f"{fair:.2f} s (per-tenant RateLimit 1, 0.5 s budget)")
    assert fair < 2.0


def test_without_the_tenant_limit_the_delta_waits_for_a_free_worker(make_cluster, redis_url,
                                                                    wait, capsys):
    unfair = _delta_latency(make_cluster, redis_url, wait,
                            NEXUS_BACKFILL_TENANT_CONCURRENCY="8",
                            NEXUS_BACKFILL_TIME_BUDGET="600")
    with capsys.disabled():
        print(f"\nsame, without the per-tenant limit and with a 600 s budget: {unfair:.2f} s")
    assert unfair > 1.0
