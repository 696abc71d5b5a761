"""Loader workers that take only the cores the training step leaves idle (docs/training.md,
"Loader workers on a small CPU machine")."""
import os
import random

import numpy as np
import torch

from cotap_mm.registry import FUNCTIONS

__all__ = ['low_priority_worker_init_fn']


@FUNCTIONS.register_module()
def low_priority_worker_init_fn(worker_id: int, niceness: int = 19) -> None:
    """``worker_init_fn`` of a ``DataLoader`` whose workers run at the lowest CPU priority.

    On a machine with as many cores as the step's torch threads (2 on the demo's CPU), a worker
    at normal priority takes cores from the step's threads, whose every parallel region then
    waits for it: measured, one such worker made an iteration 12 % slower than loading in the
    main process. At ``niceness`` 19 the scheduler gives a worker only what the step leaves idle
    (its single-threaded phases), which is enough to load the next batch. ``numpy`` and
    ``random`` are seeded from the worker's torch seed (drawn by the seeded main process, as
    PyTorch documents); datasets with :class:`ItemSeedSampler` draw from their item seeds
    anyway, so their crops do not depend on workers at all.

    Use as ``train_dataloader.worker_init_fn=dict(type='low_priority_worker_init_fn')``.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    os.nice(niceness)
