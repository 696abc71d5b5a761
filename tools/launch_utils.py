"""Helpers shared by tools/train.py and tools/test.py: work dirs, dataloader defaults and the CPU
(gloo) set-up of ``--launcher pytorch``. Not a public API."""
import difflib
import inspect
import os
import os.path as osp
import re
import sys

# Make the repository root importable when run from a source checkout without `pip install -e`.
_REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import torch  # noqa: E402
from mmengine.config import ConfigDict  # noqa: E402

# cotap_mm (registrations + torch>=2.6 checkpoint-loading compat) and the Runner are imported in
# `import_cotap_mm()`, after the command line is checked, so that usage errors come back fast.

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


_UNEXPECTED_KWARG = re.compile(r"([\w.<>]+)\(\) got an unexpected keyword argument '(\w+)'")


class ConfigArgumentError(TypeError):
    """A config gives a registered component an argument it does not take (a typo)."""


def _find_callable(qualname, tb):
    """The class / function named ``qualname`` in the locals or globals of the frames of
    ``tb`` (innermost first): the caller that passed the bad keyword holds it."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    owner = qualname[:-len('.__init__')] if qualname.endswith('.__init__') else qualname
    for frame in reversed(frames):
        for scope in (frame.f_locals, frame.f_globals):
            for value in list(scope.values()):
                if (inspect.isclass(value) or inspect.isfunction(value)) and \
                        getattr(value, '__qualname__', None) == owner:
                    return value
    return None


def _config_paths(node, key, type_name, prefix=''):
    """Dotted config paths of ``key`` in every dict of ``node`` holding it, those whose
    ``type`` names ``type_name`` first."""
    exact, other = [], []
    if isinstance(node, dict):
        if key in node:
            t = node.get('type', None)
            t = t if isinstance(t, str) else getattr(t, '__name__', '')
            (exact if t.split('.')[-1] == type_name else other).append(f'{prefix}{key}')
        for k, v in node.items():
            e, o = _config_paths(v, key, type_name, f'{prefix}{k}.')
            exact += e
            other += o
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            e, o = _config_paths(v, key, type_name, f'{prefix}{i}.')
            exact += e
            other += o
    return exact, other


def explain_unexpected_kwarg(exc, cfg=None):
    """A clear message for ``TypeError: X.__init__() got an unexpected keyword argument 'k'``
    raised while building a component from ``cfg`` (a typo in a config key), or ``None`` when
    ``exc`` is another error.

    The message names the component (type and module), the bad key and where the config sets
    it, the closest valid argument names (difflib) and all valid ones.
    """
    match = _UNEXPECTED_KWARG.search(str(exc))
    if match is None:
        return None
    qualname, key = match.groups()
    owner = qualname[:-len('.__init__')] if qualname.endswith('.__init__') else qualname
    name = owner.split('.')[-1]
    obj = _find_callable(qualname, exc.__traceback__)
    where, valid = name, []
    if obj is not None:
        where = f'{name} ({obj.__module__})'
        try:
            params = inspect.signature(obj).parameters.values()
            valid = [p.name for p in params
                     if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != 'self']
        except (TypeError, ValueError):  # pragma: no cover (builtins without a signature)
            valid = []
    msg = f'Config error: {where} got an unknown argument {key!r}'
    if cfg is not None:
        exact, other = _config_paths(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, key,
                                     name)
        paths = exact or other
        if paths:
            msg += f' (set at `{"`, `".join(paths)}`)'
    msg += '.'
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if close:
        msg += f' Did you mean {" or ".join(repr(c) for c in close)}?'
    if valid:
        msg += f' {name} takes: {", ".join(valid)}.'
    msg += ' Fix the key in the config file or in --cfg-options.'
    return msg
