#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [seglab train options, e.g. --resume]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults 1, 0, 127.0.0.1, 29500).
# Without CUDA the ranks train on CPU with the gloo backend.
set -euo pipefail
CONFIG=$1; GPUS=$2; shift 2
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "${SEGLAB_BIN}torchrun" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$GPUS" "$SEGLAB_ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
