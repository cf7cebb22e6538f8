#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG GPUS [seglab train options]
# mmseg's script and arguments: srun starts GPUS ranks (GPUS_PER_NODE a node, default
# min(GPUS, 8); CPUS_PER_TASK cores each, default 5; SRUN_ARGS passed on). GPUS_PER_NODE=0
# starts ranks on CPU nodes (TASKS_PER_NODE of them) without asking for GPUs. The ranks meet
# on the job's first node at a port derived from the job id (MASTER_PORT to choose).
# For a job that outlives its time limit, use `seglab submit` (checkpoint + requeue).
set -euo pipefail
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; GPUS=$4; shift 4
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
TASKS_PER_NODE=${TASKS_PER_NODE:-$(( GPUS_PER_NODE > 0 ? GPUS_PER_NODE : GPUS ))}
GRES=(); [ "$GPUS_PER_NODE" -gt 0 ] && GRES=(--gres="gpu:$GPUS_PER_NODE")
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options, as in mmseg's script
exec srun -p "$PARTITION" --job-name="$JOB_NAME" "${GRES[@]}" --ntasks="$GPUS" \
  --ntasks-per-node="$TASKS_PER_NODE" --cpus-per-task="${CPUS_PER_TASK:-5}" \
  --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "${SEGLAB_BIN}python" -u "$SEGLAB_ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
