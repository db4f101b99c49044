"""Periodic-delta fan-out for 100,000 active installations: scheduler time, and the spread.

    python benchmarks/cron_tick.py                       # 100,000 installations, SQLite, 3 runs
    python benchmarks/cron_tick.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test
    python benchmarks/cron_tick.py --quick               # 20,000 installations, 2 runs

One slot's fan-out (nexus_core.sync.cron.fan_out): the active installations read in keyset
batches from the store, one pipelined Lua claim per installation and one MULTI/EXEC of RQ
``schedule_job`` calls per batch, on a throwaway redis-server. Prints the scheduler's wall and
CPU time per slot (target <= 15 s), its peak RSS growth, and how the deltas are spread over the
interval: the share of each tenth of the interval (uniform: 10%) and the busiest second against
the mean (a thundering herd would put everything in the first second). Redis is flushed between
runs; the installations stay.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402


def _fill(store, n: int) -> None:
    import sqlalchemy as sa

    from nexus_core.models import utcnow
    from nexus_core.store import schema

    now = utcnow()
    with store.engine.begin() as conn:
        conn.execute(sa.delete(schema.installations))
        for first in range(0, n, 10_000):
            conn.execute(sa.insert(schema.installations), [
                {"tenant_id": f"tenant-{i % 1000:04d}", "install_id": f"install-{i:06d}",
                 "provider": "example", "account_id": str(i), "status": "active",
                 "config": "{}", "created_at": now, "updated_at": now}
                for i in range(first, min(n, first + 10_000))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--installations", "-n", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--interval", type=int, default=300)
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = args.installations or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (2 if args.quick else 3)

    import redis as redis_lib

    from nexus_core import queues
    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.store import Store
    from nexus_core.sync import SyncOptions
    from nexus_core.sync.cron import fan_out
    from nexus_core.testing import RedisServer

    tmp = tempfile.mkdtemp(prefix="nexus-bench-cron-")
    url = args.db or f"sqlite:///{tmp}/bench.db"
    store = Store.from_url(url, KeyRing.from_string(generate_key()))
    started = time.perf_counter()
    _fill(store, n)
    print(f"{n} active installations in {url.split('://')[0]} "
          f"(filled in {time.perf_counter() - started:.1f} s); interval {args.interval} s")
    wall, cpu, rss, tenth_max, tenth_min, peak_ratio = [], [], [], [], [], []
    with RedisServer() as server:
        client = redis_lib.Redis.from_url(server.url)
        for _ in range(repeat):
            client.flushdb()
            slot = int(time.time() // args.interval) + 1
            start = slot * args.interval
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0, c0 = time.perf_counter(), time.process_time()
            out = fan_out(client, store, slot, interval=args.interval, opts=SyncOptions(),
                          now=start)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            rss.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
            assert len(out.jobs) == n, (len(out.jobs), out)
            registry = queues.queue(queues.DELTA, client).scheduled_job_registry
            offsets = [score - start for _m, score in
                       client.zrange(registry.key, 0, -1, withscores=True)]
            offsets += [0.0] * queues.queue(queues.DELTA, client).count  # due at once
            assert len(offsets) == n
            tenths = [0] * 10
            per_second: dict[int, int] = {}
            for o in offsets:
                tenths[min(9, int(o / args.interval * 10))] += 1
                per_second[int(o)] = per_second.get(int(o), 0) + 1
            tenth_max.append(100 * max(tenths) / n)
            tenth_min.append(100 * min(tenths) / n)
            peak_ratio.append(max(per_second.values()) / (n / args.interval))
        client.close()
    store.close()
    print(f"one slot's fan-out, {repeat} runs")
    w = report("  scheduler wall time (s, target <= 15)", wall)
    c = report("  scheduler CPU time (s)", cpu)
    report("  peak RSS growth (MB)", rss)
    report("  largest tenth of the interval (% of deltas; uniform 10)", tenth_max)
    report("  smallest tenth of the interval (% of deltas; uniform 10)", tenth_min)
    report("  busiest second / mean second", peak_ratio)
    verdict = "meets" if w <= 15 else "MISSES"
    print(f"RESULT cron_tick_seconds={w:.2f} cpu_seconds={c:.2f} "
          f"busiest_second_ratio={statistics.median(peak_ratio):.2f} ({verdict} the 15 s target)")


if __name__ == "__main__":
    main()
