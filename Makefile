# Two commands do all the set-up: `make run` (the main job) and `make test` (the tests).
# Each creates or refreshes .venv first. TORCH pins the wheel installed before the package, so pip
# never resolves torch itself (a loose torch requirement can pull a multi-GB CUDA build); on a GPU
# machine, install the CUDA build you want with e.g. `make TORCH="torch==2.13.0" run`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)  # so that dvc stages find `bench`

.PHONY: run test setup clean he2016 perf
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	dvc repro

# He et al. 2016 on CIFAR-10 (Sec. 4.2), as a DVC experiment. Needs data/raw/cifar-10-python.tar.gz
# (see README, "Data") and a GPU; `make he2016 HE_SEEDS=[0]` for one seed.
HE_SEEDS ?= [0,1,2]
he2016: setup
	dvc exp run -n he2016 \
	  -S data.name=cifar10 -S data.source=data/raw/cifar-10-python.tar.gz -S data.md5=null -S data.val_size=5000 \
	  -S model.shortcut=zero_pad \
	  -S train.batch_size=128 -S train.max_steps=64000 -S 'train.milestones=[32000,48000]' -S train.gamma=0.1 \
	  -S train.lr=0.1 -S train.momentum=0.9 -S train.weight_decay=0.0001 -S train.nesterov=false \
	  -S train.warmup_steps=0 -S train.low_lr=0.01 -S train.low_lr_steps=400 -S train.low_lr_min_depth=110 \
	  -S 'grid.variants=[plain,plain_bn,residual,residual_bn]' -S 'grid.depths=[8,14,20,32,44,56,110]' \
	  -S 'grid.seeds=$(HE_SEEDS)' \
	  -S trainer.accelerator=gpu -S trainer.precision=32-true -S trainer.log_every_n_steps=50

# The CPU speed figures of the README's "Speed" table (about 12 minutes on 2 cores); on a GPU machine,
# bash benchmarks/gpu.sh. PERF_ARGS="--cifar ../shared/data/cifar10-jpeg.tar.gz" adds bench prepare.
perf: setup
	$(BIN)/python benchmarks/cpu.py $(PERF_ARGS)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
