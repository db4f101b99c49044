"""The recovered-abandoned-job series, from real processes: a worker SIGKILLed mid-backfill, the
next worker (with --metrics-port) requeues the job and its metrics listener shows it."""

import http.client

import pytest

pytestmark = pytest.mark.slow


def _scrape(port):
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        text = resp.read().decode()
    finally:
        conn.close()
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_recovered_abandoned_job_is_counted_by_the_worker_that_recovered_it(
        make_cluster, redis_url, wait, tmp_path):
    from nexus_core.testing import free_port

    c = make_cluster(redis_url, total=2000, page_size=100,
                     NEXUS_METRICS_DIR=str(tmp_path / "metrics"))
    for page in range(1, 21):
        c.sim.slow_page(page, 0.05)
    c.install()
    first = c.worker("--queues", "backfill")
    c.service().start_backfill("sim", "t1", "i1")
    wait(lambda: c.store.get_checkpoint("t1", "i1", "records", "backfill").seq >= 5,
         timeout=60, what="5 committed pages")
    c.kill(first)
    first.wait(10)
    port = free_port()
    c.worker("--queues", "backfill", "--workers", "1", "--metrics-port", str(port))

    def finished():
        try:
            got = _scrape(port)
        except OSError:
            return None
        done = got.get(("nexus_operation_duration_seconds_count",
                        (("operation", "backfill"), ("outcome", "succeeded"),
                         ("provider", "sim"))), 0)
        return got if done else None

    got = wait(finished, timeout=90, what="the recovered backfill to finish")
    assert got[("nexus_jobs_recovered_total", (("queue", "integration-backfill"),))] == 1
    # the new worker counted only the pages it committed itself
    pages = got[("nexus_sync_pages_total", (("operation", "backfill"), ("provider", "sim")))]
    assert 1 <= pages <= 15
    assert c.store.list_runs("t1", "i1")[0].status == "succeeded"
