#!/usr/bin/env bash
# Idempotent set-up of the cotap_mm development environment in .venv/ (Python 3.11, CPU).
#
#   bash tools/setup_env.sh                  # full mode; or: make setup (make test / demo call it)
#   bash tools/setup_env.sh --pretrain-only  # pretraining-only mode (COTAP_MM_VENV=.venv-pretrain)
#
# Full mode, steps each skipped when already done:
#   1. .venv/ with Python 3.11
#   2. torch + torchvision (requirements/torch.txt)
#   3. full mmcv 2.1.0 with compiled ops: a cached wheel from $COTAP_MM_WHEEL_DIR
#      (default ~/.cache/cotap_mm/wheels), else the matching prebuilt wheel in ../shared/wheels,
#      else built from the PyPI sdist with the C++20 patch (about 12-15 minutes on 2 cores)
#   4. the OpenMMLab stack, faiss, mim, test tools; cotap_mm itself in editable mode
# Pretraining-only mode (tools/train.py, tools/precompute_knn.py; no mmsegmentation, no tests):
#   1. the virtual environment (default .venv-pretrain/; any Python 3.8+)
#   2. keeps a torch >= 2.1 already there (CPU or CUDA: create the venv with your CUDA torch
#      first), else installs requirements/torch.txt
#   3. mmcv-lite 2.1.0 (pure Python, no compiled ops, nothing to build)
#   4. requirements/pretrain.txt and cotap_mm in editable mode
# A stamp file (.venv/.cotap_mm_stamp) holds a hash of the inputs; when it matches and the stack
# imports, the script ends in seconds. Every failing step names the package and its log file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=full
case "${1:-}" in
  '') ;;
  --pretrain-only) MODE=pretrain ;;
  -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) printf '[setup] ERROR: unknown argument "%s" (expected nothing or --pretrain-only)\n' "$1" >&2
     exit 2 ;;
esac
if [[ $MODE == pretrain ]]; then
  VENV="${COTAP_MM_VENV:-$ROOT/.venv-pretrain}"
else
  VENV="${COTAP_MM_VENV:-$ROOT/.venv}"
fi
PYTHON_BIN="${PYTHON:-python3.11}"
MMCV_VERSION=2.1.0
WHEEL_DIR="${COTAP_MM_WHEEL_DIR:-$HOME/.cache/cotap_mm/wheels}"
SHARED_WHEELS="${COTAP_MM_SHARED_WHEELS:-$ROOT/../shared/wheels}"
LOG_DIR="${COTAP_MM_LOG_DIR:-$ROOT/.setup_logs}"
mkdir -p "$LOG_DIR" "$WHEEL_DIR"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# run_logged NAME CMD...: run a step with its output in $LOG_DIR/NAME.log; on failure, say which
# step failed, where the log is, and show its tail.
run_logged() {
  local name="$1"; shift
  local log="$LOG_DIR/$name.log"
  if ! "$@" >"$log" 2>&1; then
    printf '[setup] ERROR: step "%s" failed (command: %s)\n' "$name" "$*" >&2
    printf '[setup] full log: %s -- last lines:\n' "$log" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}

