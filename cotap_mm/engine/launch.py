"""What a config needs before the Runner, as tools/train.py and tools/test.py apply it: work
dirs, dataloader defaults, the fp32 fall-back of AMP configs without a GPU, and the CPU (gloo)
set-up of the ``pytorch`` launcher (docs/training.md)."""
import logging
import os
import os.path as osp

import torch
from mmengine.config import ConfigDict

__all__ = ['accelerator_available', 'default_work_dir', 'set_work_dir',
           'set_dataloader_defaults', 'fix_persistent_workers', 'fall_back_to_fp32',
           'setup_cpu_distributed', 'build_runner', 'is_mmseg']

_DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_DDP_TYPES = ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel')


def accelerator_available():
    """Whether a device that mmengine's AmpOptimWrapper accepts is present."""
    if torch.cuda.is_available():
        return True
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
    return is_npu_available() or is_mlu_available() or is_musa_available()


def default_work_dir(config_path):
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def set_work_dir(cfg, work_dir, config_path):
    """``work_dir`` if given, else the config's own, else ``./work_dirs/<config name>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(config_path)


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
