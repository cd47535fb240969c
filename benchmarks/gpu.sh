#!/usr/bin/env bash
# The GPU check as one prepared script, for a machine with one CUDA GPU, run from the repo root:
#
#   bash benchmarks/gpu.sh          # figures in ${RESULTS:-perf/gpu}: one bench perf JSON per line below
#                                   # (and all of it packed into $OUT/gpu.tar.gz where OUT is set)
#
# Most telling first, and everything packed after each step, so that a run cut off at the device's
# time limit still returns what it measured; BUDGET (seconds, default 540) skips what would not fit.
#   1. the no-host-sync test (tests/test_perf.py, -m gpu)
#   2. bench perf, residual_bn-56, batch 128 (He et al.'s): eager-bf16 (bf16-mixed + channels_last,
#      a published bare-loop baseline, 4,800 img/s) and compiled-bf16 (+ torch.compile
#      "reduce-overhead": forward and backward as CUDA graphs; the 15,000 img/s target)
#   3. 4 concurrent copies of compiled-bf16-56: the several-runs-per-GPU figure
#   4. depths 20 and 110 the same two ways, then eager-fp32 at 20, 56, 110
#   5. a slice of the He grid through `bench grid`, where dvc is importable
# Needs torch, lightning, torchmetrics, pyyaml, numpy, scikit-learn, pytest (no dvc, no wandb for 1-4);
# PY picks the interpreter.
set -uo pipefail
# both absolute: the grid slice runs in another folder
RESULTS=$(realpath -m "${RESULTS:-perf/gpu}")
PY=${PY:-python3}
case $PY in */*) PY=$(realpath -s "$PY") ;; esac
BUDGET=${BUDGET:-540}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
pack() {  # into a file of its own, then renamed: the 4 concurrent runs below pack at the same time
  [ -z "${OUT:-}" ] || { tar czf "$OUT/gpu-$BASHPID.part" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" \
    && mv -f "$OUT/gpu-$BASHPID.part" "$OUT/gpu.tar.gz"; }
}
trap pack EXIT  # a device machine returns at most 8 files: one archive holds them all
left() { echo $((BUDGET - SECONDS)); }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RESULTS/gpu.txt" || true
$PY -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__,
'torchmetrics', torchmetrics.__version__)" | tee -a "$RESULTS/gpu.txt"

if [ "${PERF:-1}" = 1 ]; then
  timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_perf.py 2>&1 | tail -15 | tee "$RESULTS/sync-test.txt"
  pack
fi

perf() {  # perf NAME ARGS...: one bench perf run, its JSON in $RESULTS/NAME.json, one summary line
  local name=$1; shift
  if [ "$(left)" -lt 60 ]; then echo "$name skipped: ${BUDGET} s budget spent"; return; fi
  local limit=$(( $(left) < 240 ? $(left) : 240 ))
  if timeout "$limit" $PY -m bench perf --device cuda --steps 300 --warmup 30 --repeats "${REPEATS:-2}" \
      --out "$RESULTS/$name.json" wandb.mode=disabled "$@" >/dev/null 2>"$RESULTS/$name.log"; then
    $PY -c "import json; r = json.load(open('$RESULTS/$name.json')); print('$name', '${SECONDS}s', 'bench', r['bench']['images_per_s'],
    'bare', r['bare']['images_per_s'], 'overhead %', r['lightning_overhead_pct'], 'max loss diff', r['max_loss_difference'])"
  else
    echo "$name FAILED or cut off at ${limit} s: tail of $RESULTS/$name.log"; tail -5 "$RESULTS/$name.log"
  fi
  pack
}

FAST=(--precision bf16-mixed speed.channels_last=true)
COMPILED=("${FAST[@]}" speed.compile=reduce-overhead)
if [ "${PERF:-1}" = 1 ]; then
  perf eager-bf16-56 --variant residual_bn --depth 56 "${FAST[@]}"
  perf compiled-bf16-56 --variant residual_bn --depth 56 "${COMPILED[@]}"
  if [ "$(left)" -ge 240 ]; then  # several runs per GPU: 4 processes at once, each its own images/s
    for k in 1 2 3 4; do perf "shared-56-$k" --variant residual_bn --depth 56 "${COMPILED[@]}" & done
    wait
  fi
  for depth in 20 110; do
    perf "compiled-bf16-$depth" --variant residual_bn --depth "$depth" "${COMPILED[@]}"
    perf "eager-bf16-$depth" --variant residual_bn --depth "$depth" "${FAST[@]}"
  done
  for depth in 20 56 110; do perf "eager-fp32-$depth" --variant residual_bn --depth "$depth" --precision 32-true; done
  grep -l "skipping cudagraphs" "$RESULTS"/*.log 2>/dev/null && echo "some runs fell back from CUDA graphs: see these logs"
fi

# A slice of the He et al. grid through the scale-out launcher: plain_bn and residual_bn at depths
# 20 and 56, 2,000 iterations each, on CIFAR-10, 4 cells at once on the GPU. Needs dvc: where $PY
# lacks it, the wheels in .whl/ (`python benchmarks/wheels.py` on a machine with an index; carry .whl)
# are installed into /tmp/site for this part only (those it lacks). Needs the JPEG archive at
# shared-data/cifar10-jpeg.tar.gz. A dry run of this part on a CPU: PERF=0 SLICE_ACCELERATOR=cpu
# SLICE_PRECISION=32-true SLICE_STEPS=20 SLICE_COMPILE=null PY=.venv/bin/python bash benchmarks/gpu.sh
if ! $PY -c "import dvc" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  missing=$($PY benchmarks/wheels.py --missing)  # only those the machine lacks: none of its own is shadowed
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $missing \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if ! $PY -c "import dvc" 2>/dev/null || [ ! -f shared-data/cifar10-jpeg.tar.gz ]; then
  echo "grid slice skipped: needs dvc importable by $PY (or .whl/) and shared-data/cifar10-jpeg.tar.gz"; exit 0
fi
if [ "$(left)" -lt 120 ]; then echo "grid slice skipped: ${BUDGET} s budget spent"; exit 0; fi
SLICE=$(mktemp -d)/slice
mkdir -p "$SLICE/data/raw" "$SLICE/.dvc" && cp -r bench presets dvc.yaml params.yaml .gitignore "$SLICE/" \
  && cp .dvc/config .dvc/.gitignore "$SLICE/.dvc/" \
  && git -C "$SLICE" init -q && git -C "$SLICE" add -A && git -C "$SLICE" -c user.name=b -c user.email=b@b commit -qm slice \
  && cp shared-data/cifar10-jpeg.tar.gz "$SLICE/data/raw/"
mkdir -p "$SLICE/bin" && printf '#!/bin/sh\nexec %s -m %s "$@"\n' "$PY" bench > "$SLICE/bin/bench" \
  && printf '#!/bin/sh\nexec %s -m dvc "$@"\n' "$PY" > "$SLICE/bin/dvc" && chmod +x "$SLICE"/bin/*
(
  cd "$SLICE" && export PATH="$SLICE/bin:$PATH" PYTHONPATH="$SLICE${PYTHONPATH:+:$PYTHONPATH}"
  $PY - <<'PY'
import os
import yaml
from bench import config
p = config.apply_overrides(yaml.safe_load(open("params.yaml")), config.preset("presets/he2016.yaml"))
p["grid"].update(variants=["plain_bn", "residual_bn"], depths=[20, 56], seeds=[0])
p["data"].update(name="imagefolder", source="data/raw/cifar10-jpeg.tar.gz", md5=None, val_size=5000)
steps = int(os.environ.get("SLICE_STEPS", 2000))
p["train"].update(max_steps=steps, milestones=[steps // 2, steps * 3 // 4])
p["trainer"].update(accelerator=os.environ.get("SLICE_ACCELERATOR", "gpu"),
                   precision=os.environ.get("SLICE_PRECISION", "bf16-mixed"), log_every_n_steps=50)
mode = os.environ.get("SLICE_COMPILE", "reduce-overhead")
p["speed"].update(compile=None if mode == "null" else mode, channels_last=True)
p["wandb"]["mode"] = "disabled"
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
PY
  start=$SECONDS
  dvc repro prepare >/dev/null && timeout "$(left)" bench grid --workers-per-gpu 4
  echo "grid slice: exit $?, $((SECONDS - start)) s wall, data preparation included"
  for m in runs/*/metrics.json; do
    $PY -c "import json; m = json.load(open('$m')); print(m['variant'], m['depth'], 'test error', m['test/error'], 'images/s', m['images_per_s'], 'wall s', m['wall_time_s'])"
  done
  cp -r logs/grid "$RESULTS/grid-logs"
) 2>&1 | tee "$RESULTS/grid.txt"
