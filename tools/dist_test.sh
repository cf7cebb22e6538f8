#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [seglab test options, e.g. --show-dir]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults 1, 0, 127.0.0.1, 29500).
set -euo pipefail
CONFIG=$1; CHECKPOINT=$2; GPUS=$3; shift 3
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "${SEGLAB_BIN}torchrun" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$GPUS" "$SEGLAB_ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" \
  --launcher pytorch "$@"
