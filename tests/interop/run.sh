#!/usr/bin/env bash
# Interop check (run by .ci/run): a real run against the simulator, with
# injected failures, exported as imagefolder and WebDataset and reported as
# JUnit; then the real Hugging Face `datasets`, `webdataset` and
# `junitparser` (pinned in requirements.txt, in a venv under target/) load
# them and compare every row with runs.csv. The venv is reused while
# requirements.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=target/interop-venv
REQ=tests/interop/requirements.txt
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/.requirements"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQ"
  cp "$REQ" "$VENV/.requirements"
fi

# The binary cargo built, wherever its target folder is (CARGO_TARGET_DIR,
# build.target-dir in a cargo config): cargo says where it put it.
BIN="$(cargo build --locked --quiet --bin comfy-batch --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "comfy-batch" and m.get("executable"):
        print(m["executable"])
')"
[ -x "$BIN" ] || { echo "interop: cargo named no comfy-batch binary (got '$BIN')" >&2; exit 1; }
WORK="$(mktemp -d)"
SIM_PID=""
cleanup() {
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" sim --listen 127.0.0.1:0 --fail-rate 0.25 --seed 7 --dir "$WORK/sim" >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
# A loaded CI machine can take long to start a process: wait up to
# INTEROP_SIM_WAIT seconds (default 120), unless the simulator exits.
WAIT="${INTEROP_SIM_WAIT:-120}"
deadline=$((SECONDS + WAIT))
while ! grep -q '^listening on ' "$WORK/sim.out" 2>/dev/null; do
  if ! kill -0 "$SIM_PID" 2>/dev/null; then
    set +e; wait "$SIM_PID"; code=$?; set -e
    SIM_PID=""
    echo "interop: the simulator ($BIN) exited with status $code before listening:" >&2
    tail -n 20 "$WORK/sim.err" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "interop: the simulator ($BIN) did not say where it listens within ${WAIT} s (set INTEROP_SIM_WAIT to wait longer); its stderr:" >&2
    tail -n 20 "$WORK/sim.err" >&2
    exit 1
  fi
  sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$WORK/sim.out")"

mkdir -p "$WORK/project/workflows"
cp tests/fixtures/run/t2i.json "$WORK/project/workflows/"
cat >"$WORK/project/sweep.yaml" <<'YAML'
version: 1
workflows:
  t2i: workflows/t2i.json
jobs:
  - name: fox
    workflow: t2i
    matrix:
      prompt: ["a red fox in the snow", "a lighthouse at dusk, \"quoted\", and a comma"]
      cfg: [5, 6.5]
      sampler: [euler, dpmpp_2m]
    seeds: [1, 2]
    set:
      width: 64
      height: 64
  - name: owl
    workflow: t2i
    matrix:
      prompt: ["an owl"]
      steps: [2, 3]
    seeds: {count: 2, base: 42}
    set:
      width: 48
      height: 32
YAML

cd "$WORK/project"
set +e
"$BIN" run sweep.yaml --server "$URL" --output out --junit junit.xml -q
code=$?
set -e
# 0 or 1 (some injected failures); anything else is a real problem.
[ "$code" -le 1 ] || { echo "interop: run exited $code" >&2; exit 1; }
"$BIN" export out --format imagefolder --to imagefolder -q
"$BIN" export out --format webdataset --to webdataset --shard-size 5 -q

# Every output kind with a text caption (PreviewAny): the caption, longer
# than runs.csv's one-line text cell and with a newline, is each sample's
# text in both exports.
cp "$OLDPWD/tests/fixtures/run/kinds.json" workflows/
CAPTION="$(printf 'a fox in the snow, %.0s' $(seq 1 20))"
cat >kinds.yaml <<YAML
version: 1
workflows:
  kinds: workflows/kinds.json
jobs:
  - name: kinds
    workflow: kinds
    matrix:
      "Caption.value": ["${CAPTION}\\nsecond line", "short, \\"quoted\\""]
YAML
# The simulator fails a quarter of the prompts: run again (a resume) until
# both jobs are ok.
for _ in 1 2 3 4 5 6 7 8; do
  "$BIN" run kinds.yaml --server "$URL" --output kinds-out -q && break
done
"$BIN" export kinds-out --format imagefolder --to kinds-imagefolder -q
"$BIN" export kinds-out --format webdataset --to kinds-webdataset -q

export HF_HOME="$WORK/hf" HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
"$OLDPWD/$VENV/bin/python" "$OLDPWD/tests/interop/check.py" out imagefolder webdataset junit.xml \
  kinds-out kinds-imagefolder kinds-webdataset
