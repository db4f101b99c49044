"""Launch the real `nexus` CLI in a subprocess with the test provider plugin registered.

Usage: python tests/reliability/worker_main.py run-worker --queues backfill ...

Registers the simulator provider (``sim``) and, with RELIABILITY_SINK_FILE set, a file sink that
can fail once on a given page (RELIABILITY_FAIL_RECORD: the id of that page's first record;
RELIABILITY_FAIL_MARKER: a file that records that it has failed already, across processes).
With RELIABILITY_BACKFILL_KEYERROR set, every backfill raises KeyError (a plugin bug).
"""

import json
import os
import sys
from pathlib import Path

from nexus_core import hookimpl
from nexus_core.plugins import load_plugins
from nexus_core.testing.simulator import paged_provider


class FileSink:
    def __init__(self, path):
        self.path = Path(path)

    @hookimpl
    def process_records(self, ctx, stream, records):
        fail_id = os.environ.get("RELIABILITY_FAIL_RECORD")
        marker = Path(os.environ.get("RELIABILITY_FAIL_MARKER", "/nonexistent/marker"))
        if fail_id and records and records[0].id == fail_id and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError(f"sink unavailable while writing the page starting at {fail_id}")
        with open(self.path, "a") as fh:
            fh.write("".join(json.dumps({"id": r.id}) + "\n" for r in records))
            fh.flush()


class BuggyBackfill:
    @hookimpl(wrapper=True)
    def backfill(self, ctx, stream, cursor):
        raise KeyError(os.environ["RELIABILITY_BACKFILL_KEYERROR"])
        yield  # a wrapper is a generator


def main():
    registry = load_plugins()
    registry.register(paged_provider(), "sim")
    if os.environ.get("RELIABILITY_SINK_FILE"):
        registry.register(FileSink(os.environ["RELIABILITY_SINK_FILE"]), "file-sink")
    if os.environ.get("RELIABILITY_BACKFILL_KEYERROR"):
        registry.register(BuggyBackfill(), "buggy-backfill")
    from nexus_core.cli import main as cli

    cli(sys.argv[1:])


if __name__ == "__main__":
    main()
