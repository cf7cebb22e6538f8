#!/usr/bin/env bash
# Create .venv (Python 3.11) and install seglab's pinned stack into it.
# Idempotent: a second run reuses the venv and the cached mmcv wheel
# (~/.cache/seglab/wheels, or $SEGLAB_CACHE). All logic: seglab/install.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3.11}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup_env: error: '$PY' not found. seglab needs Python 3.11: install it, or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
exec .venv/bin/python -m seglab.install "$@"
