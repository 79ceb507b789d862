# promogym: every target does its own set-up (a .venv built from pyproject.toml + constraints.txt).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= runs/demo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

.PHONY: install demo experiment test test-slow bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/promogym experiment experiments/configs/smoke.yml --out $(DEMO) --report $(DEMO)/report --no-progress
	@echo "demo report: $(DEMO)/report/report.md (run folder $(DEMO)/)"

experiment: install
	$(BIN)/promogym experiment experiments/configs/default.yml

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install
	$(BIN)/python -m pip install --quiet --constraint constraints.txt --editable '.[dev,ray]'
	$(BIN)/python -m pytest -m slow -q

bench: install
	$(BIN)/promogym bench world
	$(BIN)/promogym bench predictor
	$(BIN)/promogym bench env

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
