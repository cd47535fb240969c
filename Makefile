# Two commands do all the set-up: `make run` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv first. TORCH pins the wheel installed before the package, so pip
# never resolves torch itself (a loose torch requirement can pull a multi-GB CUDA build); on a GPU
# machine, install the CUDA build you want with e.g. `make TORCH="torch==2.13.0" run`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)  # so that dvc stages find `bench`

.PHONY: run test setup clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	dvc repro prepare
	bench train --variant residual_bn --depth 20 --seed 0 --out runs/residual_bn-20-0

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
