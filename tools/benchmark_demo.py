"""The demo's experiment over seeds, with its controls and ablations, on the same probes.

    python tools/benchmark_demo.py [--seeds 0 1 2] [--cotap-iters N] [--rows ...] [--update-docs]
    python tools/benchmark_demo.py --collect --seeds 0 1 2 --work-dir DIR [--update-docs]

Details (rows, probes, outputs): docs/benchmarks.md, "Demo: CoTAP against its init and
controls".
"""
import argparse
import json
import os.path as osp
import sys

from rich.console import Console

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout

from benchmarks.demo_presets import PRESETS  # noqa: E402
from benchmarks.demo_report import ROWS, benchmark_section, print_summary, summarize  # noqa: E402
from benchmarks.demo_seeds import collect, rescore, run_seed  # noqa: E402
from benchmarks.report import machine_info, machine_line, section_markers, write_section  # noqa
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

MARK_START, MARK_END = section_markers('benchmark_demo')
DOCS = osp.join(ROOT, 'docs', 'benchmarks.md')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='The demo experiment over seeds, with controls')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--work-dir', default='work_dirs/benchmark_demo')
    p.add_argument('--preset', choices=sorted(PRESETS), default='default')
    p.add_argument('--cotap-iters', type=int, default=None,
                   help="N: CoTAP and control steps (default: the preset's)")
    p.add_argument('--cache-dir', default='work_dirs/demo_cache')
    p.add_argument('--rows', nargs='+', choices=list(ROWS), default=list(ROWS))
    p.add_argument('--cotap-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra --cfg-options of every CoTAP row')
    p.add_argument('--rescore', action='store_true',
                   help='train nothing: re-run the analysis probes (concentration, k-means, '
                   'L-BFGS linear) on the checkpoints of the run in --work-dir and update its '
                   'JSON (and the docs with --update-docs)')
    p.add_argument('--collect', action='store_true',
                   help='train nothing: summarise the results.json of --seeds in --work-dir '
                   '(seeds run by separate invocations, e.g. one per machine or session)')
    p.add_argument('--update-docs', action='store_true')
    args = p.parse_args(argv)
    if args.collect and args.rescore:
        p.error('--collect and --rescore exclude each other')
    if 'cotap' not in args.rows:
        p.error('--rows must include cotap: every gain is CoTAP\'s')
    if 'init' not in args.rows:
        args.rows.insert(0, 'init')  # the reference of every gain
    return args


def update_docs(results, summary, rows, argv, preset='default', rescored=False,
                collected=False):
    section = benchmark_section(results, summary, rows, argv, machine_line(machine_info()),
                                preset, rescored, collected)
    write_section(DOCS, 'benchmark_demo', section,
                  'Demo: CoTAP against its init and controls')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console()
    if args.rescore:
        results = rescore(args.work_dir, args.preset, args.cache_dir, console)
    else:
        results = collect(args.work_dir, args.seeds, args.rows) if args.collect else []
    for seed in [] if args.rescore or args.collect else args.seeds:
        console.rule(f'seed {seed}')
        results.append(run_seed(args.work_dir, seed, args.rows, args.preset,
                                args.cache_dir, args.cotap_iters, args.cotap_options, console))
        # after every seed, so that an interrupted run keeps what it measured
        atomic_write_text(osp.join(args.work_dir, 'benchmark_demo.json'),
                          json.dumps(dict(results=results), indent=2))
    summary = summarize(results, args.rows)
    print_summary(results, summary, args.rows, console)
    if not args.collect:
        atomic_write_text(osp.join(args.work_dir, 'benchmark_demo.json'),
                          json.dumps(dict(results=results, summary=summary), indent=2))
    if args.update_docs:
        update_docs(results, summary, args.rows, argv, args.preset, rescored=args.rescore,
                    collected=args.collect)
        console.print(f'updated {DOCS}')
    return results, summary


if __name__ == '__main__':
    main()
