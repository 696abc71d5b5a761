#!/usr/bin/env bash
# Training on a slurm cluster (OpenMMLab conventions): one task per GPU, started by srun.
#
#   [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS="..."] \
#       bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py args...]
#
# GPUS: total number of tasks (GPUs); GPUS_PER_NODE: tasks and GPUs per node; SRUN_ARGS: extra
# srun options (e.g. "--quotatype=auto" or "--time=1-00:00:00"); PYTHON: the interpreter (the
# repo's .venv/bin/python if present, else python). Needs GPUs: mmengine's slurm launcher binds
# each task to a CUDA device.
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
srun_launch "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
