# Sourced by the tools/ and scripts/ shell shims: the repo root and the venv's bin dir.
SEGLAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -x "$SEGLAB_ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
  SEGLAB_BIN="$SEGLAB_ROOT/.venv/bin/"
else
  SEGLAB_BIN=""  # an activated venv or conda env: use what is on PATH
fi

# Usage: seglab_torchrun PROCS SCRIPT ARGS (exec). Multi-node: NNODES, NODE_RANK, MASTER_ADDR
# (defaults 1, 0, 127.0.0.1) and PORT (or MASTER_PORT).
# Without PORT on one node: a port the OS reports free, so a second job on the node does not
# fail with "address in use" on a shared default. It is free again until torchrun binds it a
# second later; another job would have to be handed the same of ~28k ports in that second, and
# would fail at once. (torchrun --standalone holds its port, but nobody learns the number.)
# Nodes must agree without talking, so multi-node keeps mmseg's fixed default, 29500.
seglab_torchrun() {
  local procs=$1 port=${PORT:-${MASTER_PORT:-}} why="from PORT/MASTER_PORT"; shift
  if [ -z "$port" ] && [ "${NNODES:-1}" = 1 ]; then
    port=$("${SEGLAB_BIN}python" -c 'import socket; s = socket.socket(); s.bind(("", 0))
print(s.getsockname()[1])') why="free on this node; PORT=N to choose"
  elif [ -z "$port" ]; then
    port=29500 why="multi-node default; PORT=N on every node to run another"
  fi
  echo "seglab: rendezvous port $port ($why)" >&2
  exec "${SEGLAB_BIN}torchrun" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="$port" \
    --nproc_per_node="$procs" "$@"
}
