#!/usr/bin/env bash
# The one-call GPU check of cotap_mm: installs what it needs offline, then runs tools/gpu_check.py
# (CUDA tests, loss and training benchmarks, 200 iterations of the real config with a resume) and
# leaves a JSON report, the docs sections and a patch in OUT (docs/benchmarks.md, "GPU check").
#
#   bash tools/gpu_check.sh --prepare WHEELS [--python-version 3.11] [--platform PLATFORM]
#       (default platforms: manylinux_2_28 and manylinux2014, x86_64)
#       on a machine with a pip registry: download the wheels of requirements/gpu_check.txt
#       (about 85 MB, 55 of them OpenCV) for the GPU machine's Python into WHEELS
#   bash tools/gpu_check.sh --wheels WHEELS --out OUT [--budget-s 540]
#       on the GPU machine (Python with torch + torchvision, no network): a virtual environment
#       in OUT/venv that sees the system's torch, the wheels installed there, then the check
#   bash tools/gpu_check.sh --dry-run --out OUT [--wheels WHEELS]
#       the same on a CPU with tiny sizes (without --wheels: in the current Python environment)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="${PYTHON:-python3}"
say() { printf '[gpu_check] %s\n' "$*"; }
die() { printf '[gpu_check] ERROR: %s\n' "$*" >&2; exit 2; }

PREPARE='' WHEELS='' OUT='' DRY='' PYVER='' PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64) EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prepare) PREPARE="${2:?--prepare needs a folder}"; shift 2 ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --python-version) PYVER="${2:?}"; shift 2 ;;
    --platform) PLATFORMS=("${2:?}"); shift 2 ;;
    --budget-s) EXTRA+=(--budget-s "${2:?}"); shift 2 ;;
    --dry-run) DRY=1; EXTRA+=(--dry-run); shift ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

if [[ -n $PREPARE ]]; then
  PYVER="${PYVER:-$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
  say "downloading requirements/gpu_check.txt for Python $PYVER, ${PLATFORMS[*]} into $PREPARE"
  PLATFORM_ARGS=()
  for p in "${PLATFORMS[@]}" any; do PLATFORM_ARGS+=(--platform "$p"); done
  "$PYTHON_BIN" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" \
    "${PLATFORM_ARGS[@]}" -d "$PREPARE" \
    -r <(sed 's/;.*//' "$ROOT/requirements/gpu_check.txt")  # markers hold for the target Python
  say "done: $(du -sh "$PREPARE" | cut -f1) in $PREPARE; carry it to the GPU machine"
  exit 0
fi

[[ -n $OUT ]] || die "--out OUT is required"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="$PYTHON_BIN"
if [[ -n $WHEELS ]]; then
  [[ -d $WHEELS ]] || die "--wheels $WHEELS: no such folder (make it with --prepare)"
  "$PYTHON_BIN" -c 'import torch, torchvision' 2>/dev/null || \
    die "$PYTHON_BIN cannot import torch and torchvision: install them first (or set PYTHON)"
  if [[ ! -x $OUT/venv/bin/python ]]; then
    say "virtual environment $OUT/venv (with the system's torch)"
    "$PYTHON_BIN" -m venv --system-site-packages "$OUT/venv" || \
      die "could not create a virtual environment with $PYTHON_BIN -m venv (python3-venv?)"
  fi
  PY="$OUT/venv/bin/python"
  # --system-site-packages sees the base interpreter's packages only: when PYTHON is itself a
  # virtual (or conda) environment, its site-packages (torch) are added by a .pth file
  "$PYTHON_BIN" -c 'import site; print("\n".join(site.getsitepackages()))' > \
    "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_gpu_check_base.pth"
  say "installing the wheels of $WHEELS (offline, --no-deps)"
  "$PY" -m pip --disable-pip-version-check install -q --no-index --no-deps \
    --find-links "$WHEELS" -r "$ROOT/requirements/gpu_check.txt" > "$OUT/install.log" 2>&1 || \
    { tail -n 20 "$OUT/install.log" >&2; die "offline install failed (log: $OUT/install.log)"; }
elif [[ -z $DRY ]]; then
  die "--wheels WHEELS is required on the GPU machine (or --dry-run to test on a CPU)"
fi
# cotap_mm from this checkout: no installation needed
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/tools/gpu_check.py" --out "$OUT" "${EXTRA[@]}"
