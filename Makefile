# Two commands do all the set-up: `make run` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv first. TORCH pins the wheel installed before the package, so pip
# never resolves torch itself (a loose torch requirement can pull a multi-GB CUDA build). On a GPU
# machine, TORCH_INDEX names the index of the CUDA build you want, e.g. for CUDA 12.6:
#   make TORCH_INDEX=https://download.pytorch.org/whl/cu126 run
# Empty (the default): PyPI's torch, which is the CPU build on a machine without CUDA.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)  # so that dvc stages find `bench`

.PHONY: run test test-all lint setup clean he2016 perf
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# `make run`: the out-of-date train cells JOBS at a time by `bench grid` (JOBS processes sharing the CPU cores, or
# JOBS per GPU; a failed cell stops here, its log named), then the stages after the grid that are out of date or whose
# results git holds but the workspace lacks, the independent ones at once (bench/scale/pipeline.py, which records them
# in dvc.lock as `dvc repro` would), and the README's results section copied from the report's results.md. A clone
# without the cells' weights (DVC's cache; nothing to pull) keeps the results git holds: plain `dvc repro` would retrain
# every cell, one at a time, to make the weights the studies read.
JOBS ?= 2
run: setup
	$(BIN)/bench grid --jobs $(JOBS)
	$(BIN)/python -m bench.scale.pipeline
	$(BIN)/python -m bench.report.readme

# He et al. 2016 on CIFAR-10 (Sec. 4.2), as a DVC experiment: the preset file presets/he2016.yaml over
# params.yaml. Needs data/raw/cifar-10-python.tar.gz (see README, "Data") and a GPU; HE_SEEDS=[0] for one seed.
# set -f: the overrides' brackets are YAML, not file patterns; a preset that does not apply stops here.
# The data is checked before anything is touched, the cost is printed first, and a failed experiment leaves
# params.yaml as it was (dvc exp run writes the overrides into it before it runs).
HE_SEEDS ?= [0,1,2]
HE_DATA := data/raw/cifar-10-python.tar.gz
he2016: setup
	@test -f $(HE_DATA) || { echo "make he2016: $(HE_DATA) is missing (README, \"Data\"); nothing was changed" >&2; exit 2; }
	@$(BIN)/python -c "import sys, yaml; p = yaml.safe_load(open('presets/he2016.yaml')); g, t = p['grid'], p['train']; \
	n = len(g['variants']) * len(g['depths']) * len(yaml.safe_load(sys.argv[1])); \
	print(f'make he2016: {n} cells x {t[\"max_steps\"]:,} iterations at batch {t[\"batch_size\"]}; only ResNet-20 and ResNet-56 are timed on a GPU (perf/gpu/), so no estimate of the GPU-hours')" '$(HE_SEEDS)'
	@set -f; cp params.yaml .params.yaml.before; \
	preset=$$($(BIN)/bench preset presets/he2016.yaml --dvc) && dvc exp run -n he2016 $$preset -S 'grid.seeds=$(HE_SEEDS)'; \
	rc=$$?; if [ $$rc -ne 0 ]; then mv .params.yaml.before params.yaml; echo "make he2016: failed; params.yaml restored" >&2; \
	else rm -f .params.yaml.before; fi; exit $$rc

# The speed figures of docs/speed.md, by benchmarks/speed.py: the CPU's (about 12 minutes on 2 cores), or with
# PERF_DEVICE=cuda the GPU check (480 s). PERF_ARGS="--cifar PATH/cifar10-jpeg.tar.gz" adds the steps that need
# CIFAR-10; PERF_ARGS=--dry-run runs every step on the CPU, a few iterations each, into perf/DEVICE-dry-run/.
PERF_DEVICE ?= cpu
perf: setup
	$(BIN)/python benchmarks/speed.py --device $(PERF_DEVICE) $(PERF_ARGS)

# `make test`: the default tier, quick feedback, in one pytest-xdist worker per core (at most TEST_WORKERS), each
# test file on one worker (--dist loadfile: a file's shared fixtures are built once).
# `make test-all`: every tier that runs without a GPU, in one process (its tests start processes of their own).
TEST_WORKERS ?= 4
test: setup
	$(BIN)/python -m pytest -q -n auto --maxprocesses $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu" --durations=15 $(PYTEST_ARGS)

# `make lint`: the one style, checked (ruff's config is in pyproject.toml); `ruff format .` applies it.
lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# Only what is generated and git-ignored: checkpoints, logs, scratch runs, plots, the venv. Results git tracks
# (runs/*/metrics.json, report/, ...) stay; W&B run folders (wandb/) stay too: they are records.
clean:
	git clean -fdXq -- runs runs_lr logs dvc_plots slurm
	rm -rf $(VENV)
