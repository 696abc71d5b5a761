"""Train a model from an OpenMMLab config (mmpretrain or mmseg) with cotap_mm components.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v]

Several processes: tools/dist_train.sh (torchrun) or tools/slurm_train.sh. Details (options,
CPU and gloo set-up, resuming): docs/training.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from mmengine.config import Config, DictAction  # noqa: E402

from cotap_mm.engine.launch import (accelerator_available, build_runner,  # noqa: E402
                                    fall_back_to_fp32, fix_persistent_workers,
                                    set_dataloader_defaults, set_work_dir,
                                    setup_cpu_distributed)
from cotap_mm.utils.config_errors import (ConfigArgumentError,  # noqa: E402
                                          explain_unexpected_kwarg)
from tools._common.args import add_launcher_args, parse_launcher_args  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (cotap_mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT; without a value, resume from the latest checkpoint in the '
        'work dir (if any)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (fp16, AmpOptimWrapper); needs CUDA')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual / the config\'s base batch size')
    parser.add_argument('--no-pin-memory', action='store_true',
                        help='disable pin_memory in the dataloaders')
    parser.add_argument('--no-persistent-workers', action='store_true',
                        help='disable persistent_workers in the dataloaders')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs merged into the config, e.g. '
        'train_cfg.max_iters=10 or key="[a,b]"; no white space inside a value')
    add_launcher_args(parser)
    return parse_launcher_args(parser, argv)


def apply_train_args(cfg, args, parser):
    """Apply the command line to ``cfg`` (``parser.error`` on bad input)."""
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)

    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    if args.amp:
        if cfg.get('optim_wrapper', None) is None:
            parser.error('--amp: the config has no optim_wrapper to switch to AmpOptimWrapper')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if '://' not in args.resume and not osp.isfile(args.resume):
            parser.error(f'--resume: checkpoint file not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr', None) is None:
            parser.error('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)` in '
                         'the config')
        cfg.auto_scale_lr.enable = True

    set_dataloader_defaults(cfg, no_pin_memory=args.no_pin_memory,
                            no_persistent_workers=args.no_persistent_workers)

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    fix_persistent_workers(cfg)
    fall_back_to_fp32(cfg)
    return cfg


def main(argv=None):
    parser, args = parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if args.amp and not accelerator_available():  # before the (slow) config loading
        parser.error(
            '--amp needs a CUDA GPU: mmengine\'s AmpOptimWrapper asserts CUDA (or NPU/MLU/MUSA) '
            'and none is available here. Train on CPU without --amp (fp32).')
    cfg = Config.fromfile(args.config)
    cfg = apply_train_args(cfg, args, parser)
    setup_cpu_distributed(cfg, args.launcher)
    try:
        # the model is built here and the dataloaders in train(): a config key that a
        # component does not take surfaces as a bare TypeError from deep inside mmengine
        runner = build_runner(cfg)
        runner.train()
    except TypeError as e:
        msg = explain_unexpected_kwarg(e, cfg)
        if msg is None:
            raise
        raise ConfigArgumentError(msg) from e


if __name__ == '__main__':
    main()
