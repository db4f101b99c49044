#!/usr/bin/env bash
# `make demo`: the whole flow on this machine, against the synthetic `example` provider:
# install -> backfill on a worker -> a signed webhook through `nexus serve` -> what reached the
# sink. Uses its own throwaway Redis and a SQLite store under .demo/ (REDIS_URL wins if set).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export PATH="$PWD/$BIN:$PATH"
DEMO=.demo
rm -rf "$DEMO" && mkdir -p "$DEMO"
export NEXUS_DATABASE_URL="sqlite:///$PWD/$DEMO/nexus.db" NEXUS_SINK=jsonl NEXUS_SINK_DIR="$DEMO/sink"
export NEXUS_KEY_FILE="$DEMO/encryption.key" LOG_LEVEL=WARNING
export EXAMPLE_WEBHOOK_SECRET="whsec_$(python3 -c 'import base64,os;print(base64.b64encode(os.urandom(24)).decode())')"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null || { echo "make demo needs redis-server (apt-get install -y redis-server) or REDIS_URL"; exit 1; }
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$DEMO" >/dev/null &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installed providers"
nexus providers list

step "Connect tenant 'acme' to the example provider (2,500 records per stream)"
nexus installs add example --tenant acme --install acme-example --account-id acct-1 \
  --config '{"records": 2500, "page_size": 100}'
nexus installs list --tenant acme

step "Backfill every stream on a worker (checkpointed page by page)"
nexus sync backfill example --tenant acme --install acme-example
nexus run-worker --burst --workers 1 --queues integration-backfill 2>/dev/null
nexus runs list --tenant acme

step "A signed webhook through nexus serve (Standard Webhooks signature, verified and routed)"
web_port=$(free_port)
nexus serve --port "$web_port" --workers 1 >"$DEMO/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$web_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
python3 - "$web_port" <<'PY'
import json, os, sys, time, urllib.request
from nexus_core.webhooks import sign_standard_webhooks
port = sys.argv[1]
body = json.dumps([{"id": "evt-1", "type": "widget.updated", "account_id": "acct-1", "object_id": 7}]).encode()
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
