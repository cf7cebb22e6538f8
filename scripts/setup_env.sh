#!/usr/bin/env bash
# Create .venv and install seglab's pinned stack into it. The interpreter: $PYTHON if set
# (make env PYTHON=python3.12), else the first of python3.11, 3.12, 3.13, 3.10 that runs.
# Idempotent: a second run reuses the venv and the cached mmcv wheel
# (~/.cache/seglab/wheels, or $SEGLAB_CACHE). All logic: seglab/platform/install.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SUPPORTED="3.10 3.11 3.12 3.13"  # pyproject.toml's requires-python

# "X.Y" of an interpreter, or nothing when it does not run: a pyenv shim for a version
# that is not activated is on PATH but exits 127, so being found is not enough.
py_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}
is_supported() {
  case " $SUPPORTED " in *" $1 "*) return 0 ;; esac
  return 1
}

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
  version=$(py_version "$PY")
  if [ -z "$version" ]; then
    echo "setup_env: error: PYTHON=$PY does not run here. Install it, or set PYTHON to one of python$(echo "$SUPPORTED" | sed 's/ /, python/g')" >&2
    exit 1
  fi
  if ! is_supported "$version"; then
    echo "setup_env: error: PYTHON=$PY is Python $version; seglab supports $SUPPORTED. Fix: make env PYTHON=python3.11" >&2
    exit 1
  fi
else
  PY=
  for candidate in python3.11 python3.12 python3.13 python3.10; do
    version=$(py_version "$candidate")
    if [ -n "$version" ] && is_supported "$version"; then
      PY=$candidate
      break
    fi
  done
  if [ -z "$PY" ]; then
    echo "setup_env: error: none of python3.11, python3.12, python3.13, python3.10 runs here. Install one (with its venv module and headers), or set PYTHON=/path/to/python3.X" >&2
    exit 1
  fi
fi

venv_version=$(py_version .venv/bin/python)
if [ -z "$venv_version" ]; then
  echo "setup_env: creating .venv with $PY (Python $version)"
  "$PY" -m venv --clear .venv
elif [ -n "${PYTHON:-}" ] && [ "$venv_version" != "$version" ]; then
  # An explicit PYTHON is a request for that interpreter: rebuild the venv rather than
  # keep installing into one of another version.
  echo "setup_env: .venv is Python $venv_version; recreating it with $PY (Python $version)"
  "$PY" -m venv --clear .venv
fi
exec .venv/bin/python -m seglab.platform.install "$@"
