"""Step throughput of CoTAP against a plain DINO-style step, with a breakdown and the loader.

    .venv/bin/python tools/benchmark_train.py --arch tiny --threads 1          # seconds, CPU
    .venv/bin/python tools/benchmark_train.py --device cuda --amp --batch-size 28 --update-docs

Details: docs/benchmarks.md, "Training step throughput" (whose measured subsections
``--update-docs`` rewrites).
"""
import argparse
import json
import os.path as osp
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout

from mmengine.config import DictAction  # noqa: E402

from benchmarks.report import read_section, write_section  # noqa: E402
from benchmarks.step_run import measure  # noqa: E402
from benchmarks.train_report import merge_runs, render_markdown  # noqa: E402
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402
from tools._common.args import non_negative_int, positive_int, tool_logger  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'cotap_vit-s16_coco.py')
DEFAULT_DATA = osp.join(ROOT, 'work_dirs', 'benchmark_train', 'data')
SECTION = 'benchmark_train'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG, help='CoTAP training config')
    p.add_argument('--arch', choices=('tiny', 'small'), default='small',
                   help="'small': the config as is (ViT-S/16, 224/96 crops); 'tiny': the test "
                   'model with shrunk heads and 64/32 crops')
    p.add_argument('--batch-size', type=positive_int, default=None,
                   help='items per step (each item = 2 kNN pairs x (G + L) crops); default: '
                   'the config\'s')
    p.add_argument('--world-size', type=int, default=None,
                   help='divide the global queue lengths by this (default: 112 / batch size, '
                   'the released global batch)')
    p.add_argument('--plain-backbone', choices=('same', 'vit'), default='same',
                   help="the plain step's backbone: 'same' = CoTAP's (with the OAF), 'vit' = "
                   'the bare ViT (with_oaf=False)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:i]'")
    p.add_argument('--amp', action='store_true',
                   help='fp16 autocast + GradScaler (mmengine AmpOptimWrapper); needs CUDA')
    p.add_argument('--threads', type=positive_int, default=None,
                   help='torch intra-op threads (default: the number of cores)')
    p.add_argument('--warmup', type=non_negative_int, default=2, help='untimed iterations of each step')
    p.add_argument('--iters', type=positive_int, default=5, help='timed iterations of each step')
    p.add_argument('--breakdown-iters', type=non_negative_int, default=1,
                   help='profiled CoTAP and plain iterations for the breakdown (0: none)')
    p.add_argument('--profile-ops', type=int, default=0, metavar='N',
                   help='also print torch.profiler\'s top N ops of one CoTAP step')
    p.add_argument('--data-root', default=None,
                   help='folder with coco/, imagenet/ and nns/nns_{coco,imagenet}.npz (default: '
                   'generated synthetic scenes in work_dirs/benchmark_train/data)')
    p.add_argument('--generate-data', action='store_true',
                   help='generate the synthetic scenes and kNN files into --data-root when it '
                   'has no kNN files yet')
    p.add_argument('--image-size', type=int, default=256,
                   help='side of the generated synthetic scenes')
    p.add_argument('--num-workers', type=non_negative_int, default=2, help='dataloader workers')
    p.add_argument('--loader-batches', type=non_negative_int, default=10,
                   help='batches timed for the loader throughput (0: skip the loader)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='config overrides, as in tools/train.py')
    p.add_argument('--out', default=None, help='write the report as JSON here')
    p.add_argument('--from-json', nargs='+', default=None, metavar='REPORT',
                   help='measure nothing: print (and with --update-docs write) the tables of '
                   'reports saved with --out, e.g. from a GPU machine')
    p.add_argument('--update-docs', action='store_true',
                   help='write the table into docs/benchmarks.md between the benchmark_train '
                   'markers')
    p.add_argument('--docs', default=osp.join(ROOT, 'docs', 'benchmarks.md'),
                   help='the markdown file --update-docs writes')
    args = p.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: CUDA is not available on this machine')
    if args.amp and not args.device.startswith('cuda'):
        p.error('--amp needs --device cuda (mmengine\'s AmpOptimWrapper asserts a GPU)')
    return args


def ensure_data(data_root: str, image_size: int, logger) -> None:
    """Generate synthetic scenes and their kNN files once (skipped when they exist)."""
    nns = [osp.join(data_root, 'nns', f'nns_{s}.npz') for s in ('coco', 'imagenet')]
    if all(osp.isfile(f) for f in nns):
        return
    py = sys.executable
    logger.info(f'generating synthetic scenes and kNN files in {data_root} (once)')
    commands = [[py, osp.join(ROOT, 'tools', 'make_synthetic_scenes.py'), data_root,
                 '--size', str(image_size), '--num-coco', '64', '--num-imagenet', '64',
                 '--num-seg-train', '0', '--num-seg-val', '0', '--force']]
    for folder, out in (('coco/train2017', nns[0]), ('imagenet/train', nns[1])):
        commands.append([py, osp.join(ROOT, 'tools', 'precompute_knn.py'),
                         osp.join(data_root, folder), out, '--arch', 'tiny', '--k', '4',
                         '--image-size', '64', '--num-workers', '0'])
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f'generating the benchmark data failed: {" ".join(cmd)}\n'
                             f'{proc.stderr[-2000:]}\nPass real data with --data-root instead.')


def main(argv=None):
    raw = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(raw)
    logger = tool_logger('benchmark_train')
    if args.from_json:
        reports = []
        for path in args.from_json:
            try:
                with open(path) as f:
                    reports.append(json.load(f))
            except (OSError, ValueError) as e:
                raise SystemExit(f'--from-json {path}: cannot read a report ({e})')
    else:
        data_root = args.data_root or DEFAULT_DATA
        if args.data_root is None or args.generate_data:
            ensure_data(data_root, args.image_size, logger)
        reports = [measure(args, data_root, ROOT, raw, logger)]
    for report in reports:
        print(render_markdown(report))
        if report.get('profile_ops'):
            print(report['profile_ops'])
    if args.out and not args.from_json:
        atomic_write_text(args.out, json.dumps(reports[0], indent=1))
        logger.info(f'report written to {args.out}')
    if args.update_docs:
        body = read_section(args.docs, SECTION)
        for report in reports:
            body = merge_runs(body, render_markdown(report))
        write_section(args.docs, SECTION, body, 'Training step throughput')
        logger.info(f'table written to {args.docs}')
    return reports[-1]


if __name__ == '__main__':
    main()
