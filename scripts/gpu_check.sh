#!/usr/bin/env bash
# Usage: scripts/gpu_check.sh [--tiny] [--out DIR] [--only STAGE ...]
# The prepared device check (seglab/platform/gpu_check.py): every config trains on the GPU,
# dist_train.sh over NCCL, kill -9 + --resume, seglab test, throughput vs mmseg.
# --tiny: the same stages at CPU size (CI runs it). On a bare GPU machine with no
# network, SEGLAB_KIT=DIR installs the wheels in DIR and builds mmcv from the sdist
# there first (seglab/platform/kit.py; README "GPU check" says how to fill DIR).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../tools/_env.sh"
PY=${SEGLAB_PYTHON:-${SEGLAB_BIN}python3}
export PYTHONPATH="$SEGLAB_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GPU_CHECK_STARTED=${GPU_CHECK_STARTED:-$(date +%s)}  # --deadline-s counts the kit too
if [ -n "${SEGLAB_KIT:-}" ]; then
  SITE=${SEGLAB_KIT_SITE:-/tmp/seglab-site}
  "$PY" -m seglab.platform.kit "$SEGLAB_KIT" "$SITE"
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi
exec "$PY" -m seglab.platform.gpu_check "$@"
