#!/usr/bin/env bash
# Distributed training with torchrun (OpenMMLab conventions).
#
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py args...]
#
# GPUS is the number of processes on this node (one per GPU; on a CPU-only machine, processes
# using the gloo backend). Multi-node: run the same command on every node with
#   NNODES=<nodes> NODE_RANK=<0..NNODES-1> MASTER_ADDR=<node 0 address> PORT=<free port>
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
#   PYTHON (the repo's .venv/bin/python if present, else python).
# With one node and GPUS<=1 it runs a single process with --launcher none (no process group).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: [NNODES=n NODE_RANK=r MASTER_ADDR=a PORT=p] $0 CONFIG GPUS [train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
case "$GPUS" in
    ''|*[!0-9]*) echo "$0: GPUS must be a non-negative integer, got '$GPUS'" >&2; exit 2 ;;
esac
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$TOOLS_DIR")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ "$NNODES" -le 1 ] && [ "$GPUS" -le 1 ]; then
    exec "$PYTHON" "$TOOLS_DIR/train.py" "$CONFIG" --launcher none "$@"
fi
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOLS_DIR/train.py" "$CONFIG" --launcher pytorch "$@"
