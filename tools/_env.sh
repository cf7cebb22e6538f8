# Sourced by the tools/ and scripts/ shell shims: the repo root and the venv's bin dir.
SEGLAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -x "$SEGLAB_ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
  SEGLAB_BIN="$SEGLAB_ROOT/.venv/bin/"
else
  SEGLAB_BIN=""  # an activated venv or conda env: use what is on PATH
fi
