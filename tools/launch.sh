# Shared by tools/dist_{train,test}.sh and tools/slurm_{train,test}.sh, which source it: the
# interpreter (PYTHON, else the repo's .venv/bin/python if present, else python), PYTHONPATH with
# the repo root, and the two launchers.
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$TOOLS_DIR")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO_ROOT/.venv/bin/python" ]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

# torchrun_launch GPUS SCRIPT NPOS ARGS...: tools/SCRIPT with ARGS (its first NPOS before the
# --launcher option) in GPUS processes per node over NNODES nodes; one node with GPUS <= 1 runs a
# single process with --launcher none (no process group).
torchrun_launch() {
    local gpus=$1 script="$TOOLS_DIR/$2" npos=$3
    shift 3
    case "$gpus" in
        ''|*[!0-9]*) echo "$0: GPUS must be a non-negative integer, got '$gpus'" >&2; exit 2 ;;
    esac
    local nnodes=${NNODES:-1}
    if [ "$nnodes" -le 1 ] && [ "$gpus" -le 1 ]; then
        exec "$PYTHON" "$script" "${@:1:npos}" --launcher none "${@:npos+1}"
    fi
    exec "$PYTHON" -m torch.distributed.run \
        --nnodes="$nnodes" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$script" "${@:1:npos}" --launcher pytorch "${@:npos+1}"
}

# srun_launch PARTITION JOB_NAME SCRIPT ARGS...: tools/SCRIPT ARGS --launcher=slurm in GPUS tasks,
# GPUS_PER_NODE per node, CPUS_PER_TASK cores each, with the extra srun options of SRUN_ARGS.
srun_launch() {
    local partition=$1 job_name=$2 script="$TOOLS_DIR/$3"
    shift 3
    local gpus_per_node=${GPUS_PER_NODE:-8}
    set -x
    # SRUN_ARGS is deliberately unquoted: it holds several options
    srun -p "$partition" \
        --job-name="$job_name" \
        --gres=gpu:"$gpus_per_node" \
        --ntasks="${GPUS:-8}" \
        --ntasks-per-node="$gpus_per_node" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "$PYTHON" -u "$script" "$@" --launcher="slurm"
}
