"""The pre-registered fair comparison of docs/protocol.md, one seed at a time.

    python tools/benchmark_demo.py --seeds S            # a seed's six rows and probes (~1.5 h)
    python tools/benchmark_demo.py --seeds S --resume   # keep the rows an earlier run finished
    python tools/benchmark_demo.py --collect --update-docs
    python tools/benchmark_demo.py --ssl-gate           # the self-supervised init's gate (seed 0)
    python tools/benchmark_demo.py --oracle-seeds S     # the follow-up with oracle neighbours

Each finished seed is written to docs/results/fair_comparison/seed_<S>.json; ``--collect``
merges them (and the follow-up's oracle_seed_<S>.json) into docs/results/fair_comparison.json
and, with ``--update-docs``, writes the tables of docs/benchmarks.md, "Demo: the fair comparison".
"""
import argparse
import json
import os.path as osp
import sys

from rich.console import Console

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout

from benchmarks.demo_presets import PRESETS  # noqa: E402
from benchmarks.fair_comparison import (collect, render, render_diagnostics,  # noqa: E402
                                        render_oracle, render_primary, run_oracle_seed,
                                        run_seed, ssl_gate)
from benchmarks.report import write_section  # noqa: E402
from tools._common.args import positive_int  # noqa: E402
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

RESULTS = osp.join(ROOT, 'docs', 'results', 'fair_comparison')
DOCS = osp.join(ROOT, 'docs', 'benchmarks.md')
LEADS = (osp.join(ROOT, 'README.md'), osp.join(ROOT, 'docs', 'demo.md'))  # primary metric


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='The fair comparison of docs/protocol.md')
    p.add_argument('--seeds', type=int, nargs='+', default=[])
    p.add_argument('--oracle-seeds', type=int, nargs='+', default=[],
                   help='run the follow-up rows (c) and (d) with oracle neighbours of these seeds '
                        '(docs/protocol.md, 2026-12-07)')
    p.add_argument('--iters', type=positive_int, default=1000,
                   help='N, the steps of every trained row (the protocol: 1,000)')
    p.add_argument('--preset', choices=sorted(PRESETS), default='default')
    p.add_argument('--work-dir', default='work_dirs/benchmark_demo')
    p.add_argument('--cache-dir', default='work_dirs/demo_cache')
    p.add_argument('--results', default=RESULTS,
                   help='folder of the per-seed JSON files (the merged file goes beside it)')
    p.add_argument('--resume', action='store_true',
                   help="keep the rows and probes that an earlier run of the seed at this "
                        "checkout's commit finished in --work-dir (docs/protocol.md, 2026-12-07)")
    p.add_argument('--ssl-gate', action='store_true',
                   help='train the self-distilled init for --ssl-iters steps on seed 0 and probe '
                        'it against random weights on val (the second table\'s gate)')
    p.add_argument('--ssl-iters', type=positive_int, default=4000)
    p.add_argument('--collect', action='store_true',
                   help='merge the per-seed files into <results>.json')
    p.add_argument('--update-docs', action='store_true',
                   help='with --collect: write the tables into docs/benchmarks.md and the primary '
                        'metric into the leads of README.md and docs/demo.md')
    args = p.parse_args(argv)
    if not (args.seeds or args.oracle_seeds or args.collect or args.ssl_gate):
        p.error('give --seeds S [S ...] to run, --oracle-seeds S [S ...], --ssl-gate, '
                'or --collect')
    if args.update_docs and not args.collect:
        p.error('--update-docs writes the collected tables: add --collect')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    for seed in args.seeds:
        console.rule(f'seed {seed}')
        run_seed(args.work_dir, seed, args.results, args.iters, args.preset, args.cache_dir,
                 console, resume=args.resume)
    for seed in args.oracle_seeds:
        console.rule(f'seed {seed}, oracle neighbours')
        run_oracle_seed(args.work_dir, seed, args.results, args.iters, args.preset,
                        args.cache_dir, console, resume=args.resume)
    if args.ssl_gate:
        console.rule('the self-supervised init\'s gate, seed 0')
        gate = ssl_gate(args.work_dir, args.results, 0, args.ssl_iters, args.preset,
                        args.cache_dir, console)
        console.print(f"val: selfdistill {gate['scores']['selfdistill']['val']:.2f}, random "
                      f"{gate['scores']['random']['val']:.2f}, gain {gate['val_gain']:+.2f} "
                      f"mIoU: {'passes' if gate['passes'] else 'does not pass'} the 5-mIoU gate")
    if not args.collect:
        return None
    merged = collect(args.results)
    atomic_write_text(args.results.rstrip('/') + '.json', json.dumps(merged, indent=1) + '\n')
    tables = '\n\n'.join(render(merged, split) for split in ('test', 'val'))
    console.print(tables)
    if args.update_docs:
        write_section(DOCS, 'fair_comparison', tables, 'Demo: the fair comparison')
        write_section(DOCS, 'fair_comparison_diagnostics', render_diagnostics(merged),
                      'Demo: the fair comparison, diagnostics')
        write_section(DOCS, 'fair_comparison_oracle', '\n\n'.join(
            render_oracle(merged, split) for split in ('test', 'val')),
            'Demo: the fair comparison, oracle neighbours')
        for path in LEADS:
            write_section(path, 'fair_comparison_primary', render_primary(merged),
                          'The fair comparison')
    return merged


if __name__ == '__main__':
    main()
