"""What tools/train.py and tools/test.py do to a config before the Runner: work dirs,
dataloader defaults, the fp32 fall-back of AMP configs without a GPU, and the CPU (gloo) set-up
of ``--launcher pytorch`` (docs/training.md)."""
import logging
import os
import os.path as osp

import torch
from mmengine.config import ConfigDict

__all__ = ['accelerator_available', 'default_work_dir', 'set_work_dir',
           'set_dataloader_defaults', 'fix_persistent_workers', 'fall_back_to_fp32',
           'setup_cpu_distributed', 'build_runner', 'add_launcher_args', 'parse_launcher_args',
           'is_mmseg', 'out_is_seg_map_dir', 'enable_visualization', 'check_amp',
           'apply_train_args', 'apply_test_args', 'PICKLE_EXTS']

PICKLE_EXTS = ('.pkl', '.pickle')  # tools/test.py --out: predictions or metrics as a pickle
_DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_DDP_TYPES = ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel')


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
    """CPU (no CUDA) workarounds for ``--launcher pytorch`` (docs/method.md §5).

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


def build_runner(cfg):
    """The Runner of ``cfg`` (``runner_type`` honoured); importing this module has registered
    every cotap_mm component."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def add_launcher_args(parser):
    """``--launcher`` and the ``--local-rank`` that ``torch.distributed.launch`` passes."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank (older)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launcher_args(parser, argv=None):
    """Parse ``argv`` and export ``LOCAL_RANK`` for mmengine when the launcher did not."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return parser, args


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


def is_mmseg(cfg):
    """Whether ``cfg`` runs in the mmseg scope."""
    return str(cfg.get('default_scope', '')).startswith('mmseg')


def out_is_seg_map_dir(cfg, args):
    """Whether tools/test.py's ``--out`` is a folder for mmseg's predicted maps: an mmseg config,
    no ``--out-item`` and not a pickle file name."""
    return (args.out is not None and args.out_item is None and is_mmseg(cfg)
            and not args.out.endswith(PICKLE_EXTS))


def enable_visualization(cfg, args, parser):
    """Turn on the config's visualization hook for tools/test.py's ``--show``/``--show-dir``
    (mmseg's SegVisualizationHook or mmpretrain's VisualizationHook)."""
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


def check_amp(parser):
    """Stop with a clear error where no accelerator is available for ``--amp``."""
    if not accelerator_available():
        parser.error(
            '--amp needs a CUDA GPU: mmengine\'s AmpOptimWrapper asserts CUDA (or NPU/MLU/MUSA) '
            'and none is available here. Train on CPU without --amp (fp32).')


def apply_train_args(cfg, args, parser):
    """Apply the command line of tools/train.py to ``cfg`` (``parser.error`` on bad input)."""
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


def apply_test_args(cfg, args, parser):
    """Apply the command line of tools/test.py to ``cfg``: the checkpoint, visualization, where
    mmseg writes its predicted maps, the dataloader defaults."""
    cfg.launcher = args.launcher
    set_work_dir(cfg, args)
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
