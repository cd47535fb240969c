# Two commands do all the set-up: `make run` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv first. TORCH pins the wheel installed before the package, so pip
# never resolves torch itself (a loose torch requirement can pull a multi-GB CUDA build); on a GPU
# machine, install the CUDA build you want with e.g. `make TORCH="torch==2.13.0" run`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)  # so that dvc stages find `bench`

.PHONY: run test test-all setup clean he2016 perf
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	dvc repro

# He et al. 2016 on CIFAR-10 (Sec. 4.2), as a DVC experiment: the preset file presets/he2016.yaml over
# params.yaml. Needs data/raw/cifar-10-python.tar.gz (see README, "Data") and a GPU; HE_SEEDS=[0] for one seed.
# set -f: the overrides' brackets are YAML, not file patterns; a preset that does not apply stops here.
HE_SEEDS ?= [0,1,2]
he2016: setup
	set -f; preset=$$($(BIN)/bench preset presets/he2016.yaml --dvc) && dvc exp run -n he2016 $$preset -S 'grid.seeds=$(HE_SEEDS)'

# The CPU speed figures of the README's "Speed" table (about 12 minutes on 2 cores); on a GPU machine,
# bash benchmarks/gpu.sh. PERF_ARGS="--cifar PATH/cifar10-jpeg.tar.gz" adds bench prepare.
perf: setup
	$(BIN)/python benchmarks/cpu.py $(PERF_ARGS)

# `make test`: the default tier, quick feedback. `make test-all`: every tier that runs without a GPU.
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu" --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
