"""Webhook routing with 100,000 installations vs 100: the ingress's deliveries/s, same route.

In-process ``WebhookIngress.ingest`` (verify, parse, route by the HubSpot-style ``portalId``,
dedupe, enqueue on a throwaway redis-server) of signed 100-event deliveries addressed to 100
accounts that exist in both stores: one store holds those 100 installations, the other the same
100 among 100,000. The route cache is off (``route_cache_ttl=0``), so every delivery looks its
account up in the store (the ``(provider, account_id)`` index); a second pass with the default
cache is printed for information. Rounds interleave the stores. Target: >= 0.9.

    python benchmarks/webhook_routing.py [--deliveries 2000] [--repeat 3] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import webhook_ingress as wi  # noqa: E402 - the same deliveries and provider
from _common import report  # noqa: E402

ACCOUNTS = [str(5_000_000 + i) for i in range(100)]


def _fill(store, total: int) -> None:
    """``total`` installations; the 100 routed accounts are spread among them."""
    import sqlalchemy as sa

    from nexus_core.models import utcnow
    from nexus_core.store import schema

    now = utcnow()
    step = max(1, total // len(ACCOUNTS))
    with store.engine.begin() as conn:
        for first in range(0, total, 10_000):
            conn.execute(sa.insert(schema.installations), [
                {"tenant_id": f"tenant-{i % 997:04d}", "install_id": f"install-{i:06d}",
                 "provider": "hubspot-bench",
                 "account_id": ACCOUNTS[i // step] if i % step == 0 and i // step < 100
                 else str(i), "status": "active", "config": "{}", "created_at": now,
                 "updated_at": now}
                for i in range(first, min(total, first + 10_000))])


def _deliveries(n: int, run: int) -> list[tuple[bytes, dict[str, str]]]:
    out = []
    for seq in range(n):
        body = wi.TEMPLATE.replace(b"9876543210", str(run * 10_000_000 + seq + 1).encode())
        body = body.replace(b"1234567", ACCOUNTS[seq % len(ACCOUNTS)].encode())
        out.append((body, wi._headers(body)))
    return out


def _rate(ingress, deliveries) -> float:
    from nexus_core.models import WebhookRequest

    started = time.perf_counter()
    for body, headers in deliveries:
        result = ingress.ingest("hubspot-bench", WebhookRequest(
            "POST", wi.PUBLIC_URL + wi.PATH, headers, body))
        assert result.jobs, result
    return len(deliveries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="PostgreSQL URL prefix (default: SQLite)")
    args = parser.parse_args()
    import redis as redis_lib

    from nexus_core.config import load_settings
    from nexus_core.crypto import KeyRing, generate_key
    from nexus_core.plugins import PluginRegistry
    from nexus_core.store import Store
    from nexus_core.testing import RedisServer
    from nexus_core.webhooks import IngressOptions, WebhookIngress

    tmp = tempfile.mkdtemp(prefix="nexus-bench-routing-")
    keyring = KeyRing.from_string(generate_key())
    stores = {}
    for name, total in (("small", 100), ("large", args.large)):
        url = f"sqlite:///{tmp}/{name}.db"
        stores[name] = Store.from_url(url, keyring)
        _fill(stores[name], total)
    registry = PluginRegistry()
    registry.register(wi._bench_provider(), "hubspot-bench")
    os.environ["BENCH_WEBHOOK_SECRET"] = wi.SECRET
    rates: dict[str, list[float]] = {"small": [], "large": [], "small-cached": [],
                                     "large-cached": []}
    ratios, cached_ratios = [], []
    with RedisServer() as server:
        client = redis_lib.Redis.from_url(server.url)
        settings = load_settings(environ={"BENCH_WEBHOOK_SECRET": wi.SECRET,
                                          "NEXUS_PUBLIC_URL": wi.PUBLIC_URL}, env_file=None)
        for r in range(args.repeat):
            for cached in (False, True):
                order = ("small", "large") if r % 2 == 0 else ("large", "small")
                for name in order:
                    client.flushdb()
                    ingress = WebhookIngress(
                        registry=registry, redis=client, settings=settings, store=stores[name],
                        options=IngressOptions(public_url=wi.PUBLIC_URL,
                                               route_cache_ttl=30.0 if cached else 0.0))
                    key = name + ("-cached" if cached else "")
                    rates[key].append(_rate(ingress, _deliveries(args.deliveries, r * 2 + 1)))
                suffix = "-cached" if cached else ""
                (cached_ratios if cached else ratios).append(
                    rates["large" + suffix][-1] / rates["small" + suffix][-1])
            print(f"round {r + 1}: {rates['small'][-1]:.0f} vs {rates['large'][-1]:.0f} "
                  f"deliveries/s (store lookups), {rates['small-cached'][-1]:.0f} vs "
                  f"{rates['large-cached'][-1]:.0f} (route cache)", flush=True)
        client.close()
    for store in stores.values():
        store.close()
    print(f"webhook routing, {args.deliveries} deliveries to 100 accounts, {args.repeat} rounds")
    report("  100 installations (deliveries/s)", rates["small"])
    report(f"  {args.large} installations (deliveries/s)", rates["large"])
    ratio = report("  ratio large/small, every delivery looked up (target >= 0.9)", ratios)
    report("  ratio large/small, with the route cache (information)", cached_ratios)
    print(f"RESULT routing_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
