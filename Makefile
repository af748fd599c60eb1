# replikit: `make repro` (main job) and `make test` (the tests) both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
# Jupyter refuses to run as root (containers, CI images) unless told to; never passed otherwise
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup lock repro repro-lanes test lab report bench full stability gpu-check gpu-bench gpu-suite gpu-session
setup: $(VENV)/.installed

# constraints.txt pins every package to the versions the committed results were computed with;
# `make setup LOCK=` installs the newest that pyproject.toml allows instead, and `make lock` re-pins.
LOCK ?= constraints.txt

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(LOCK),-c $(LOCK)) -e '.[dev,ray]'
	touch $@

lock:                 ## re-pin constraints.txt: the newest versions pyproject.toml allows, resolved in a fresh venv
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev,ray]'
	{ sed -n '/^#/p' constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

repro: setup          ## replicate every method on params.yaml's profile, then the report
	$(BIN)/dvc repro

repro-lanes: setup    ## on a GPU machine: dvc repro with the GPU's stages and the CPU-pinned ones side by side
	$(BIN)/python -m replikit.lanes $(ARGS)

test: setup           ## ruff (lint + format), unit tests, notebooks through papermill (smoke), a dvc repro of the smoke profile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lab: setup            ## JupyterLab on the notebooks (jupytext opens notebooks/<method>.py as notebooks)
	mkdir -p $(VENV)/share/jupyter/lab/settings
	echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}' \
	  > $(VENV)/share/jupyter/lab/settings/overrides.json
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

report: setup
	$(BIN)/python -m replikit.report

bench: setup          ## trainer overheads against bare PyTorch loops (plain and packed); seeds in processes vs threads
	$(BIN)/python benchmarks/trainer_overhead.py
	$(BIN)/python benchmarks/packed_overhead.py
	$(BIN)/python benchmarks/packed_overhead.py --rates
	$(BIN)/python benchmarks/parallel_seeds.py

stability: setup      ## rerun every method on a second confirmation base; does each decided verdict hold?
	$(BIN)/python benchmarks/verdict_stability.py

full: setup           ## the paper-scale runs (real data in data/external, a GPU): results-full/, reports-full/
	for m in $$($(BIN)/python -c "import yaml; print(' '.join(yaml.safe_load(open('params.yaml'))['methods']))"); do \
	  $(BIN)/python -m replikit.runner $$m --profile full --out results-full/$$m || exit 1; done
	$(BIN)/python -m replikit.report --results results-full --out reports-full

gpu-check:            ## on a GPU machine (about 6 min): notebooks on CUDA (smoke) + every full profile on stand-in data, GPU-hours
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_check.py $(ARGS)

gpu-bench:            ## on a GPU machine: train.fit against the best bare loop, ResNet-18 on CIFAR-10 shapes
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_throughput.py $(ARGS)

gpu-suite:            ## on a GPU machine: the default suite on CUDA, timed against the committed CPU results, verdicts compared
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_suite.py $(ARGS)

gpu-session:          ## on a GPU machine (at most 8 min): what is left to measure there, most needed first
	PYTHON=$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) bash benchmarks/gpu_session.sh
