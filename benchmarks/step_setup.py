"""What the training-step benchmark measures: the thread count, the CoTAP model and its plain
DINO-style baseline (:class:`cotap_mm.models.algorithms.DINOBaseline`) built from one config
with their optimisers, and the training loader."""
import copy
import os
import os.path as osp
from typing import Optional

import torch

from cotap_mm.models.algorithms import DINOBaseline
from .step_timing import quiet_mmengine, to_steady_state

__all__ = ['set_threads', 'warn_if_oversubscribed', 'benchmark_data_options',
           'build_benchmark_cfg', 'check_benchmark_data', 'build_loader', 'build_models']

RELEASED_GLOBAL_BATCH = 112

# --arch tiny: the 2-layer 64-d test ViT with heads, crops and memories shrunk like the tests
# (tests/test_cotap_train.py), so the whole benchmark runs in seconds on a CPU.
TINY_OPTIONS = {
    'model.backbone.arch': 'tiny',
    'model.backbone.img_size': 64,
    'model.backbone.num_prototypes': 8,
    'model.patch_head': dict(in_channels=128, num_prototypes=32, hidden_channels=64,
                             bottleneck_channels=16),
    'model.cls_head': dict(in_channels=128, num_prototypes=48, hidden_channels=64,
                           bottleneck_channels=16),
    'model.correspondence_head': dict(pool_sizes=(2, 4), topk=3, num_neg_draws=2),
    'model.bank': dict(capacity=16, num_insert=4, kmeans_iters=20),
    'model.queue_sizes': (8192, 2048),
    'model.queue_inserts': (64, 8),
    'train_dataloader.dataset.view_pipeline': [
        dict(type='CoTAPMultiCrop', size_crops=(64, 32), nmb_crops=(2, 4))],
}


