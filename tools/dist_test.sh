#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [seglab test options, e.g. --show-dir]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT (defaults 1, 0, 127.0.0.1, and on one
# node a free port, printed; multi-node 29500).
set -euo pipefail
CONFIG=$1; CHECKPOINT=$2; GPUS=$3; shift 3
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
seglab_torchrun "$GPUS" "$SEGLAB_ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
