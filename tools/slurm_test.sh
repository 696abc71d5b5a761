#!/usr/bin/env bash
# Testing on a slurm cluster (OpenMMLab conventions): one task per GPU, started by srun.
#
#   [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS="..."] \
#       bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py args...]
#
# GPUS: total number of tasks (GPUs); GPUS_PER_NODE: tasks and GPUs per node; SRUN_ARGS: extra
# srun options; PYTHON: the interpreter (the repo's .venv/bin/python if present, else python).
# Needs GPUs: mmengine's slurm launcher binds each task to a CUDA device.
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]" >&2
    exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/launch.sh"
srun_launch "$1" "$2" test.py "$3" "$4" "${@:5}"
