"""Train a model from an OpenMMLab config (mmpretrain or mmseg) with cotap_mm components.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                          [--no-validate] [--no-pin-memory] [--no-persistent-workers]
                          [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Same flags and flow as mmpretrain's ``tools/train.py``, plus what CPU-only machines need
(docs/training.md):

- ``--launcher pytorch`` without CUDA: the process group is created with the gloo backend before
  the Runner is built (mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device``
  unconditionally), and DDP is built with ``device_ids=None`` (CPU modules).
- ``persistent_workers`` is only turned on for dataloaders with ``num_workers > 0`` (torch
  refuses it otherwise); ``pin_memory`` defaults to on only when CUDA is available.
- ``--amp`` without a GPU stops with a clear error (mmengine's ``AmpOptimWrapper`` asserts CUDA).

Multi-process launch: ``tools/dist_train.sh`` (torchrun) or ``tools/slurm_train.sh``.
"""
import argparse
import logging
import os
import os.path as osp
import sys

# Make the repository root importable when run from a source checkout without `pip install -e`.
_REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import torch  # noqa: E402
from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402

# cotap_mm (registrations + torch>=2.6 checkpoint-loading compat) and the Runner are imported in
# `import_cotap_mm()`, after the command line is checked, so that usage errors come back fast.

_DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_DDP_TYPES = ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel')


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
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank (older)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return parser, args


def accelerator_available():
    """Whether a device that mmengine's AmpOptimWrapper accepts is present."""
    if torch.cuda.is_available():
        return True
    try:
        from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
        return is_npu_available() or is_mlu_available() or is_musa_available()
    except ImportError:  # pragma: no cover
        return False


def default_work_dir(config_path):
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def set_work_dir(cfg, args):
    # priority: CLI > the config's work_dir > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)


def set_dataloader_defaults(cfg, fields=_DATALOADERS, persistent=True, no_pin_memory=False,
                            no_persistent_workers=False):
    """Fill dataloader defaults the way OpenMMLab tools do (pin_memory, persistent_workers,
    default_collate), only for dataloaders present in ``cfg``."""
    for field in fields:
        loader = cfg.get(field, None)
        if loader is None:
            continue
        defaults = ConfigDict(pin_memory=torch.cuda.is_available(),
                              collate_fn=dict(type='default_collate'))
        if persistent:
            defaults.persistent_workers = loader.get('num_workers', 0) > 0
        defaults.update(loader)
        if no_pin_memory:
            defaults.pin_memory = False
        if no_persistent_workers and 'persistent_workers' in defaults:
            defaults.persistent_workers = False
        cfg[field] = defaults


def fix_persistent_workers(cfg, fields=_DATALOADERS):
    """torch's DataLoader raises on ``persistent_workers=True`` with ``num_workers=0``; run
    after ``--cfg-options`` are merged (they may change either)."""
    for field in fields:
        loader = cfg.get(field, None)
        if loader is not None and loader.get('persistent_workers', False) \
                and loader.get('num_workers', 0) == 0:
            loader.persistent_workers = False


def setup_cpu_distributed(cfg, launcher):
    """CPU (no CUDA) workarounds for ``--launcher pytorch`` (spec §5).

    - ``env_cfg.dist_cfg.backend = 'gloo'`` and the process group is created here, before the
      Runner, since mmengine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
      unconditionally (the Runner skips ``init_dist`` when the group already exists);
    - DDP gets ``device_ids=None``: the Runner would pass ``[LOCAL_RANK]``, wrong for CPU modules.
    """
    if launcher != 'pytorch' or torch.cuda.is_available():
        return
    env_cfg = cfg.get('env_cfg', None)
    if env_cfg is None:
        cfg.env_cfg = env_cfg = ConfigDict()
    dist_cfg = env_cfg.get('dist_cfg', None)
    if dist_cfg is None:
        env_cfg.dist_cfg = dist_cfg = ConfigDict()
    dist_cfg.backend = 'gloo'

    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif wrapper.get('type', 'MMDistributedDataParallel') in _DDP_TYPES:
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper.device_ids = None
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))

    if 'WORLD_SIZE' not in os.environ:
        raise SystemExit(
            'error: --launcher pytorch needs the torchrun environment (WORLD_SIZE, RANK, '
            'MASTER_ADDR, MASTER_PORT); start it with tools/dist_train.sh / dist_test.sh or '
            'torchrun, or use --launcher none for a single process')
    import torch.distributed as dist
    if not dist.is_initialized():
        kwargs = {}
        timeout = dist_cfg.get('timeout', None)
        if timeout is not None:
            from datetime import timedelta
            kwargs['timeout'] = timeout if isinstance(timeout, timedelta) \
                else timedelta(seconds=timeout)
        dist.init_process_group(backend='gloo', **kwargs)


def import_cotap_mm():
    import cotap_mm  # noqa: F401
    return cotap_mm


def build_runner(cfg):
    import_cotap_mm()
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def check_amp(parser):
    if not accelerator_available():
        parser.error(
            '--amp needs a CUDA GPU: mmengine\'s AmpOptimWrapper asserts CUDA (or NPU/MLU/MUSA) '
            'and none is available here. Train on CPU without --amp (fp32).')


def merge_args(cfg, args, parser):
    """Apply the command line to ``cfg``."""
    cfg.launcher = args.launcher
    set_work_dir(cfg, args)

    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    if args.amp:
        check_amp(parser)
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


def fall_back_to_fp32(cfg):
    """A config asking for ``AmpOptimWrapper`` trains in fp32 where no GPU is present.

    GPU configs (e.g. CoTAP's, whose released runs use fp16) keep working on CPU for tests and
    smoke runs; the switch is logged. ``--amp`` itself still refuses to run without a GPU.
    """
    wrapper = cfg.get('optim_wrapper', None)
    if wrapper is None or wrapper.get('type') != 'AmpOptimWrapper' or accelerator_available():
        return
    from mmengine.logging import print_log
    print_log('No GPU: the config\'s AmpOptimWrapper is replaced by OptimWrapper (fp32).',
              logger='current', level=logging.WARNING)
    wrapper.type = 'OptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        wrapper.pop(key, None)


def main(argv=None):
    parser, args = parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if args.amp:
        check_amp(parser)  # before the (slow) config loading and imports
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args, parser)
    import_cotap_mm()
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    runner.train()


if __name__ == '__main__':
    main()
