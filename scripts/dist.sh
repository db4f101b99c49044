#!/usr/bin/env bash
# `make dist`: build nexus-core and every plugin in this tree (wheel + sdist), check them with
# `twine check --strict`, then prove the wheels alone make a working install: a fresh
# virtualenv, just those wheels (their third-party dependencies from the package index),
# `nexus providers list` listing every plugin. Nothing is uploaded.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${DIST_DIR:-dist}
rm -rf "$OUT" build && mkdir -p "$OUT"
venv=$(mktemp -d)
trap 'rm -rf "$venv" build' EXIT

for project in . plugins/nexus-*; do
  echo "dist: building $project"
  "$BIN/python" -m build --outdir "$OUT" "$project" >"$venv.log" 2>&1 \
    || { cat "$venv.log"; exit 1; }
done
rm -f "$venv.log"
ls -1 "$OUT"
"$BIN/python" -m twine check --strict "$OUT"/*

echo "dist: installing only these wheels into a fresh virtualenv"
"$BIN/python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$OUT"/*.whl \
  2> >(grep -v '^WARNING: Location' >&2)  # (a local index mirror's noise)
listed=$(cd "$venv" && env -u NEXUS_LOAD_PLUGINS -u NEXUS_DISABLE_PLUGINS "$venv/bin/nexus" providers list)
echo "$listed"
for plugin in plugins/nexus-*; do
  id=$("$BIN/python" -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["entry-points"]["nexus"])' "$plugin/pyproject.toml")
  grep -q "^$id " <<<"$listed" || { echo "dist: provider $id missing from the fresh install" >&2; exit 1; }
done
echo "dist: ok"
