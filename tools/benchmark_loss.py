"""Benchmark of ContinuousAPLoss: forward+backward time, peak extra memory and accuracy per impl.

    .venv/bin/python tools/benchmark_loss.py [--device cuda]
    .venv/bin/python tools/benchmark_loss.py --sizes 4200 --impls dense sorted --no-write

Details: docs/benchmarks.md, "ContinuousAPLoss" (whose table this tool rewrites).
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout

from benchmarks.loss_timing import IMPLS, QUADRATIC, add_diffs, render_table, time_case  # noqa
from benchmarks.report import machine_info, machine_line, write_section  # noqa: E402
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402
from tools._common.args import tool_logger  # noqa: E402

DEFAULT_SIZES = (1000, 4200, 16800, 65536, 262144, 1048576)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=list(DEFAULT_SIZES))
    parser.add_argument('--impls', nargs='+', default=list(IMPLS), choices=IMPLS)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--quadratic-max-n', type=int, default=16800,
                        help='skip dense and chunked above this length (time/memory grow as n²)')
    parser.add_argument('--output', default=osp.join(ROOT, 'docs', 'benchmarks.md'))
    parser.add_argument('--no-write', action='store_true', help='only print the table')
    parser.add_argument('--json', metavar='PATH',
                        help='also write the measurements (one row per impl and n) as JSON')
    parser.add_argument('--worker', nargs=2, metavar=('IMPL', 'N'), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(time_case(args.worker[0], int(args.worker[1]), args.device,
                                   args.repeats)))
        return
    from mmengine.utils import ProgressBar
    logger = tool_logger('benchmark_loss')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda given but CUDA is not available')
    cases = [(impl, n) for n in args.sizes for impl in args.impls
             if not (impl in QUADRATIC and n > args.quadratic_max_n)]
    results = {}
    bar = ProgressBar(len(cases))
    for impl, n in cases:
        cmd = [sys.executable, osp.abspath(__file__), '--worker', impl, str(n), '--device',
               args.device, '--repeats', str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            logger.error(f'{impl} n={n} failed:\n{proc.stderr[-2000:]}')
            raise SystemExit(1)
        results[(impl, n)] = json.loads(proc.stdout.strip().splitlines()[-1])
        bar.update()
    print()
    add_diffs(results, args.sizes, args.impls, args.device)
    machine = machine_info(args.device)
    section = '\n'.join([
        f'Command: `{" ".join(["python"] + sys.argv)}`', '',
        f'Machine: {machine_line(machine)}; device `{args.device}`; float32 inputs; '
        f'median of {args.repeats} forward+backward passes; {time.strftime("%Y-%m-%d")}.', '',
        render_table(results, args.sizes, args.impls)])
    print(section)
    if args.json:
        rows = [dict(r, impl=impl, n=n) for (impl, n), r in sorted(results.items())]
        atomic_write_text(args.json, json.dumps(dict(machine=machine, device=args.device,
                                                     rows=rows), indent=1))
        logger.info(f'measurements written to {args.json}')
    if not args.no_write:
        # one section per device kind: a GPU run does not replace the CPU table
        cuda = args.device.startswith('cuda')
        write_section(args.output, 'benchmark_loss_cuda' if cuda else 'benchmark_loss', section,
                      'ContinuousAPLoss on CUDA' if cuda else 'ContinuousAPLoss')
        logger.info(f'table written to {args.output}')


if __name__ == '__main__':
    main()
