"""What the training-step benchmark measures: the thread count, the CoTAP model and its plain
DINO-style baseline (:class:`cotap_mm.models.algorithms.DINOBaseline`) built from one config
with their optimisers, and the training loader."""
import copy
import os
from typing import Optional

import torch

from ..models.algorithms import DINOBaseline
from .step_timing import quiet_mmengine, to_steady_state

__all__ = ['set_threads', 'warn_if_oversubscribed', 'build_loader', 'build_models']


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

    from ..registry import MODELS
    with quiet_mmengine():  # per-parameter init and paramwise logs
        return _build_models(cfg, torch.device(device), seed, plain_backbone, MODELS,
                             build_optim_wrapper)


def _build_models(cfg, device, seed, plain_backbone, MODELS, build_optim_wrapper):
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
