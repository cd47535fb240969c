#!/usr/bin/env bash
# The GPU check: one prepared script for a machine with one CUDA GPU, run from the repo root.
#
#   bash benchmarks/gpu.sh                        # every step below, in order, within BUDGET seconds
#   STEPS="grid depths" bash benchmarks/gpu.sh    # only these steps
#   DRY=1 bash benchmarks/gpu.sh                  # the same on the CPU, each step a few iterations long
#                                                 # (MODE=null: eager; HE_ITERS, GRID_ITERS: iterations)
#
# Steps, most telling first:
#   sync    the no-host-sync test (tests/test_perf.py, -m gpu)
#   perf56  bench perf, residual_bn-56, batch 128, three ways: eager fp32; eager bf16 + channels_last;
#           compiled ("reduce-overhead": CUDA graphs) bf16 + channels_last, then a torch.profiler table of it
#   he20    ResNet-20 residual_bn through He et al.'s protocol (presets/he2016.yaml: option A, batch 128, lr 0.1
#           divided by 10 at 1/2 and 3/4 of the run) by `bench train` on the fast path, on CIFAR-10 in the
#           official layout, built from the JPEG copy and pinned by its md5. 64,000 iterations, or as many as
#           the time left allows, estimated from the perf56 figures; summary.txt says which
#   grid    1, 2 and 4 ResNet-20 cells at once on the GPU through `bench grid`: the aggregate images/s
#   depths  bench perf at depths 20 and 110, eager bf16 and compiled
#
# Results in ${RESULTS:-perf/gpu}: a JSON per measure, each step's log, and summary.txt, a line per figure.
# Everything is packed into $OUT/gpu.tar.gz (where OUT is set) after every step, so that a run cut off at
# the device's time limit still returns what it measured. BUDGET (seconds, default 480) skips what would not
# fit. Speed runs set trainer.deterministic=false, trainer.benchmark=true (cuDNN's autotuner) and
# trainer.log_every_n_steps=50, as the He preset does.
# Needs torch, lightning 2.6.6 (else its wheel in .whl/), torchmetrics, pyyaml, numpy, scikit-learn, pillow
# and pytest; `grid` needs dvc too, installed from .whl/ where missing (the wheels of benchmarks/wheels.py);
# he20 and grid need CIFAR-10 as JPEGs, ${JPEG:-shared-data/cifar10-jpeg.tar.gz}. PY picks the interpreter.
set -uo pipefail
RESULTS=$(realpath -m "${RESULTS:-perf/gpu}")  # absolute: the grid runs in another folder
PY=${PY:-python3}
case $PY in */*) PY=$(realpath -s "$PY") ;; esac
BUDGET=${BUDGET:-480}
STEPS=" ${STEPS:-sync perf56 he20 grid depths} "
DRY=${DRY:-0}
JPEG=$(realpath -m "${JPEG:-shared-data/cifar10-jpeg.tar.gz}")
WORK=$(mktemp -d)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
SUMMARY=$RESULTS/summary.txt

pack() {  # into a file of its own, then renamed: a pack never leaves a half-written archive behind
  [ -n "${OUT:-}" ] || return 0
  local part=$OUT/gpu-$BASHPID.part
  tar czf "$part" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" || return
  if [ "$(stat -c %s "$part")" -gt 15000000 ]; then  # a file over 16 MB does not come back: the traces stay behind
    tar czf "$part" --exclude='*.trace.json' -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" || return
  fi
  mv -f "$part" "$OUT/gpu.tar.gz"
}
trap 'pack; rm -rf "$WORK"' EXIT  # a device machine returns at most 8 files: one archive holds them all
say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((BUDGET - SECONDS)); }
want() { [[ $STEPS == *" $1 "* ]]; }
json() { $PY -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null; }

if [ "$DRY" = 1 ]; then  # the CPU: every step runs, each a few iterations long
  DEVICE=cpu ACCEL=cpu BF16=32-true MODE=${MODE:-default} PERF_STEPS=(--steps 4 --warmup 2) HE_ITERS=${HE_ITERS:-30}
  GRID_ITERS=${GRID_ITERS:-20}
else
  DEVICE=cuda ACCEL=gpu BF16=bf16-mixed MODE=reduce-overhead PERF_STEPS=(--steps 200 --warmup 30) HE_ITERS=${HE_ITERS:-} GRID_ITERS=1000
fi
SPEED=(trainer.deterministic=false trainer.benchmark=true trainer.log_every_n_steps=50 wandb.mode=disabled)  # as the He preset
FAST=(--precision "$BF16" speed.channels_last=true)
COMPILED=("${FAST[@]}" "speed.compile=$MODE")

# What runs: the card, the versions, and lightning 2.6.6 exactly (2.6.2 and 2.6.3 on PyPI were malicious).
# Carried wheels go to /tmp/site, ahead of the machine's own packages, and only those the machine lacks,
# lightning's excepted: it replaces any other version.
site=/tmp/site
install() {  # install WHEEL...: into $site, by pip, else unpacked (these wheels hold their files and no .data)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$@" 2>/dev/null \
    || for w in "$@"; do $PY -m zipfile -e "$w" "$site" || return 1; done
  [[ $PYTHONPATH == "$site:"* ]] || export PYTHONPATH="$site:$PYTHONPATH"
}
lightning=$($PY -c "import lightning; print(lightning.__version__)" 2>/dev/null)
if [ "$lightning" != 2.6.6 ]; then
  wheel=$(ls .whl/lightning-2.6.6-*.whl 2>/dev/null | head -1)
  [ -n "$wheel" ] || { say "lightning ${lightning:-missing}, not 2.6.6, and no .whl/lightning-2.6.6-*.whl: stopping"; exit 1; }
  install "$wheel" || { say "lightning ${lightning:-missing}, not 2.6.6, and $wheel would not install: stopping"; exit 1; }
fi
if want grid && ! $PY -c "import dvc" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  missing=$($PY benchmarks/wheels.py --missing | grep -v '/lightning-')
  [ -z "$missing" ] || install $missing || say "dvc's wheels would not install: the grid step will be skipped"
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import sys, torch, lightning, torchmetrics; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'lightning', lightning.__version__, 'at', lightning.__file__,
'torchmetrics', torchmetrics.__version__)"; } | tee "$RESULTS/versions.txt"
pack

if want sync; then
  if [ "$DRY" = 1 ]; then echo "sync: skipped on the CPU (it needs CUDA)"
  else
    timeout -k 15 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_perf.py > "$RESULTS/sync-test.txt" 2>&1
    say "sync test: exit $? ($(tail -1 "$RESULTS/sync-test.txt"))"
  fi
  pack
fi

perf() {  # perf NAME ARGS...: one bench perf run, its JSON in $RESULTS/NAME.json, a summary line
  local name=$1; shift
  local need=60
  [[ " $* " == *" speed.compile="* && " $* " != *" speed.compile=null "* ]] && need=150  # compilation first
  if [ "$(left)" -lt "$need" ]; then say "$name: skipped, under $need s of the ${BUDGET} s budget left"; return; fi
  local limit=$(( $(left) < 240 ? $(left) : 240 ))
  timeout -k 15 "$limit" $PY -m bench perf --device "$DEVICE" "${PERF_STEPS[@]}" --repeats "${REPEATS:-2}" \
    --out "$RESULTS/$name.json" "${SPEED[@]}" "$@" >/dev/null 2>"$RESULTS/$name.log"
  local code=$?
  if [ -f "$RESULTS/$name.json" ]; then  # written before a profile, which may fail on its own
    say "$name ($SECONDS s): $(json "$RESULTS/$name.json" "'bench', r['bench']['images_per_s'], 'images/s, bare loop',
    r['bare']['images_per_s'], '; Lightning overhead', r['lightning_overhead_pct'], '%', r['lightning_overhead_pct_range'],
    r['lightning_overhead_ms'], 'ms a step; max loss difference', r['max_loss_difference']")"
  fi
  if [ "$code" != 0 ]; then
    say "$name: exit $code (124: cut off at $limit s); the end of $RESULTS/$name.log:"; tail -5 "$RESULTS/$name.log" | tee -a "$SUMMARY"
  fi
  grep -q "skipping cudagraphs" "$RESULTS/$name.log" && say "$name: fell back from CUDA graphs (see its log)"
  pack
}

if want perf56; then
  perf eager-fp32-56 --variant residual_bn --depth 56 --precision 32-true
  perf eager-bf16-56 --variant residual_bn --depth 56 "${FAST[@]}"
  perf compiled-bf16-56 --variant residual_bn --depth 56 "${COMPILED[@]}" --profile "$RESULTS/profile-compiled-bf16-56"
fi

OFFICIAL=  # ok, or why not: tried once
official() {  # CIFAR-10 in the official layout from the JPEG copy, prepared by bench prepare with its md5
  if [ -z "$OFFICIAL" ]; then
    if [ ! -e "$JPEG" ]; then OFFICIAL="no $JPEG"
    elif MD5=$($PY benchmarks/cifar10_official.py "$JPEG" "$WORK/cifar-10-python.tar.gz" 2>>"$RESULTS/cifar10.log") \
        && $PY -m bench prepare --out "$WORK/cifar10" data.name=cifar10 "data.source=$WORK/cifar-10-python.tar.gz" \
          "data.md5=$MD5" data.val_size=0 >>"$RESULTS/cifar10.log" 2>&1; then
      OFFICIAL=ok
      say "CIFAR-10 in the official layout from the JPEG copy: md5 $MD5 ($SECONDS s)"
    else OFFICIAL="its preparation failed (see cifar10.log: $(tail -1 "$RESULTS/cifar10.log"))"
    fi
    [ "$OFFICIAL" = ok ] || say "CIFAR-10 steps skipped: $OFFICIAL"
  fi
  [ "$OFFICIAL" = ok ]
}

he_fast() {  # he_fast SOURCE ITERS: overrides for He et al.'s preset on the fast path, on the archive at SOURCE,
  # cut to ITERS iterations with the lr steps at the same fractions (no spaces: one word each; call under set -f)
  echo $($PY -m bench preset presets/he2016.yaml) "data.source=$1" "data.md5=$MD5" "trainer.accelerator=$ACCEL" \
    "train.max_steps=$2" "train.milestones=[$(($2 / 2)),$(($2 * 3 / 4))]" "trainer.precision=$BF16" \
    speed.channels_last=true "speed.compile=$MODE" wandb.mode=disabled
}

if want he20 && official; then
  # iterations: 64,000, or what fits the time left (less 90 s of start-up, compilation, evaluation and
  # diagnostics), at twice ResNet-56's compiled images/s and a margin of 0.6
  ips=$(json "$RESULTS/compiled-bf16-56.json" "r['bench']['images_per_s']" || echo 5000)
  iters=${HE_ITERS:-$($PY -c "print(min(64000, int(0.6 * ($(left) - 90) * 2 * $ips / 128) // 100 * 100))")}
  if [ "$iters" -lt 1000 ] && [ "$DRY" != 1 ]; then say "he20: skipped, $(left) s left fit only $iters iterations"
  else
    set -f
    out=$RESULTS/he2016-resnet20
    start=$SECONDS
    timeout -k 15 "$(( $(left) > 30 ? $(left) : 30 ))" $PY -m bench train --variant residual_bn --depth 20 --seed 0 \
      --data "$WORK/cifar10" --out "$out" --no-progress $(he_fast "$WORK/cifar-10-python.tar.gz" "$iters") \
      > "$RESULTS/he2016-resnet20.log" 2>&1
    code=$?
    set +f
    rm -f "$out/last.ckpt"
    protocol=$([ "$iters" = 64000 ] && echo "the whole protocol" || echo "He et al.'s protocol cut to $iters of 64,000 iterations, the lr steps at the same fractions")
    if [ -f "$out/metrics.json" ]; then
      figures=$(json "$out/metrics.json" "'test error', r['test/error'], 'train error', r['train/error'], 'images/s',
      r['images_per_s'], 'wall_time_s', r['wall_time_s']")
    else  # cut off: how far it got
      figures="no metrics.json; the last epoch of history.csv: $(tail -1 "$out/history.csv" 2>/dev/null)"
    fi
    say "he20 ResNet-20 residual_bn, $protocol: exit $code, $((SECONDS - start)) s wall; $figures"
  fi
  pack
fi

# Several cells on one GPU: 1, 2 and 4 ResNet-20 cells (seeds) at once through `bench grid`, in a copy of the
# pipeline (a git repo of its own), GRID_ITERS iterations each on the He preset's fast path. The aggregate
# is the sum of the cells' own training images/s (each measured while the others ran), and all their
# images over the grid's wall time, start-up and compilation included.
if want grid && official; then
  if ! $PY -c "import dvc" 2>/dev/null; then say "grid: skipped, no dvc (benchmarks/wheels.py builds .whl/)"
  else
    SLICE=$WORK/slice
    mkdir -p "$SLICE/data/raw" "$SLICE/.dvc" "$SLICE/bin" && cp -r bench presets dvc.yaml params.yaml .gitignore .dvcignore "$SLICE/" \
      && cp .dvc/config .dvc/.gitignore "$SLICE/.dvc/"
    if command -v git >/dev/null; then
      git -C "$SLICE" init -q && git -C "$SLICE" add -A \
        && git -C "$SLICE" -c user.name=gpu -c user.email=gpu@localhost commit -qm "the pipeline, for bench grid"
    else  # DVC without git
      sed -i 's/^\[core\]$/[core]\n    no_scm = true/' "$SLICE/.dvc/config"
    fi
    cp "$WORK/cifar-10-python.tar.gz" "$SLICE/data/raw/"  # after the commit: the data is DVC's, not git's
    printf '#!/bin/sh\nexec %s -m bench "$@"\n' "$PY" > "$SLICE/bin/bench"  # what dvc.yaml's stages call
    printf '#!/bin/sh\nexec %s -m dvc "$@"\n' "$PY" > "$SLICE/bin/dvc" && chmod +x "$SLICE"/bin/*
    for k in 1 2 4; do
      if [ "$(left)" -lt 120 ]; then say "grid x$k: skipped, under 120 s of the ${BUDGET} s budget left"; continue; fi
      (
        cd "$SLICE" && export PATH="$SLICE/bin:$PATH" PYTHONPATH="$SLICE${PYTHONPATH:+:$PYTHONPATH}"
        rm -rf runs logs
        set -f  # the grid's own params.yaml: bench grid trains what it declares
        $PY - $(he_fast data/raw/cifar-10-python.tar.gz "$GRID_ITERS") "grid.variants=[residual_bn]" "grid.depths=[20]" \
          "grid.seeds=[$(seq -s, 0 $((k - 1)))]" <<'PY'
import sys
import yaml
from bench import config
yaml.safe_dump(config.apply_overrides(yaml.safe_load(open("params.yaml")), sys.argv[1:]), open("params.yaml", "w"),
               sort_keys=False)
PY
        set +f
        start=$SECONDS
        timeout -k 15 "$(left)" bench grid --workers-per-gpu "$k" > "$RESULTS/grid-x$k.log" 2>&1
        code=$?
        wall=$((SECONDS - start))
        mkdir -p "$RESULTS/grid-x$k"  # each cell's metrics.json, named by its cell
        for m in runs/*/metrics.json; do cp "$m" "$RESULTS/grid-x$k/$(basename "$(dirname "$m")").json"; done 2>/dev/null
        $PY - "$k" "$code" "$wall" "$RESULTS/grid-x$k" <<'PY' | tee -a "$SUMMARY"
import json, pathlib, sys
k, code, wall, folder = sys.argv[1:]
cells = [json.loads(f.read_text()) for f in sorted(pathlib.Path(folder).glob("*.json"))]
own = [c["images_per_s"] for c in cells if c["images_per_s"] is not None]  # None: no step past the warm-up
images = sum(c["steps"] * 128 for c in cells)
print(f"grid x{k}: exit {code}, {len(cells)} of {k} cells; aggregate "
      f"{f'{sum(own):.0f}' if cells and len(own) == len(cells) else 'n/a'} images/s (the cells' own, summed), "
      f"{images / max(1, int(wall)):.0f} over the {wall} s wall (start-up and compilation included); test errors "
      + ", ".join(f"{c['test/error']:.4f}" for c in cells))
PY
        [ "$code" = 0 ] || tail -5 "$RESULTS/grid-x$k.log" | tee -a "$SUMMARY"
      )
      pack
    done
  fi
fi

if want depths; then
  for depth in 20 110; do
    perf "compiled-bf16-$depth" --variant residual_bn --depth "$depth" "${COMPILED[@]}"
    perf "eager-bf16-$depth" --variant residual_bn --depth "$depth" "${FAST[@]}"
  done
fi
say "done in $SECONDS s"
