"""Test (evaluate) a checkpoint with an OpenMMLab config: mmpretrain or mmseg (``default_scope``).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE|DIR] [--show-dir DIR]

Several processes: tools/dist_test.sh. Details: docs/training.md, "Testing".
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

import mmengine  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.evaluator import DumpResults  # noqa: E402

from cotap_mm.engine import launch as _launch  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint (cotap_mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir for logs and the metrics file '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--out', help='output file (.pkl: predictions, or metrics with '
                        '--out-item metrics) or, for mmseg configs, a directory for the '
                        'predicted maps')
    parser.add_argument('--out-item', choices=['metrics', 'pred'],
                        help='what --out holds (default: pred)')
    parser.add_argument('--show-dir', help='directory to save the visualizations in')
    parser.add_argument('--show', action='store_true', help='display the visualizations')
    parser.add_argument('--interval', type=int, default=1, help='visualize every N samples')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='display time of each window (s)')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the test dataloader')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config')
    _launch.add_launcher_args(parser)
    return _launch.parse_launcher_args(parser, argv)


def main(argv=None):
    parser, args = parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file not found: {args.checkpoint}')
    if args.out_item is not None and args.out is None:
        parser.error('--out-item needs --out FILE')
    cfg = Config.fromfile(args.config)
    for key in ('test_dataloader', 'test_cfg', 'test_evaluator'):
        if cfg.get(key, None) is None:
            parser.error(f'the config {args.config} has no `{key}`; tools/test.py needs '
                         'test_dataloader, test_cfg and test_evaluator')
    dump_preds = (args.out is not None and args.out_item != 'metrics'
                  and not _launch.out_is_seg_map_dir(cfg, args))
    if dump_preds and not args.out.endswith(_launch.PICKLE_EXTS):
        parser.error(f'--out {args.out}: predictions are dumped as a pickle (.pkl/.pickle); '
                     'use --out-item metrics for a metrics file')
    cfg = _launch.apply_test_args(cfg, args, parser)
    _launch.setup_cpu_distributed(cfg, args.launcher)
    runner = _launch.build_runner(cfg)
    if dump_preds:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out is not None and args.out_item == 'metrics' and runner.rank == 0:
        mmengine.dump(metrics, args.out)
    if runner.rank == 0:
        print('metrics:', ' '.join(f'{k}: {v}' for k, v in (metrics or {}).items()), flush=True)
    return metrics


if __name__ == '__main__':
    main()
