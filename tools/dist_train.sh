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
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
torchrun_launch "$GPUS" train.py 1 "$CONFIG" "$@"
