"""One worker process of the multi-process rate-limit tests (run as a script, not collected).

    python storm_worker.py SPEC_JSON

SPEC: redis_url, base_url, install_id, account_id, rate, burst, start_at (wall clock: all
workers begin together), then either ``requests`` (a count) or ``duration`` (seconds).
Prints one JSON line: {"ok": n, "rate_limited": n, "errors": [...]}.
"""

from __future__ import annotations

import json
import sys
import time

import redis
from loguru import logger

from nexus_core.config import load_settings
from nexus_core.errors import ProviderError, RateLimited
from nexus_core.http import ProviderSession
from nexus_core.models import Provider, RateLimits, RetryConfig, Timeouts


def main() -> None:
    spec = json.loads(sys.argv[1])
    logger.remove()
    provider = Provider(
        id="acme", name="Acme CRM", version="1.0", base_url_env="ACME_BASE_URL",
        rate_limits=RateLimits(spec["rate"], spec["burst"]),
        timeouts=Timeouts(connect=2, read=5),
        retry=RetryConfig(max_retries=3, max_backoff=0.5),
    )
    settings = load_settings(
        environ={"ACME_BASE_URL": spec["base_url"], "NEXUS_HTTP_BACKOFF_BASE": "0.05"},
        env_file=None,
    )
    client = redis.Redis.from_url(spec["redis_url"])
    result = {"ok": 0, "rate_limited": 0, "errors": []}
    with ProviderSession(
        provider, tenant_id="t1", install_id=spec["install_id"], account_id=spec["account_id"],
        redis=client, settings=settings,
    ) as session:
        time.sleep(max(0.0, spec["start_at"] - time.time()))
        deadline = time.monotonic() + spec.get("duration", 1e9)
        remaining = spec.get("requests", 1 << 30)
        while remaining > 0 and time.monotonic() < deadline:
            try:
                session.get("/items")
                result["ok"] += 1
                remaining -= 1
            except RateLimited as exc:
                result["rate_limited"] += 1
                time.sleep(min(exc.retry_after, 0.5))
            except ProviderError as exc:
                result["errors"].append(str(exc))
                remaining -= 1
    client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