stamp_inputs() {
  { echo "$MODE"; cat requirements/torch.txt requirements/pretrain.txt requirements/runtime.txt \
    requirements/mim.txt requirements/tests.txt setup.py tools/setup_env.sh; } | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------------------------------------
# 0. fast path
STAMP="$VENV/.cotap_mm_stamp"
WANT="$(stamp_inputs)"
if [[ $MODE == pretrain ]]; then CHECK="import cotap_mm, mmpretrain.models"
else CHECK="import cotap_mm, mmseg, mmpretrain, mmcv.ops"; fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && \
   "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
  say "environment in $VENV ($MODE mode) is up to date"
  exit 0
fi

if [[ $MODE == pretrain ]]; then
  # 1. virtual environment (kept when it exists: it may hold the user's CUDA torch)
  if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON_BIN" >/dev/null 2>&1 || die "$PYTHON_BIN not found (set PYTHON=/path/to/python3)"
    say "creating virtual environment $VENV"
    run_logged venv "$PYTHON_BIN" -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
  PIP=("$PY" -m pip --disable-pip-version-check)
  "$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 8)' 2>/dev/null || \
    die "$PY is older than Python 3.8"
  run_logged pip-upgrade "${PIP[@]}" install -q 'pip>=23.2'
  # 2. torch: any torch >= 2.1 with its torchvision is kept
  if "$PY" -c "import torch, torchvision; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); assert v >= (2, 1)" >/dev/null 2>&1; then
    say "keeping torch $("$PY" -c 'import torch; print(torch.__version__)') in $VENV"
  else
    say "installing torch + torchvision (requirements/torch.txt; CPU wheels)"
    run_logged torch "${PIP[@]}" install -r requirements/torch.txt
  fi
  # 3. mmcv-lite: the same Python modules as mmcv, without the compiled ops, which CoTAP
  # pretraining does not use (the inner patch loss pools with torchvision's roi_align).
  if "$PY" -c "import mmcv.ops" >/dev/null 2>&1; then
    say "full mmcv is installed in $VENV: kept (a superset of mmcv-lite)"
  else
    say "installing mmcv-lite $MMCV_VERSION"
    run_logged mmcv-lite "${PIP[@]}" install --no-deps "mmcv-lite==$MMCV_VERSION"
  fi
  # 4. the pretraining stack and cotap_mm
  say "installing the pretraining stack (requirements/pretrain.txt)"
  run_logged pretrain "${PIP[@]}" install -r requirements/pretrain.txt
  run_logged cotap_mm "${PIP[@]}" install --no-deps --no-build-isolation -e .
  run_logged import-check "$PY" -c "$CHECK"
  echo "$WANT" > "$STAMP"
  say "done (pretraining only: tools/train.py, tools/precompute_knn.py; mmseg evaluation needs"
  say "the full mode): activate with 'source $VENV/bin/activate'"
  exit 0
fi

# 1. virtual environment
command -v "$PYTHON_BIN" >/dev/null 2>&1 || die "$PYTHON_BIN not found: cotap_mm needs Python 3.11 (set PYTHON=/path/to/python3.11)"
"$PYTHON_BIN" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null || \
  die "$PYTHON_BIN is not Python 3.11 (the pinned torch 2.14.1 and mmcv wheels are cp311); set PYTHON=/path/to/python3.11"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  run_logged venv "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
run_logged pip-upgrade "${PIP[@]}" install -q 'pip>=23.2'

# 2. torch
if ! "$PY" -c "import torch, torchvision; assert torch.__version__.split('+')[0] == '2.14.1'" >/dev/null 2>&1; then
  say "installing torch + torchvision (requirements/torch.txt)"
  run_logged torch "${PIP[@]}" install -r requirements/torch.txt
fi

# 3. full mmcv with compiled ops
mmcv_ok() { "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; }
if ! mmcv_ok; then
  WHEEL="$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-cp311-cp311-linux_*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$WHEEL" ]]; then
    SHARED="$(ls "$SHARED_WHEELS"/mmcv-$MMCV_VERSION-cp311-cp311-linux_"$(uname -m)".whl 2>/dev/null | head -n1 || true)"
    if [[ -n "$SHARED" && "${COTAP_MM_BUILD_MMCV:-0}" != 1 ]]; then
      say "using the prebuilt mmcv wheel $SHARED (set COTAP_MM_BUILD_MMCV=1 to build from source)"
      cp "$SHARED" "$WHEEL_DIR/"
    else
      say "building full mmcv $MMCV_VERSION from the PyPI sdist (C++20 patch; ~12-15 min on 2 cores)"
      say "  log: $LOG_DIR/mmcv-build.log; wheel cache: $WHEEL_DIR"
      BUILD_DIR="$(mktemp -d)"
      run_logged mmcv-build-tools "${PIP[@]}" install 'setuptools<70' wheel ninja
      run_logged mmcv-download "${PIP[@]}" download --no-deps --no-binary :all: \
        "mmcv==$MMCV_VERSION" -d "$BUILD_DIR"
      tar -xzf "$BUILD_DIR"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD_DIR"
      SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
      # torch >= 2.6 headers require C++20; mmcv 2.1.0 hard-codes -std=c++14/17 (mmcv#3341)
      sed -i -E "s/-std=c\+\+1[47]/-std=c++20/g" "$SRC/setup.py"
      grep -q -- '-std=c++20' "$SRC/setup.py" || die "could not patch the C++ standard in $SRC/setup.py"
      MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" run_logged mmcv-build \
        "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$WHEEL_DIR" "$SRC"
      rm -rf "$BUILD_DIR"
    fi
    WHEEL="$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-cp311-cp311-linux_*.whl | head -n1)"
  fi
  say "installing $(basename "$WHEEL")"
  run_logged mmcv-install "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL"
fi

# 4. the rest of the stack, mim, test tools, cotap_mm
say "installing the OpenMMLab stack, faiss, mim and test tools"
run_logged runtime "${PIP[@]}" install -r requirements/runtime.txt -r requirements/mim.txt \
  -r requirements/tests.txt
run_logged openmim "${PIP[@]}" install --no-deps openmim==0.3.9
run_logged cotap_mm "${PIP[@]}" install --no-deps --no-build-isolation -e .
mmcv_ok || die "mmcv.ops does not import after installation (see $LOG_DIR/mmcv-install.log); \
a cached wheel built for another torch may be stale: delete $WHEEL_DIR/mmcv-*.whl and rerun"
run_logged import-check "$PY" -c \
  "import cotap_mm, mmseg.models, mmpretrain.models; from mmcv.ops import roi_align"
echo "$WANT" > "$STAMP"
say "done: activate with 'source $VENV/bin/activate'"
