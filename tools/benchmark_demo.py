"""Repeat the demo's pretraining + probe over seeds; report the mIoU gain of CoTAP over its init.

    python tools/benchmark_demo.py [--seeds 0 1 2] [--work-dir work_dirs/benchmark_demo]
        [--reuse work_dirs/demo] [--preset default] [--update-docs]

Each seed is one full `tools/demo.py` chain (data, kNN, init, CoTAP, both linear probes) in
``WORK_DIR/seed_<s>``, without pictures. ``--reuse DIR`` takes a finished demo run's
``results.json`` (e.g. the one ``make demo`` just wrote) for its seed instead of rerunning it. The
table (per seed and mean +- sample std of init mIoU, CoTAP mIoU and gain) goes to stdout and
``WORK_DIR/benchmark_demo.json``; ``--update-docs`` writes it, with the command and the machine,
into docs/benchmarks.md between the benchmark_demo markers.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys

import torch
from rich.console import Console
from rich.table import Table

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import demo  # noqa: E402

from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

MARK_START = '<!-- benchmark_demo:start -->'
MARK_END = '<!-- benchmark_demo:end -->'
DOCS = osp.join(ROOT, 'docs', 'benchmarks.md')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Demo pretraining + probe over several seeds')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--work-dir', default='work_dirs/benchmark_demo')
    p.add_argument('--preset', choices=sorted(demo.PRESETS), default='default')
    p.add_argument('--init', choices=['random', 'selfdistill'], default='random')
    p.add_argument('--reuse', nargs='*', default=[],
                   help='finished demo work dirs whose results.json is used for its seed')
    p.add_argument('--update-docs', action='store_true')
    return p.parse_args(argv)


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def summarize(rows):
    """Mean and sample std (n - 1) of init, CoTAP and gain over the seeds' result dicts."""
    out = {}
    for key in ('init_miou', 'cotap_miou', 'gain'):
        values = [r[key] for r in rows]
        out[key] = dict(mean=statistics.fmean(values),
                        std=statistics.stdev(values) if len(values) > 1 else float('nan'))
    return out


def table_lines(rows, summary):
    lines = ['| seed | init mIoU | CoTAP mIoU | gain | CoTAP stage (s) | total (s) |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['seed']} | {r['init_miou']:.2f} | {r['cotap_miou']:.2f} | "
                     f"{r['gain']:+.2f} | {r['stage_seconds'].get('cotap', float('nan')):.0f} | "
                     f"{r['total_seconds']:.0f} |")
    s = summary
    lines.append(f"| mean +- std | {s['init_miou']['mean']:.2f} +- {s['init_miou']['std']:.2f} | "
                 f"{s['cotap_miou']['mean']:.2f} +- {s['cotap_miou']['std']:.2f} | "
                 f"{s['gain']['mean']:+.2f} +- {s['gain']['std']:.2f} | | |")
    return lines


def update_docs(rows, summary, argv, preset, init):
    section = '\n'.join([
        MARK_START, '',
        f'Command: `python tools/benchmark_demo.py {" ".join(argv)}`', '',
        f'Machine: {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU only. '
        f'Preset `{preset}`, init `{init}`: each seed is a full `tools/demo.py` chain (its own '
        'synthetic data, kNN, init, CoTAP and probes); std is the sample std over seeds.', '',
        *table_lines(rows, summary), '', MARK_END])
    with open(DOCS) as f:
        text = f.read()
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip('\n') + '\n\n## Demo: CoTAP gain over its init (synthetic scenes)\n\n' \
            + section + '\n'
    atomic_write_text(DOCS, text)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console()
    reused = {}
    for path in args.reuse:
        with open(osp.join(path, 'results.json')) as f:
            r = json.load(f)
        reused[r['seed']] = r
    rows = []
    for seed in args.seeds:
        if seed in reused:
            console.print(f'seed {seed}: reusing {args.reuse}')
            rows.append(reused[seed])
            continue
        console.rule(f'seed {seed}')
        work = osp.join(args.work_dir, f'seed_{seed}')
        demo.prepare_work_dir(work)
        rows.append(demo.Demo(work, seed, args.preset, args.init, console)(skip_pictures=True))
    summary = summarize(rows)
    table = Table(title='CoTAP demo over seeds: linear-probe mIoU (%)')
    for col in ('seed', 'init', 'CoTAP', 'gain'):
        table.add_column(col, justify='right')
    for r in rows:
        table.add_row(str(r['seed']), f"{r['init_miou']:.2f}", f"{r['cotap_miou']:.2f}",
                      f"{r['gain']:+.2f}")
    table.add_row('mean +- std', *[f"{summary[k]['mean']:.2f} +- {summary[k]['std']:.2f}"
                                   for k in ('init_miou', 'cotap_miou', 'gain')])
    console.print(table)
    atomic_write_text(osp.join(args.work_dir, 'benchmark_demo.json'),
                      json.dumps(dict(rows=rows, summary=summary), indent=2))
    if args.update_docs:
        update_docs(rows, summary, argv, args.preset, args.init)
        console.print(f'updated {DOCS}')
    return rows, summary


if __name__ == '__main__':
    main()
