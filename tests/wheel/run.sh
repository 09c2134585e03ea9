#!/usr/bin/env bash
# Wheel check (run by .ci/run): the way a Python user installs comfy-batch.
# pip builds the wheel from a fresh clone of this checkout's HEAD (the
# `git+` form of the README's Install section) into a new venv; the
# installed binary reports its version and commit, writes the starter
# project (`init`) and runs its example against the embedded simulator.
# The build is a debug one into this checkout's target folder (maturin's
# MATURIN_PEP517_ARGS), so it reuses the dependencies the tests built: a
# release build costs minutes on a small CI machine. The wheel itself is the
# same either way but for the optimisation.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The target folder cargo uses here (CARGO_TARGET_DIR, a config's
# build.target-dir, or target/).
TARGET_DIR="$(cargo metadata --locked --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
VENV=target/wheel-venv
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$VENV"
python3 -m venv "$VENV"

start=$SECONDS
CARGO_TARGET_DIR="$TARGET_DIR" MATURIN_PEP517_ARGS="--profile dev" \
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input --no-cache-dir \
  "git+file://$PWD"
echo "wheel: built and installed in $((SECONDS - start)) s"

BIN="$PWD/$VENV/bin/comfy-batch"
[ -x "$BIN" ] || { echo "wheel: the venv has no comfy-batch" >&2; exit 1; }
head="$(git rev-parse HEAD)"
expected="comfy-batch $(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1) (commit ${head:0:12})"
version="$("$BIN" --version)"
[ "$version" = "$expected" ] || { echo "wheel: --version says '$version', not '$expected'" >&2; exit 1; }

cd "$WORK"
"$BIN" init starter -q
"$BIN" run starter/jobs/fox-sweep.yaml --sim -q
python3 - starter/out/fox-sweep/runs.csv <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
bad = [r["job_id"] for r in rows if r["status"] != "ok"]
if len(rows) != 26 or bad:
    sys.exit(f"wheel: {len(rows)} rows, not ok: {bad}")
PY
echo "wheel: $version: init + run --sim: 26 jobs ok"
