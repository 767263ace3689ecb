# cnnzoo: `make train` trains on the built-in sample data, `make test` runs the tests.
# Everything installs into a project-local virtual environment, .venv/ (PYTHON picks the
# interpreter that creates it; Python >= 3.10).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast lint format models clean bench bench-parity gpu-check gpu-kit bench-index sweep report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  (extra Hydra overrides: make train ARGS='trainer.max_epochs=2')"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dali]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install cnnzoo with its dev tools (only when needed)

train: $(STAMP)  ## train ResNet-18 on the built-in sample data on the CPU (experiment=quickstart)
	$(BIN)/python train.py experiment=quickstart $(ARGS)

sweep: $(STAMP)  ## a small sweep on the sample data (2 models x 2 optimisers), then its report
	$(BIN)/python train.py -m experiment=quickstart model=resnet18,alexnet optim=sgd,sgd_momentum \
		model.input_size=64 model.eval_resize=73 trainer.max_epochs=3 logger=csv $(ARGS)
	$(BIN)/python report.py $$(ls -d outputs/train/multirun_* | tail -1)

report: $(STAMP)  ## report.md/.csv/.png over run or sweep folders: make report RUNS='outputs/train/...'
	@runs="$(RUNS)"; [ -n "$$runs" ] || runs=$$(ls -d outputs/train/multirun_* 2>/dev/null | tail -1); \
	if [ -z "$$runs" ]; then \
		echo "no sweep in outputs/train yet: make sweep first, or make report RUNS='outputs/train/<run> ...'" >&2; \
		exit 2; \
	fi; \
	echo "$(BIN)/python report.py $$runs"; $(BIN)/python report.py $$runs

test: $(STAMP)  ## run the whole test suite (CPU, offline; a local SLURM is started for its tests)
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(ARGS)

test-fast: $(STAMP)  ## the in-process tests, one model per family: no subprocesses, no SLURM
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow and not slurm and not zoo" $(ARGS)

models: $(STAMP)  ## table of every architecture: parameters, GMACs, input size, published accuracy
	$(BIN)/python -m cnnzoo.models

bench: $(STAMP)  ## CPU benchmarks: framework overhead vs a plain loop, transforms vs torchvision's
	$(BIN)/python benchmarks/cpu_bench.py --out cpu_bench.md

bench-parity: $(STAMP)  ## does cnnzoo learn as well as a plain torchvision loop? make bench-parity ROOT=photos [SEEDS=10]
	@test -n "$(ROOT)" || { echo "give a folder of photos: make bench-parity ROOT=DIR (DIR/train/<class>/*, DIR/val/<class>/*)" >&2; exit 2; }
	$(BIN)/python benchmarks/parity.py --root "$(ROOT)" --seeds $(or $(SEEDS),10) $(ARGS)

bench-index: $(STAMP)  ## start-up and worker memory on a 1.28M-file ImageNet-shaped tree (in /tmp)
	$(BIN)/python benchmarks/imagenet_scale.py

gpu-check: $(STAMP)  ## on a CUDA GPU: the GPU tests, images/s (synthetic, JPEGs: workers, DALI), costs
	$(BIN)/python benchmarks/gpu_check.py --out gpu_check.md $(ARGS)

gpu-kit: $(STAMP)  ## pack .gpu/: what a GPU machine with PyTorch but no package index needs
	$(BIN)/python benchmarks/gpu_kit.py pack $(ARGS)

lint: $(STAMP)  ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove caches (never a run: outputs/ holds records; delete one with rm -r outputs/train/<run>)
	rm -rf .pytest_cache .ruff_cache src/*.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -not -path './outputs/*' -exec rm -rf {} +
