#!/bin/bash
# GPU runs of the training side (NOT run yet: no GPU in the session that wrote it).
# Everything goes into one folder, $OUT (default runs/gpu):
#   training_speed_gpu.md   images/s per variant (benchmarks/bench_train.py, ResNet-50, 640x512, batch 2)
#   pretrain/               chromoseg pretrain (ResNet-50, all cells) + held-out accuracy (report.json)
#   {mr,rmr,erm2,erm3,ermr}/  chromoseg train with the paper's recipe, from the pretrained backbone
# Needs the M-FISH import (datasets/mfish/{train,val}.json, written by `chromoseg data import mfish`)
# with image paths valid on the GPU machine, and ../shared/data/single-chromosomes-gband.
# Usage: OUT=runs/gpu DATA=datasets/mfish bash benchmarks/bench_train_gpu.sh [variants...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
DATA=${DATA:-datasets/mfish}
PY=${PY:-python}
VARIANTS=${*:-mr rmr erm2 erm3 ermr}
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
$PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name(0))" \
  > "$OUT/versions.txt"
$PY benchmarks/bench_train.py --device cuda --backbone resnet50 --size 640x512 --batch-size 2 --steps 20 \
  --variants $VARIANTS --data "$DATA/train.json" --out "$OUT/training_speed_gpu.md" 2>&1 | tee "$OUT/bench.log"
[ -f "$OUT/pretrain/backbone.pt" ] || $PY -m chromoseg.cli pretrain --backbone resnet50 --epochs 30 --device cuda \
  --workers 8 --out "$OUT/pretrain" --no-progress 2>&1 | tee "$OUT/pretrain.log"
for v in $VARIANTS; do
  resume=""
  [ -f "$OUT/$v/last.pt" ] && resume="--resume"
  /usr/bin/time -v $PY -m chromoseg.cli train --data "$DATA" --variant "$v" --backbone resnet50 \
    --backbone-weights "$OUT/pretrain/backbone.pt" --device cuda --workers 8 --out "$OUT/$v" --no-progress $resume \
    2>&1 | tee "$OUT/train_$v.log"
done
