# Verbs for a fresh machine. `make demo` and `make test` are the README's two commands.
VENV := .venv
BIN := $(VENV)/bin
# The interpreter for a new .venv (`make env PYTHON=python3.12`; a different one than the
# venv's recreates it). Empty: setup_env.sh takes the first of python3.11/3.12/3.13/3.10.
PYTHON ?=

.PHONY: env demo test lint

env:  ## create .venv with the pinned stack (mmcv wheel built once, then cached)
	PYTHON="$(PYTHON)" bash scripts/setup_env.sh

demo: env  ## generate a small VOC-layout dataset, train, test, print the per-class table
	$(BIN)/seglab demo

test: env  ## the test suite (what .ci/run runs); Chromium for the report screenshot test
	bash scripts/install_browser.sh
	$(BIN)/python -m pytest

lint: env
	$(BIN)/ruff check seglab tests tools scripts
