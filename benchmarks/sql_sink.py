"""SQL sink rows/s vs a hand-written `executemany` upsert of the same pages (same table, same
conflict rule, one transaction per page), on SQLite and PostgreSQL, A/B interleaved.

    python benchmarks/sql_sink.py [--quick] [--postgres URL]

Prints per round the rows/s of both and their ratio, then the medians. The bare limit (the
same INSERTs without the conflict rule into an empty table) is shown for information.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

sys.path.insert(0, os.path.dirname(__file__))

from nexus_core.models import ConnectorContext, Record  # noqa: E402
from nexus_core.sinks.sql import SqlSink, record_table  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CTX = ConnectorContext(tenant_id="tenant-1", install_id="main", provider="hubspot")


def pages(n_pages: int, size: int, version: int) -> list[list[Record]]:
    return [[Record(id=str(p * size + i), stream="contacts",
                    data={"id": str(p * size + i), "email": f"u{i}@example.com",
                          "firstname": "Ada", "lastname": f"Test{i}", "version": version},
                    updated_at=T0 + timedelta(minutes=version))
             for i in range(size)] for p in range(n_pages)]


UPSERT = {
    "sqlite": ("INSERT INTO nexus_records (tenant_id, provider, stream, record_id, install_id, "
               "data, updated_at, deleted_at, synced_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?) "
               "ON CONFLICT (tenant_id, provider, stream, record_id) DO UPDATE SET "
               "install_id = excluded.install_id, data = excluded.data, "
               "updated_at = excluded.updated_at, deleted_at = NULL, "
               "synced_at = excluded.synced_at "
               "WHERE excluded.updated_at >= nexus_records.updated_at"),
    "postgresql": ("INSERT INTO nexus_records (tenant_id, provider, stream, record_id, "
                   "install_id, data, updated_at, deleted_at, synced_at) VALUES "
                   "(%s, %s, %s, %s, %s, %s, %s, NULL, %s) "
                   "ON CONFLICT (tenant_id, provider, stream, record_id) DO UPDATE SET "
                   "install_id = excluded.install_id, data = excluded.data, "
                   "updated_at = excluded.updated_at, deleted_at = NULL, "
                   "synced_at = excluded.synced_at "
                   "WHERE excluded.updated_at >= nexus_records.updated_at"),
}


def handwritten(engine: sa.Engine, batches: list[list[Record]]) -> None:
    """What a competent user writes: DB-API executemany of one upsert per page."""
    sql = UPSERT[engine.dialect.name]
    now = datetime.now(UTC)
    for page in batches:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql, [
                (CTX.tenant_id, CTX.provider, "contacts", r.id, CTX.install_id,
                 json.dumps(r.data), r.updated_at, now) for r in page])


def ours(sink: SqlSink, batches: list[list[Record]]) -> None:
    for page in batches:
        sink.process_records(CTX, "contacts", page)


def clear(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(record_table))


def run(url: str, rounds: int, n_pages: int, size: int) -> float:
    sink = SqlSink(url)
    engine = sink.engine  # migrated; both sides use the same engine and table
    rows = n_pages * size
    ratios = []
    for r in range(rounds):
        results = {}
        for name in (("ours", "hand") if r % 2 == 0 else ("hand", "ours")):
            clear(engine)
            first = pages(n_pages, size, 1)
            second = pages(n_pages, size, 2)  # updates of every row
            start = time.perf_counter()
            if name == "ours":
                ours(sink, first)
                ours(sink, second)
            else:
                handwritten(engine, first)
                handwritten(engine, second)
            results[name] = 2 * rows / (time.perf_counter() - start)
        ratio = results["ours"] / results["hand"]
        ratios.append(ratio)
        print(f"  round {r + 1}: nexus {results['ours']:9.0f} rows/s  hand-written "
              f"{results['hand']:9.0f} rows/s  ratio {ratio:.3f}", flush=True)
    med = statistics.median(ratios)
    print(f"  {engine.dialect.name}: median ratio {med:.3f} "
          f"(raw {', '.join(f'{x:.3f}' for x in ratios)}); target >= 0.9", flush=True)
    sink.close()
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres", default=os.environ.get(
        "NEXUS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    rounds, n_pages, size = (3, 10, 100) if args.quick else (5, 50, 200)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"SQLite: {n_pages} pages x {size} rows, inserted then updated, {rounds} rounds")
        run(f"sqlite:///{tmp}/sink.db", rounds, n_pages, size)
    try:
        probe = sa.create_engine(args.postgres)
        with probe.connect() as conn:
            conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS nexus_bench_sink"))
            conn.commit()
        probe.dispose()
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL skipped: {str(exc.orig).splitlines()[0]}")
        return
    url = sa.make_url(args.postgres).update_query_dict(
        {"options": "-csearch_path=nexus_bench_sink"}).render_as_string(hide_password=False)
    print(f"PostgreSQL: {n_pages} pages x {size} rows, inserted then updated, {rounds} rounds")
    try:
        run(url, rounds, n_pages, size)
    finally:
        engine = sa.create_engine(args.postgres)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA nexus_bench_sink CASCADE"))
        engine.dispose()


if __name__ == "__main__":
    main()
