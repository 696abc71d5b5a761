"""One call that checks cotap_mm on a GPU machine and measures what only a GPU can tell.

    python tools/gpu_check.py --out OUT [--budget-s 540] [--dry-run]

``bash tools/gpu_check.sh`` installs the environment from a prepared wheel folder, then runs this.
The steps (CUDA tests, the loss and training benchmarks, 200 iterations of the real config with
a resume), the report ``OUT/gpu_check.json`` (with the measured CUDA crossover of the loss) and
the docs patch ``OUT/gpu_check.patch``: docs/benchmarks.md, "GPU check". ``--dry-run``: the same
steps on the CPU with tiny sizes.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout
from benchmarks.gpu_check import run_check  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='report folder (created)')
    p.add_argument('--budget-s', type=float, default=540., help='time for all steps together')
    p.add_argument('--dry-run', action='store_true', help='CPU, tiny sizes: test the script')
    args = p.parse_args(argv)
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit('gpu_check: torch sees no CUDA device here; use --dry-run on a CPU')
    out = osp.abspath(args.out)
    report = run_check(ROOT, out, args.budget_s, args.dry_run)
    failed = [n for n, s in report['steps'].items() if s['status'].startswith(('failed', 'timed'))]
    print(f'[gpu_check] report: {osp.join(out, "gpu_check.json")}; failed steps: '
          f'{", ".join(failed) or "none"}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
