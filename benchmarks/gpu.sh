#!/usr/bin/env bash
# Issue 8's GPU check as one prepared script, for a machine with one CUDA GPU, run from the repo root:
#
#   bash benchmarks/gpu.sh          # figures in ${OUT:-perf/gpu}: one bench perf JSON per line below
#
# bench perf on residual_bn at depths 20, 56 and 110, batch 128 (He et al.'s), three ways:
#   eager-fp32     the plain path, fp32
#   eager-bf16     bf16-mixed + channels_last: the ANCHORS.md bare-loop baseline (4,800 img/s at depth 56)
#   compiled-bf16  + torch.compile(mode="reduce-overhead"): the forward and backward as CUDA graphs
# then 4 concurrent copies of the fastest depth-56 setting, for the several-runs-per-GPU figure.
# Needs torch, lightning, torchmetrics, pyyaml, numpy (no dvc, no wandb); PY picks the interpreter.
set -uo pipefail
OUT=${OUT:-perf/gpu}
PY=${PY:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$OUT/gpu.txt"

perf() {  # perf NAME ARGS...: one bench perf run, its JSON in $OUT/NAME.json, one summary line
  local name=$1; shift
  if timeout 300 $PY -m bench perf --device cuda --steps 300 --warmup 30 --repeats 2 --out "$OUT/$name.json" \
      wandb.mode=disabled "$@" >/dev/null 2>"$OUT/$name.log"; then
    $PY -c "import json; r = json.load(open('$OUT/$name.json')); print('$name', 'bench', r['bench']['images_per_s'],
    'bare', r['bare']['images_per_s'], 'overhead %', r['lightning_overhead_pct'], 'max loss diff', r['max_loss_difference'])"
  else
    echo "$name FAILED: tail of $OUT/$name.log"; tail -5 "$OUT/$name.log"
  fi
}

FAST=(--precision bf16-mixed speed.channels_last=true)
for depth in 20 56 110; do
  perf "eager-fp32-$depth" --variant residual_bn --depth "$depth" --precision 32-true
  perf "eager-bf16-$depth" --variant residual_bn --depth "$depth" "${FAST[@]}"
  perf "compiled-bf16-$depth" --variant residual_bn --depth "$depth" "${FAST[@]}" speed.compile=reduce-overhead
done
grep -l "skipping cudagraphs" "$OUT"/*.log && echo "some runs fell back from CUDA graphs: see the logs above"

# several runs per GPU: 4 processes at once, each reporting its own images/s
for k in 1 2 3 4; do
  perf "shared-56-$k" --variant residual_bn --depth 56 "${FAST[@]}" speed.compile=reduce-overhead &
done
wait
