# Verbs for a fresh machine. `make demo` and `make test` are the README's two commands.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: env demo test lint

env:  ## create .venv with the pinned stack (mmcv wheel built once, then cached)
	bash scripts/setup_env.sh

demo: env  ## generate a small VOC-layout dataset, train, test, print the per-class table
	$(BIN)/seglab demo

test: env  ## the test suite (what .ci/run runs); Chromium for the report screenshot test
	bash scripts/install_browser.sh
	$(BIN)/python -m pytest

lint: env
	$(BIN)/ruff check seglab tests tools scripts
