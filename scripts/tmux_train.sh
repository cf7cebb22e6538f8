#!/usr/bin/env bash
# Usage: scripts/tmux_train.sh CONFIG GPUS [seglab train options]
# Starts tools/dist_train.sh in a detached tmux session named after the config, with this
# shell's environment (CUDA_VISIBLE_DEVICES, PORT, venv...) whatever the tmux server's is;
# logs to WORK_DIR/tmux_train.log, and prints how to attach and resume.
set -euo pipefail
CONFIG=$1; GPUS=$2; shift 2
source "$(dirname "${BASH_SOURCE[0]}")/../tools/_env.sh"
exec "${SEGLAB_BIN}seglab" train "$CONFIG" --tmux --gpus "$GPUS" "$@"
