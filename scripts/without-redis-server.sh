#!/usr/bin/env bash
# Run a command on a PATH from which every redis-server and redis-cli is hidden (the other tools
# stay): proves the command needs no Redis installed (CI runs `make demo` this way too).
set -euo pipefail
shadow=$(mktemp -d)
trap 'rm -rf "$shadow"' EXIT
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -d "$d" ] || continue
  for f in "$d"/*; do
    name=$(basename "$f")
    case "$name" in redis-server|redis-cli|redis-sentinel|redis-check-*) continue ;; esac
    [ -e "$shadow/$name" ] || ln -s "$f" "$shadow/$name"
  done
done
PATH="$shadow" "$@"
