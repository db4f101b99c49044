"""The hand-written baselines of benchmarks/job_overhead.py: what a competent user would write
with RQ, requests and sqlite3 alone, and the RQ worker that runs them (it imports this module
before forking, as `rq worker` with a preloaded job module would).

    python benchmarks/_handwritten.py QUEUE [--no-fork]     # burst worker, JSON serializer
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys

import requests

from nexus_core.models import WebhookEvent

_session = requests.Session()  # module level: reused by every job of a --no-fork worker


def sink(events: list) -> None:
    """The no-op sink."""


def webhook(body: str) -> int:
    """Parse the delivery and hand its events to the sink (the same events the benchmark
    provider's ``handle_webhook`` builds)."""
    events = [WebhookEvent(id=str(e["eventId"]), type=e["subscriptionType"], provider="bench",
                           payload=e) for e in json.loads(body)]
    sink(events)
    return len(events)


def delta(url: str, db: str, cursor_id: str) -> str:
    """GET the changes since the stored cursor (an empty page) and UPDATE the cursor row."""
    with sqlite3.connect(db, timeout=30) as conn:
        (cursor,) = conn.execute("SELECT cursor FROM cursors WHERE id = ?", (cursor_id,)).fetchone()
        data = _session.get(f"{url}/changes", params={"cursor": cursor}, timeout=(5, 30)).json()
        sink(data["results"])
        conn.execute("UPDATE cursors SET cursor = ? WHERE id = ?", (data["next"], cursor_id))
    return data["next"]


def backfill(url: str) -> int:
    """Read every page of the paged server and hand each to the sink."""
    cursor, records = "0", 0
    while cursor is not None:
        data = _session.get(f"{url}/records", params={"cursor": cursor, "limit": 100},
                            timeout=(10, 30)).json()
        sink(data["results"])
        records += len(data["results"])
        cursor = data["next"]
    return records


#: The properties nexus-hubspot reads for contacts by default (the same work on both sides).
HUBSPOT_PROPERTIES = ("email,firstname,lastname,phone,company,lifecyclestage,lastmodifieddate,"
                      "hs_object_id")


def hubspot_backfill(url: str, token: str) -> int:
    """Every contact of a HubSpot portal: the list API, following ``paging.next.after``, each
    page to the sink (benchmarks/hubspot_backfill.py)."""
    headers = {"Authorization": f"Bearer {token}"}
    after, records = None, 0
    while True:
        params = {"limit": 100, "properties": HUBSPOT_PROPERTIES}
        if after:
            params["after"] = after
        resp = _session.get(f"{url}/crm/v3/objects/contacts", params=params, headers=headers,
                            timeout=(10, 30))
        resp.raise_for_status()
        data = resp.json()
        sink(data["results"])
        records += len(data["results"])
        after = ((data.get("paging") or {}).get("next") or {}).get("after")
        if not after:
            return records


def create_cursors(db: str, ids: list[str]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")  # as the engine's store file (a file property)
        conn.execute("CREATE TABLE IF NOT EXISTS cursors (id TEXT PRIMARY KEY, cursor TEXT)")
        conn.executemany("INSERT OR REPLACE INTO cursors VALUES (?, '0')", [(i,) for i in ids])


def main() -> None:
    import redis
    from rq import SimpleWorker, Worker
    from rq.serializers import JSONSerializer

    queue, no_fork = sys.argv[1], "--no-fork" in sys.argv
    cls = SimpleWorker if no_fork else Worker
    cls([queue], connection=redis.Redis.from_url(os.environ["REDIS_URL"]),
        serializer=JSONSerializer).work(burst=True, logging_level="WARNING")


if __name__ == "__main__":
    main()
