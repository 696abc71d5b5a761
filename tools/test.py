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

from cotap_mm.engine.launch import (build_runner, fix_persistent_workers, is_mmseg,  # noqa
                                    set_dataloader_defaults, set_work_dir,
                                    setup_cpu_distributed)
from tools._common.args import add_launcher_args, parse_launcher_args  # noqa: E402

PICKLE_EXTS = ('.pkl', '.pickle')  # --out: predictions or metrics as a pickle


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
    add_launcher_args(parser)
    return parse_launcher_args(parser, argv)


def out_is_seg_map_dir(cfg, args):
    """Whether ``--out`` is a folder for mmseg's predicted maps: an mmseg config, no
    ``--out-item`` and not a pickle file name."""
    return (args.out is not None and args.out_item is None and is_mmseg(cfg)
            and not args.out.endswith(PICKLE_EXTS))


def enable_visualization(cfg, args, parser):
    """Turn on the config's visualization hook for ``--show``/``--show-dir`` (mmseg's
    SegVisualizationHook or mmpretrain's VisualizationHook)."""
    hooks = cfg.get('default_hooks', None) or {}
    if 'visualization' not in hooks:
        parser.error('--show/--show-dir need a visualization hook in default_hooks, e.g. '
                     "visualization=dict(type='VisualizationHook') (mmpretrain) or "
                     "dict(type='SegVisualizationHook') (mmseg)")
    hook = hooks['visualization']
    if is_mmseg(cfg) or 'Seg' in str(hook.get('type', '')):
        # mmseg's SegVisualizationHook: `draw`, and the visualizer saves to its save_dir
        hook['draw'] = True
        hook['interval'] = args.interval
        if args.show:
            hook['show'] = True
            hook['wait_time'] = args.wait_time
        if args.show_dir:
            if cfg.get('visualizer', None) is None:
                parser.error('--show-dir: the config has no visualizer')
            cfg.visualizer['save_dir'] = args.show_dir
    else:
        # mmpretrain's VisualizationHook: `enable`, and out_dir
        hook['enable'] = True
        hook['show'] = args.show
        hook['wait_time'] = args.wait_time
        hook['out_dir'] = args.show_dir
        hook['interval'] = args.interval


def apply_test_args(cfg, args, parser):
    """Apply the command line to ``cfg``: the checkpoint, visualization, where mmseg writes its
    predicted maps, the dataloader defaults."""
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show or args.show_dir:
        enable_visualization(cfg, args, parser)
    if out_is_seg_map_dir(cfg, args):
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    set_dataloader_defaults(cfg, fields=('test_dataloader', ), persistent=False,
                            no_pin_memory=args.no_pin_memory)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    fix_persistent_workers(cfg, fields=('test_dataloader', ))
    return cfg


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
                  and not out_is_seg_map_dir(cfg, args))
    if dump_preds and not args.out.endswith(PICKLE_EXTS):
        parser.error(f'--out {args.out}: predictions are dumped as a pickle (.pkl/.pickle); '
                     'use --out-item metrics for a metrics file')
    cfg = apply_test_args(cfg, args, parser)
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
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
