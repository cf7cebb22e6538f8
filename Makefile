# Verbs for a fresh machine. `make demo` and `make test` are the README's two commands.
VENV := .venv
BIN := $(VENV)/bin
# The interpreter for a new .venv (`make env PYTHON=python3.12`; a different one than the
# venv's recreates it). Empty: setup_env.sh takes the first of python3.11/3.12/3.13/3.10.
PYTHON ?=

.DEFAULT_GOAL := help
# Two xdist workers (one per core, one OpenMP thread each: tests/conftest.py); the tests that
# share a training run or the Slurm cluster stay together on one worker (--dist loadgroup).
# The 25 slowest are printed, so the next slow test is seen when it lands.
PYTEST := $(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25
# Tiers to leave out or choose: make test-fast, or `make test-only MARKERS="not slurm"`.
MARKERS ?=

.PHONY: help env demo test test-fast test-only coverage lint

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

env:  ## create .venv with the pinned stack (mmcv wheel built once, then cached)
	PYTHON="$(PYTHON)" bash scripts/setup_env.sh

demo: env  ## generate a small VOC-layout dataset, train, test, print the per-class table
	$(BIN)/seglab demo

test: env lint  ## lint + the full suite (what .ci/run runs); Chromium and Slurm for their tests
	bash scripts/install_test_packages.sh
	$(PYTEST)

test-fast: env  ## everyday tier, under a minute: no training run, no subprocess CLI
	$(BIN)/python -m pytest -n 2 -m "not slow" -q

test-only: env  ## the suite with -m "$(MARKERS)": slow, zoo, slurm, device_check, browser
	bash scripts/install_test_packages.sh
	$(PYTEST) -m "$(MARKERS)"

coverage: env  ## the full suite with line coverage of seglab/ (its subprocesses included)
	bash scripts/install_test_packages.sh
	$(PYTEST) --cov --cov-report=term

lint: env  ## ruff over the library, tests, tools and scripts
	$(BIN)/ruff check seglab tests tools scripts
