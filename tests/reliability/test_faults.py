"""Faults with real processes: a worker SIGKILLed mid-backfill, Redis restarted under queued
jobs, a sink failing on page 7."""

import time

import pytest

pytestmark = pytest.mark.slow


def test_backfill_resumes_from_last_checkpoint_after_worker_kill(make_cluster, redis_url, wait):
    c = make_cluster(redis_url, total=5000, page_size=100)
    for page in range(1, 51):
        c.sim.slow_page(page, 0.04)
    c.install()
    first = c.worker("--queues", "backfill")
    c.service().start_backfill("sim", "t1", "i1")
    seqs = []

    def seq():
        s = c.store.get_checkpoint("t1", "i1", "records", "backfill").seq
        seqs.append(s)
        return s

    wait(lambda: seq() >= 20, timeout=60, what="20 committed pages")
    c.kill(first)  # SIGKILL the worker, its work-horse and its scheduler: no cleanup at all
    first.wait(10)
    killed_at = seq()
    assert killed_at < 50
    started = time.monotonic()
    c.worker("--queues", "backfill")
    wait(lambda: seq() == 50 and c.store.list_runs("t1", "i1")[0].status == "succeeded",
             timeout=60, what="the backfill to complete on the new worker")
    recovered_in = time.monotonic() - started
    delivered = c.delivered(c.tmp / "sink" / "t1" / "sim" / "streams" / "records.jsonl")
    assert len(delivered) == 5000  # every record id reached the sink
    twice = [i for i, n in delivered.items() if n > 1]
    assert len(twice) <= 100 and max(delivered.values()) <= 2  # at most one page twice
    assert seqs == sorted(seqs)  # the cursor never went backwards
    assert "recovered abandoned job" in c.logs()
    print(f"\nkilled after page {killed_at}; new worker finished the backfill in "
          f"{recovered_in:.1f} s; pages delivered twice: {len(twice) // 100}")


def test_worker_reconnects_after_redis_restart_and_every_job_completes(make_cluster, wait):
    from nexus_core.testing import RedisServer

    with RedisServer(appendonly=True) as server:
        c = make_cluster(server.url, total=1000, page_size=100)
        for page in range(1, 11):
            c.sim.slow_page(page, 0.05)
        ids = [f"i{n}" for n in range(8)]
        for i in ids:
            c.install(install=i)
        service = c.service()
        for i in ids:
            service.start_backfill("sim", "t1", i)
        c.redis.close()
        c.worker("--queues", "backfill", NEXUS_BACKFILL_TENANT_CONCURRENCY="8")
        wait(lambda: any(r.status == "succeeded" for r in c.store.list_runs("t1")),
             timeout=60, what="a first completed backfill")
        wait(lambda: any(0 < c.store.get_checkpoint("t1", i, "records", "backfill").seq < 8
                         for i in ids), what="a backfill in the middle of its pages")
        server.restart()  # mid-job; every queued job survives in the AOF
        wait(lambda: len(c.store.list_runs("t1")) == 8 and all(
            r.status == "succeeded" for r in c.store.list_runs("t1")), timeout=90,
            what="every backfill to complete after the restart")
        for i in ids:
            assert c.store.get_checkpoint("t1", i, "records", "backfill").seq == 10
        delivered = c.delivered(c.tmp / "sink" / "t1" / "sim" / "streams" / "records.jsonl")
        assert len(delivered) == 1000 and sum(delivered.values()) >= 8000


def test_sink_failure_on_page_7_is_retried_without_redelivering_earlier_pages(make_cluster,
                                                                               redis_url):
    c = make_cluster(redis_url, total=1000, page_size=100, NEXUS_SINK="null")
    sink_file = c.tmp / "file-sink.jsonl"
    c.install()
    c.service().start_backfill("sim", "t1", "i1")
    proc = c.worker("--queues", "backfill", "--burst", RELIABILITY_SINK_FILE=str(sink_file),
                    RELIABILITY_FAIL_RECORD="rec-0000600",
                    RELIABILITY_FAIL_MARKER=str(c.tmp / "failed-once"))
    assert proc.wait(60) == 0
    assert (c.tmp / "failed-once").exists()
    delivered = c.delivered(sink_file)
    assert len(delivered) == 1000 and set(delivered.values()) == {1}
    assert c.sim.hits[7] == 2 and all(c.sim.hits[p] == 1 for p in range(1, 7))
    run = c.store.list_runs("t1", "i1")[0]
    assert (run.status, run.pages, run.records) == ("succeeded", 10, 1000)
    assert "sink unavailable" in c.logs()


