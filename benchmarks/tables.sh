#!/bin/bash
# The paper's Tables I and II under one common budget: every network (Deep Snake, MR, RMR = ERM-1,
# ERM-2, ERM-3, ERMR = ERM-4) trained with the same backbone, input size, data, seed and time budget,
# then `chromoseg benchmark table1/table2` on the M-FISH test split (+ BioImLab binary column).
# A reduced recipe, labelled as such in the tables; the paper trained each network to convergence.
#
# Everything goes into $OUT: data/ (the imports), SEED/VARIANT/ (training runs), table1.md/.json,
# table2.md/.json per seed, versions.txt, logs.
#
# GPU (one H200, <= 9 minutes in all: the variants train concurrently on the one GPU):
#   OUT=$OUT DEVICE=cuda BACKBONE=resnet50 SIZE=640x512 MINUTES=5 PARALLEL=1 bash benchmarks/tables.sh
# CPU (this machine; one variant after another, the two cores are the whole budget):
#   OUT=runs/tables DEVICE=cpu BACKBONE=resnet18 SIZE=480x384 MINUTES=20 EXTRA="--compact" bash benchmarks/tables.sh
# Tiny check of the script itself (CPU, about 10 minutes):
#   OUT=/tmp/tables DEVICE=cpu BACKBONE=resnet18 SIZE=256x320 MINUTES=0.3 EXTRA="--small" TEST_IMAGES=2 \
#     bash benchmarks/tables.sh
#
# Needs ../shared/data (or SHARED=...) with adir-mfish and bioimlab-qband; pycocotools and the
# project installed (a GPU machine without pycocotools: put its cp312 wheel in $WHEELS, it is
# installed from there first).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/tables}
SHARED=${SHARED:-../shared/data}
DEVICE=${DEVICE:-cpu}
BACKBONE=${BACKBONE:-resnet18}
SIZE=${SIZE:-480x384}
MINUTES=${MINUTES:-20}
EPOCHS=${EPOCHS:-100}
SEEDS=${SEEDS:-0}
PARALLEL=${PARALLEL:-0}
EXTRA=${EXTRA:-}
TEST_IMAGES=${TEST_IMAGES:-0}
VARIANTS=${VARIANTS:-snake mr rmr erm2 erm3 ermr}
PY=${PY:-python}
WORKERS=${WORKERS:-0}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ] && ! $PY -c "import pycocotools" 2>/dev/null; then
  $PY -m pip install --no-index --find-links "$WHEELS" pycocotools > "$OUT/pip.log" 2>&1
fi
$PY -c "import torch, torchvision, platform; print(torch.__version__, torchvision.__version__, platform.processor(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" > "$OUT/versions.txt"
CS="$PY -m chromoseg.cli"

# data: the fixed splits (M-FISH by slide, BioImLab by case), imported once
[ -f "$OUT/data/mfish/test.json" ] || $CS data import mfish "$SHARED/adir-mfish" --out "$OUT/data/mfish" --quiet > "$OUT/import.log"
[ -f "$OUT/data/bioimlab/test.json" ] || $CS data import labelme "$SHARED/bioimlab-qband" --out "$OUT/data/bioimlab" --quiet >> "$OUT/import.log"
TEST=$OUT/data/mfish/test.json
BIN=$OUT/data/bioimlab/test.json
if [ "$TEST_IMAGES" -gt 0 ]; then  # a quick check: a few test images only
  frac=$($PY -c "import json; print(min(0.99, $TEST_IMAGES / len(json.load(open('$TEST'))['images'])))")
  $CS data split "$TEST" --fraction "$frac" --out-a "$OUT/data/rest.json" --out-b "$OUT/data/test_small.json" > /dev/null
  $CS data split "$BIN" --fraction "$frac" --out-a "$OUT/data/rest_b.json" --out-b "$OUT/data/bin_small.json" > /dev/null
  TEST=$OUT/data/test_small.json
  BIN=$OUT/data/bin_small.json
fi

for seed in $SEEDS; do
  pids=()
  for v in $VARIANTS; do
    run="$OUT/$seed/$v"
    resume=""
    [ -f "$run/last.pt" ] && resume="--resume"
    cmd="$CS train --data $OUT/data/mfish --variant $v --backbone $BACKBONE --image-size $SIZE --epochs $EPOCHS \
      --time-limit $MINUTES --seed $seed --device $DEVICE --workers $WORKERS --lr-schedule constant $EXTRA \
      --out $run --no-progress $resume"
    mkdir -p "$run"
    if [ "$PARALLEL" = 1 ]; then
      $cmd > "$run.log" 2>&1 &
      pids+=($!)
    else
      $cmd > "$run.log" 2>&1
    fi
  done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && wait "$p"; done
  models1="" models2=""
  for v in snake mr rmr ermr; do models1="$models1 --model $v=$OUT/$seed/$v/best.pt"; done
  for v in rmr erm2 erm3 ermr; do models2="$models2 --model $v=$OUT/$seed/$v/best.pt"; done
  $CS benchmark table1 $models1 --data "$TEST" --binary-data "$BIN" --out "$OUT/seed$seed" --work "$OUT/work$seed" \
    --device "$DEVICE" --quiet > "$OUT/table1_seed$seed.log" 2>&1 &
  p1=$!
  if [ "$PARALLEL" = 1 ]; then
    $CS benchmark table2 $models2 --data "$TEST" --out "$OUT/seed$seed" --work "$OUT/work$seed" --device "$DEVICE" \
      --quiet > "$OUT/table2_seed$seed.log" 2>&1
    wait $p1
  else
    wait $p1
    $CS benchmark table2 $models2 --data "$TEST" --out "$OUT/seed$seed" --work "$OUT/work$seed" --device "$DEVICE" \
      --quiet > "$OUT/table2_seed$seed.log" 2>&1
  fi
done
{
  echo "# Tables I and II under one budget (a reduced recipe)"
  echo
  echo "- command: \`OUT=$OUT DEVICE=$DEVICE BACKBONE=$BACKBONE SIZE=$SIZE MINUTES=$MINUTES EPOCHS=$EPOCHS SEEDS=\"$SEEDS\" PARALLEL=$PARALLEL EXTRA=\"$EXTRA\" TEST_IMAGES=$TEST_IMAGES bash benchmarks/tables.sh\`"
  echo "- every network: backbone $BACKBONE, input $SIZE, at most $EPOCHS epochs or $MINUTES minutes of training, seed(s) $SEEDS, M-FISH training split; $(cat "$OUT/versions.txt")"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M') UTC"
  for seed in $SEEDS; do echo; echo "## seed $seed"; echo; sed 's/^# /### /' "$OUT/seed$seed/table1.md"; echo; sed 's/^# /### /' "$OUT/seed$seed/table2.md"; done
} > "$OUT/tables.md"
echo "wrote $OUT/tables.md"
