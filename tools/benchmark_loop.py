"""The training loop's time beside its own step: ``tools/train.py CONFIG`` for ``--iters``
iterations, then the same config's steps timed in this process (benchmarks/loop_timing.py).

    python tools/benchmark_loop.py configs/demo/cotap_vit-tiny_synthetic.py --label cotap \
        --cfg-options model.backbone.init_cfg=None train_dataloader.dataset.coco... \
        --update-docs

Details and the measured rows: docs/benchmarks.md, "Loop overhead".
"""
import argparse
import json
import os
import os.path as osp
import shlex
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout
    sys.path.insert(0, ROOT)

from benchmarks.loop_timing import loop_times, step_times, summarize_overhead  # noqa: E402
from benchmarks.report import (machine_info, machine_line, markdown_table,  # noqa: E402
                               write_section)
from tools._common.args import non_negative_int, positive_int, tool_logger  # noqa: E402
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402

SECTION = 'benchmark_loop'
RESULTS = osp.join(ROOT, 'docs', 'results', 'loop_overhead.json')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='training config, as given to tools/train.py')
    p.add_argument('--label', required=True, help='the row\'s name in the table')
    p.add_argument('--iters', type=positive_int, default=160, help='loop iterations')
    p.add_argument('--skip', type=non_negative_int, default=80,
                   help='first loop iterations left out (queues, bank and k-means settle)')
    p.add_argument('--step-iters', type=positive_int, default=20, help='timed steps')
    p.add_argument('--warmup', type=non_negative_int, default=3, help='untimed steps first')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='config overrides for both the loop and the steps, as in tools/train.py')
    p.add_argument('--work-dir', default=None,
                   help='the loop\'s work dir (default: a temporary one)')
    p.add_argument('--update-docs', action='store_true',
                   help=f'add the row to {osp.relpath(RESULTS, ROOT)} and rewrite the table in '
                   'docs/benchmarks.md')
    args = p.parse_args(argv)
    if not osp.isfile(args.config):
        p.error(f'config file not found: {args.config}')
    if args.skip >= args.iters:
        p.error(f'--skip {args.skip} must be below --iters {args.iters}')
    return args


def render(rows: dict) -> str:
    table = [[label, f'`{r["config"]}`', str(r['batch_size']), f'{r["step_ms"]:.0f}',
              f'{r["loop_ms"]:.0f}', f'{r["data_ms"]:.0f}', f'{r["loop_over_step"]:.3f}×',
              machine_line(r['machine'])] for label, r in rows.items()]
    lines = markdown_table(['row', 'config', 'batch', 'step ms', 'loop ms/iter', 'data wait ms',
                            'loop / step', 'machine'], table)
    commands = [f'- {label}: `{r["command"]}` ({r["date"]})' for label, r in rows.items()]
    return '\n'.join(lines + ['', 'Commands:', ''] + commands)


def main(argv=None):
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw)
    logger = tool_logger('benchmark_loop')
    from mmengine.config import Config, DictAction

    from cotap_mm.engine.launch import fall_back_to_fp32
    machine = machine_info('cpu')
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or osp.join(tmp, 'loop')
        logger.info(f'tools/train.py {args.config}: {args.iters} iterations')
        loop = loop_times(ROOT, args.config, work_dir, args.iters, args.cfg_options)
    cfg = Config.fromfile(args.config)
    # the same overrides in-process, parsed as tools/train.py's DictAction parses them
    cfg.merge_from_dict({k: DictAction._parse_iterable(v) for k, v in
                         (kv.split('=', 1) for kv in args.cfg_options)})
    fall_back_to_fp32(cfg)
    if cfg.model.get('type') == 'CoTAP':  # its EMA schedule needs a length; no Runner here
        cfg.model.setdefault('teacher_momentum_steps', args.iters)
    logger.info(f'{args.step_iters} steps of the same config')
    steps = step_times(cfg, args.step_iters, args.warmup)
    row = dict(summarize_overhead(loop, steps, args.skip), config=osp.relpath(
        osp.abspath(args.config), ROOT), batch_size=cfg.train_dataloader.batch_size,
        machine=dict(machine, load_average_end=[round(x, 2) for x in os.getloadavg()]),
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        command=' '.join(['python tools/benchmark_loop.py', *map(shlex.quote, raw)]))
    print(json.dumps(row, indent=1))
    if args.update_docs:
        rows = {}
        if osp.isfile(RESULTS):
            with open(RESULTS) as f:
                rows = json.load(f)
        rows[args.label] = row
        os.makedirs(osp.dirname(RESULTS), exist_ok=True)
        atomic_write_text(RESULTS, json.dumps(rows, indent=1) + '\n')
        write_section(osp.join(ROOT, 'docs', 'benchmarks.md'), SECTION, render(rows),
                      'Loop overhead')
        logger.info(f'row {args.label!r} written to {RESULTS} and docs/benchmarks.md')
    return row


if __name__ == '__main__':
    main()