def set_threads(threads: Optional[int]) -> int:
    """Fix torch's intra-op threads: on a small shared machine oversubscription makes timings
    meaningless, so the count is always explicit and recorded."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def warn_if_oversubscribed(threads: int, device: str, logger) -> bool:
    """Warn when the CPU step's threads plus the machine's load exceed its cores.

    Every elementwise op is an OpenMP parallel region that waits for all its threads; when a
    thread has no free core, each region waits for a scheduler slice. On the 2-core development
    machine under a load of ~3.5, ``--threads 2`` made the data preprocessor ~100x slower than
    ``--threads 1`` (7.4 s vs 66 ms per call), so CPU timings with too many threads say nothing.
    """
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    busy = not device.startswith('cuda') and threads > 1 and load + threads > cores + 0.5
    if busy:
        logger.warning(f'{threads} torch threads on {cores} cores with a load average of '
                       f'{load:.1f}: threads will wait for cores and the timings will be '
                       'meaningless; use --threads 1 (or fewer threads) on a busy machine')
    return busy


def benchmark_data_options(data_root: str) -> dict:
    """Config overrides that point a CoTAP training config at ``data_root`` (coco/, imagenet/
    and nns/nns_{coco,imagenet}.npz, as generated for the benchmarks), 3 neighbours each."""
    options = {}
    for name in ('coco', 'imagenet'):
        options[f'train_dataloader.dataset.{name}.dataset.data_root'] = osp.join(data_root, name)
        options[f'train_dataloader.dataset.{name}.nns_file'] = osp.join(data_root, 'nns',
                                                                        f'nns_{name}.npz')
        options[f'train_dataloader.dataset.{name}.num_neighbors'] = 3
    return options


def build_benchmark_cfg(config: str, data_root: str, arch: str = 'small',
                        batch_size: Optional[int] = None, cfg_options=None,
                        world_size: Optional[int] = None, amp: bool = False):
    """The training config with the benchmark's overrides (no init checkpoint, data root,
    ``arch='tiny'``'s shrunk model, per-rank queues of ``world_size`` ranks) and the overrides
    ``cfg_options`` (a dict, as ``--cfg-options`` parses them); returns ``(cfg, world_size)``."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise SystemExit(f'--config {config}: no such file')
    cfg = Config.fromfile(config)
    if cfg.get('model', {}).get('type') != 'CoTAP':
        raise SystemExit(f'--config {config}: model.type must be CoTAP, got '
                         f'{cfg.get("model", {}).get("type")!r}')
    options = {'model.backbone.init_cfg': None, **benchmark_data_options(data_root)}
    if arch == 'tiny':
        options.update(TINY_OPTIONS)
    if batch_size:
        options['train_dataloader.batch_size'] = batch_size
    cfg.merge_from_dict(options)
    cfg.merge_from_dict(cfg_options or {})
    # a fixed momentum schedule: there is no Runner (and no max_iters) here
    cfg.model.teacher_momentum_steps = cfg.model.get('teacher_momentum_steps') or 1000
    batch = cfg.train_dataloader.batch_size
    world = world_size or max(1, round(RELEASED_GLOBAL_BATCH / batch))
    cfg.model.queue_sizes = tuple(max(1, int(q) // world) for q in cfg.model.queue_sizes)
    # AMP only where asked (mmengine's AmpOptimWrapper asserts CUDA)
    cfg.optim_wrapper.type = 'AmpOptimWrapper' if amp else 'OptimWrapper'
    if not amp:
        cfg.optim_wrapper.pop('loss_scale', None)
    return cfg, world


def check_benchmark_data(data_root: str) -> None:
    """Refuse a data root without the folders and kNN files the benchmark loads."""
    for rel in ('coco', 'imagenet', 'nns/nns_coco.npz', 'nns/nns_imagenet.npz'):
        if not osp.exists(osp.join(data_root, rel)):
            raise SystemExit(f'--data-root {data_root}: missing {rel} (expected coco/, '
                             'imagenet/ and nns/nns_{coco,imagenet}.npz, see docs/data.md)')


def build_loader(cfg, num_workers: int, seed: int, device: str = 'cpu'):
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.num_workers = num_workers
    loader_cfg.persistent_workers = num_workers > 0
    loader_cfg.pin_memory = bool(loader_cfg.get('pin_memory')) and str(device).startswith('cuda')
    return Runner.build_dataloader(loader_cfg, seed=seed)


def build_models(cfg, device: str, seed: int, plain_backbone: str = 'vit'):
    """The CoTAP model of ``cfg.model`` and the plain DINO-style model on the same backbone
    (``plain_backbone='vit'``: without the object-aware filter), each with its optimiser
    wrapper, in training mode and in the steady state of a long run."""
    from mmengine.optim import build_optim_wrapper

    from cotap_mm.registry import MODELS
    device = torch.device(device)
    with quiet_mmengine():  # per-parameter init and paramwise logs
        torch.manual_seed(seed)
        cotap = MODELS.build(copy.deepcopy(cfg.model))
        cotap.init_weights()
        backbone = copy.deepcopy(cfg.model.backbone)
        if plain_backbone == 'vit':
            backbone.with_oaf = False
        plain = DINOBaseline(backbone, copy.deepcopy(cfg.model.cls_head),
                             MODELS.build(copy.deepcopy(cfg.model.data_preprocessor)),
                             num_crops=cfg.model.get('num_crops', (2, 4)),
                             teacher_momentum=cfg.model.get('teacher_momentum', (0.9997, 0.9999)),
                             momentum_steps=cfg.model.teacher_momentum_steps)
        plain.init_weights()
        cotap.to(device).train()
        plain.to(device).train()
        cotap.update_teacher()  # the initial copy, as TeacherEMAHook before the first step
        plain.update_teacher()
        to_steady_state(cotap)
        wrappers = {name: build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
                    for name, model in (('cotap', cotap), ('plain', plain))}
        return dict(cotap=cotap, plain=plain), wrappers
