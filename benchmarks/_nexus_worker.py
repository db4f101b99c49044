"""`nexus` with the benchmark plugins registered (as installed plugins would be):

* ``sim`` — the simulator's paged provider (deltas read ``/changes`` through ``ctx.http``);
* ``bench-webhooks`` — its ``handle_webhook`` parses a HubSpot-style delivery into the same
  ``WebhookEvent`` objects the hand-written baseline builds (benchmarks/_handwritten.py).

    python benchmarks/_nexus_worker.py run-worker --burst -q webhook [--no-fork]
"""

from __future__ import annotations

import json
import sys

from nexus_core import WebhookEvent, hookimpl
from nexus_core.plugins import load_plugins
from nexus_core.testing.simulator import paged_provider


class BenchWebhooks:
    @hookimpl
    def handle_webhook(self, ctx, request):
        return [WebhookEvent(id=str(e["eventId"]), type=e["subscriptionType"], provider="bench",
                             payload=e) for e in json.loads(request.body)]


def main() -> None:
    registry = load_plugins()
    registry.register(paged_provider(), "sim")
    registry.register(BenchWebhooks(), "bench-webhooks")
    from nexus_core.cli import main as cli

    cli(sys.argv[1:])


if __name__ == "__main__":
    main()
