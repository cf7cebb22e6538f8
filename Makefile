# Verbs for a fresh machine. `make demo` and `make test` are the README's two commands.
VENV := .venv
BIN := $(VENV)/bin
# The interpreter for a new .venv (`make env PYTHON=python3.12`; a different one than the
# venv's recreates it). Empty: setup_env.sh takes the first of python3.11/3.12/3.13/3.10.
PYTHON ?=

.DEFAULT_GOAL := help
.PHONY: help env demo test test-fast lint

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

env:  ## create .venv with the pinned stack (mmcv wheel built once, then cached)
	PYTHON="$(PYTHON)" bash scripts/setup_env.sh

demo: env  ## generate a small VOC-layout dataset, train, test, print the per-class table
	$(BIN)/seglab demo

test: env lint  ## lint + the full suite (what .ci/run runs); Chromium and Slurm for their tests
	bash scripts/install_test_packages.sh
	$(BIN)/python -m pytest

test-fast: env  ## everyday tier: every test not marked slow (no training runs)
	$(BIN)/python -m pytest -m "not slow"

lint: env  ## ruff over the library, tests, tools and scripts
	$(BIN)/ruff check seglab tests tools scripts
