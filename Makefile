# promogym: every target does its own set-up (a .venv built from pyproject.toml + constraints.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: install demo experiment fidelity test test-slow bench lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/promogym experiment experiments/configs/smoke.yml --out $(DEMO) --report $(DEMO)/report --no-progress
	@echo "demo report: $(DEMO)/report/report.md (run folder $(DEMO)/)"

experiment: install
	$(BIN)/promogym experiment experiments/configs/default.yml --report results/default --force

fidelity: install
	$(BIN)/promogym experiment experiments/configs/fidelity.yml --out runs/fidelity --report results/fidelity --force

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev,ray]'
	$(BIN)/python -m pytest -m slow -q

bench: install
	$(BIN)/promogym bench world --out results/bench --force
	$(BIN)/promogym bench predictor --out results/bench --force
	$(BIN)/promogym bench env --out results/bench --force
	$(BIN)/promogym bench policy --out results/bench --force

# the API reference (site/), from the docstrings; docs/hooks.py generates the env config page from the configs
docs: install
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev,docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site
	@echo "API reference: site/index.html"

# mypy reads the package through a tree of links laid out as it is installed (promogym/envs -> envs/, ...)
lint: install
	$(BIN)/ruff check .
	rm -rf .typecheck && mkdir -p .typecheck/promogym
	ln -s $(CURDIR)/promogym/__init__.py $(CURDIR)/promogym/core .typecheck/promogym/
	for d in envs agents predictors experiments; do ln -s $(CURDIR)/$$d .typecheck/promogym/$$d; done
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .typecheck site build/docs-src
