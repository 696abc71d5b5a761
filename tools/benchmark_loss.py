"""Benchmark of ContinuousAPLoss: forward+backward time, peak extra memory and accuracy per impl.

    .venv/bin/python tools/benchmark_loss.py                       # CPU, default sizes
    .venv/bin/python tools/benchmark_loss.py --device cuda         # on a GPU
    .venv/bin/python tools/benchmark_loss.py --sizes 4200 --impls dense sorted --no-write

Every (impl, n) runs in a fresh subprocess so that its peak memory is its own: on CPU the peak
resident set size (VmHWM, reset through /proc/self/clear_refs after the inputs exist), on CUDA
``torch.cuda.max_memory_allocated`` above the inputs. Times are the median of ``--repeats``
forward+backward passes after one warm-up. The accuracy column is the largest absolute difference
of the loss and of the gradient to ``dense`` (float32 inputs; dense evaluated once in this process)
where dense fits in ``--quadratic-max-n``. The quadratic impls (dense, chunked) are skipped above
that length. The table is printed and, unless ``--no-write``, written into docs/benchmarks.md
between markers, with the command line and the machine.
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # allow running without an installed cotap_mm
    sys.path.insert(0, ROOT)

from cotap_mm.utils.benchmark_report import (fmt_bytes, machine_info, machine_line,  # noqa: E402
                                             write_section)
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

DEFAULT_SIZES = (1000, 4200, 16800, 65536, 262144, 1048576)
IMPLS = ('dense', 'chunked', 'sorted', 'auto')
QUADRATIC = ('dense', 'chunked')


def make_inputs(n, device, seed=0):
    """A CoTAP-like list: cosine similarities in [-0.4, 1], 1/6 positives (5 of 30 rows)."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(n, generator=gen) * 1.4 - 0.4
    pred = (target + 0.2 * torch.randn(n, generator=gen)).clamp(-1, 1)
    pos_mask = torch.rand(n, generator=gen) < 1 / 6
    return pred.to(device), target.to(device), pos_mask.to(device)


def _rss_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def run_case(impl, n, device, repeats):
    """Time and peak extra memory of one impl at one length, in this (fresh) process."""
    from cotap_mm.models.losses import continuous_ap_loss, select_impl
    pred, target, pos_mask = make_inputs(n, device)
    cuda = device.startswith('cuda')

    def step():
        p = pred.detach().requires_grad_(True)
        continuous_ap_loss(p, target, pos_mask, impl=impl).backward()
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS (VmHWM) to the current RSS
        base = _rss_kib('VmRSS')
        step()
        peak = (_rss_kib('VmHWM') - base) * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    chosen = select_impl(n, torch.device(device)) if impl == 'auto' else impl
    return dict(impl=impl, n=n, seconds=statistics.median(times), peak_bytes=max(peak, 0),
                chosen=chosen)


def accuracy(impl, n, device, reference):
    from cotap_mm.models.losses import continuous_ap_loss
    pred, target, pos_mask = make_inputs(n, device)
    p = pred.detach().requires_grad_(True)
    loss = continuous_ap_loss(p, target, pos_mask, impl=impl)
    loss.backward()
    ref_loss, ref_grad = reference
    return max(abs(loss.item() - ref_loss.item()), (p.grad - ref_grad).abs().max().item())


def render(results, args, machine):
    lines = [
        f'Command: `{" ".join(["python"] + sys.argv)}`', '',
        f'Machine: {machine}; device `{args.device}`; float32 inputs; '
        f'median of {args.repeats} forward+backward passes; {time.strftime("%Y-%m-%d")}.', '',
        '| n | impl | fwd+bwd time | peak extra memory | max abs diff to dense | vs dense time '
        '| vs dense memory |', '|---:|---|---:|---:|---:|---:|---:|'
    ]
    for n in args.sizes:
        dense = results.get(('dense', n))
        for impl in args.impls:
            r = results.get((impl, n))
            if r is None:
                lines.append(f'| {n:,} | {impl} | skipped (O(n²)) | | | | |')
                continue
            name = f'auto → {r["chosen"]}' if impl == 'auto' else impl
            diff = r.get('diff')
            diff = '' if diff is None else f'{diff:.1e}'
            rel_t = rel_m = ''
            if dense and impl != 'dense':
                rel_t = f'{r["seconds"] / dense["seconds"]:.3f}×'
                rel_m = f'{100 * r["peak_bytes"] / max(dense["peak_bytes"], 1):.1f} %'
            lines.append(f'| {n:,} | {name} | {r["seconds"]:.3f} s | {fmt_bytes(r["peak_bytes"])} '
                         f'| {diff} | {rel_t} | {rel_m} |')
    return '\n'.join(lines)


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
        print(json.dumps(run_case(args.worker[0], int(args.worker[1]), args.device,
                                  args.repeats)))
        return
    from mmengine.logging import MMLogger
    from mmengine.utils import ProgressBar
    logger = MMLogger.get_instance('benchmark_loss', log_level='INFO')
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
    for n in args.sizes:
        if ('dense', n) not in results:
            continue
        pred, target, pos_mask = make_inputs(n, args.device)
        p = pred.detach().requires_grad_(True)
        from cotap_mm.models.losses import continuous_ap_loss
        loss = continuous_ap_loss(p, target, pos_mask, impl='dense')
        loss.backward()
        for impl in args.impls:
            if (impl, n) in results:
                results[(impl, n)]['diff'] = accuracy(impl, n, args.device,
                                                      (loss.detach(), p.grad))
    machine = machine_info(args.device)
    section = render(results, args, machine_line(machine))
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
