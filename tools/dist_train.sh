#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [seglab train options, e.g. --resume]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults 1, 0, 127.0.0.1, and on one
# node a free port, printed; multi-node 29500). Without CUDA the ranks train on CPU with gloo.
set -euo pipefail
CONFIG=$1; GPUS=$2; shift 2
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
seglab_torchrun "$GPUS" "$SEGLAB_ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
