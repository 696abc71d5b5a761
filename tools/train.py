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

from cotap_mm.engine.launch import (add_launcher_args, apply_train_args,  # noqa: E402
                                    build_runner, check_amp, parse_launcher_args,
                                    setup_cpu_distributed)
from cotap_mm.utils.config_errors import (ConfigArgumentError,  # noqa: E402
                                          explain_unexpected_kwarg)


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


def main(argv=None):
    parser, args = parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if args.amp:
        check_amp(parser)  # before the (slow) config loading and imports
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