def test_sigterm_finishes_the_page_commits_and_leaves_a_continuation(make_cluster, redis_url,
                                                                     wait):
    import json
    import os
    import signal
    import subprocess
    import sys

    from nexus_core import queues

    c = make_cluster(redis_url, total=3000, page_size=100)
    for page in range(1, 31):
        c.sim.slow_page(page, 0.05)
    c.install()
    proc = c.worker("--queues", "backfill")
    job_id = c.service().start_backfill("sim", "t1", "i1")
    wait(lambda: c.store.get_checkpoint("t1", "i1", "records", "backfill").seq >= 5,
         what="5 committed pages")
    os.kill(proc.pid, signal.SIGTERM)  # the worker alone, as a supervisor would
    assert proc.wait(30) == 0
    stopped_at = c.store.get_checkpoint("t1", "i1", "records", "backfill").seq
    assert 5 <= stopped_at < 30
    q = queues.queue(queues.BACKFILL, c.redis)
    assert q.finished_job_registry.get_job_ids() == [job_id]
    continuation = q.job_ids
    assert continuation == [job_id.rsplit("__", 1)[0] + "__1"]
    delivered = c.delivered(c.tmp / "sink" / "t1" / "sim" / "streams" / "records.jsonl")
    assert len(delivered) == stopped_at * 100 and set(delivered.values()) == {1}

    # `nexus sync backfill --wait` follows the run across the continuation to the end
    c.worker("--queues", "backfill")
    out = subprocess.run(
        [sys.executable, str(c.tmp.parent / "x") if False else
         str(__import__("pathlib").Path(__file__).with_name("worker_main.py")),
         "sync", "backfill", "sim", "--tenant", "t1", "--install", "i1", "--wait", "--json"],
        env={**os.environ, **c.env}, capture_output=True, text=True, timeout=60, cwd=c.tmp)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded" and result["records"] == 3000
    assert result["pages"] == 30
    delivered = c.delivered(c.tmp / "sink" / "t1" / "sim" / "streams" / "records.jsonl")
    assert len(delivered) == 3000 and set(delivered.values()) == {1}


def test_a_plugin_bug_logs_its_traceback_once_then_one_line_per_retry(make_cluster, redis_url):
    """A KeyError in a plugin's backfill, retried 3 times across work-horses: the worker's
    output holds one traceback, then one line per retry."""
    from nexus_core import queues

    c = make_cluster(redis_url, total=100, page_size=100, INTEGRATION_MAX_RETRIES="3")
    c.install()
    job_id = c.service().start_backfill("sim", "t1", "i1")
    proc = c.worker("--queues", "backfill", "--workers", "1", "--burst",
                    RELIABILITY_BACKFILL_KEYERROR="no-such-field")
    assert proc.wait(60) == 0
    logs = c.logs()
    assert queues.queue(queues.BACKFILL, c.redis).failed_job_registry.get_job_ids() == [job_id]
    assert logs.count("KeyError: 'no-such-field'") >= 4  # four attempts, each reported
    assert logs.count("Traceback (most recent call last)") == 1
    again = [line for line in logs.splitlines() if f"job {job_id} failed again" in line]
    assert len(again) == 3, logs
    assert "attempt 4" in again[-1] and "no retries left" in again[-1]


def test_a_horse_whose_worker_was_killed_stops_at_its_next_page_and_the_job_is_recovered(
        make_cluster, redis_url, wait):
    """The worker keeps its horse's lease: SIGKILL of the worker alone leaves the horse, which
    notices at its next page boundary, exits, and the job is recovered from that page."""
    import os
    import signal
    from pathlib import Path

    from tests.reliability.conftest import descendants

    c = make_cluster(redis_url, total=3000, page_size=100)
    for page in range(1, 31):
        c.sim.slow_page(page, 0.05)
    c.install()
    first = c.worker("--queues", "backfill", "--workers", "1")  # the worker is this process
    c.service().start_backfill("sim", "t1", "i1")
    wait(lambda: c.store.get_checkpoint("t1", "i1", "records", "backfill").seq >= 5,
         what="5 committed pages")

    def stat(pid):  # (state, process group) of a live process, None once it is gone
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (fields[0], int(fields[2])) if fields[0] != "Z" else None

    # RQ puts the work-horse in a process group of its own
    (horse,) = [p for p in descendants(first.pid) if (stat(p) or ("", 0))[1] == p]
    os.kill(first.pid, signal.SIGKILL)  # the worker only: its horse lives on, orphaned
    first.wait(10)
    wait(lambda: stat(horse) is None, timeout=10, what="the orphaned horse to exit")
    stopped_at = c.store.get_checkpoint("t1", "i1", "records", "backfill").seq
    assert stopped_at < 30
    c.worker("--queues", "backfill")
    wait(lambda: c.store.list_runs("t1", "i1")[0].status == "succeeded", timeout=60,
         what="the backfill to complete on a new worker")
    delivered = c.delivered(c.tmp / "sink" / "t1" / "sim" / "streams" / "records.jsonl")
    assert len(delivered) == 3000 and max(delivered.values()) <= 2
    assert sum(n - 1 for n in delivered.values()) <= 100  # at most one page twice
    assert "is gone; stopping here" in c.logs() and "recovered abandoned job" in c.logs()


def test_sync_wait_follows_a_running_worker_without_opening_the_store(make_cluster, redis_url):
    """`nexus sync backfill --wait` against a live worker: the CLI starts the sync and follows
    its progress stream with Redis alone — SQLAlchemy is never imported in the CLI."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    c = make_cluster(redis_url, total=1000, page_size=100)
    c.install()
    c.worker("--queues", "backfill")
    launcher = str(Path(__file__).with_name("worker_main.py"))
    out = subprocess.run(
        [sys.executable, "-X", "importtime", launcher, "sync", "backfill", "sim", "--tenant",
         "t1", "--install", "i1", "--wait", "--json"],
        env={**os.environ, **c.env}, capture_output=True, text=True, timeout=60, cwd=c.tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert (result["status"], result["pages"], result["records"]) == ("succeeded", 10, 1000)
    assert result["run_id"] == c.store.list_runs("t1", "i1")[0].run_id
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")]
    assert "rq" in imported and not any(m.startswith("sqlalchemy") for m in imported)

    bad = subprocess.run(
        [sys.executable, launcher, "sync", "backfill", "sim", "-t", "t1", "-i", "nope", "--wait"],
        env={**os.environ, **c.env}, capture_output=True, text=True, timeout=60, cwd=c.tmp)
    assert bad.returncode == 1 and "not found" in bad.stderr
