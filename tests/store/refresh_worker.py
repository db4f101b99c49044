"""One worker process of ``test_refresh_race``: it holds an expired token, waits for the start
signal, then asks for fresh credentials and prints what it got as JSON.

Run as a script (a real, separate process): ``python refresh_worker.py '<json args>'``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fakes  # noqa: E402


def main(raw: str) -> None:
    import redis

    from nexus_core import oauth
    from nexus_core.config import load_settings
    from nexus_core.plugins import PluginRegistry
    from nexus_core.store import Store

    args = json.loads(raw)
    settings = load_settings(
        environ=fakes.settings_env(args["token_url"], args["keys"]), env_file=None
    )
    store = Store.from_url(args["db_url"], settings=settings)
    registry = PluginRegistry()
    assert registry.register(fakes.AcmeConnector, "acme").status == "ok"
    client = redis.Redis.from_url(args["redis_url"])
    tenant, install = args["tenant"], args["install"]
    stale = store.get_credentials(tenant, install)
    assert stale is not None and stale.expires_within(0), "the token must start expired"

    Path(args["ready_dir"], str(os.getpid())).touch()
    go = Path(args["go"])
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no start signal within 60 s")
        time.sleep(0.002)

    if args["mode"] == "reactive":  # the provider answered "token expired"
        creds = oauth.refresh_credentials(store, client, registry, tenant, install,
                                          stale=stale, settings=settings)
    else:  # proactive: the token is inside the refresh margin
        creds = oauth.ensure_fresh(store, client, registry, tenant, install, settings=settings)
    print(json.dumps({"pid": os.getpid(), "access_token": creds.access_token,
                      "refresh_token": creds.refresh_token}))
    store.close()
    client.close()


if __name__ == "__main__":
    main(sys.argv[1])
