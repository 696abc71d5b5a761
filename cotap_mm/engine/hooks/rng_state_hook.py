"""Save the random-number generators' state in checkpoints and restore it on resume."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from cotap_mm.registry import HOOKS

__all__ = ['RNGStateHook', 'get_rng_state', 'set_rng_state']


def get_rng_state() -> dict:
    """Python, numpy and torch (CPU and CUDA) generator states, in weights-only-loadable types."""
    np_state = np.random.get_state(legacy=False)
    state = dict(
        python=random.getstate(),
        numpy=dict(bit_generator=np_state['bit_generator'],
                   key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                   pos=int(np_state['state']['pos']), has_gauss=int(np_state['has_gauss']),
                   gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    random.setstate(state['python'])
    np_state = state['numpy']
    np.random.set_state(
        dict(bit_generator=np_state['bit_generator'],
             state=dict(key=np_state['key'].numpy().astype(np.uint32), pos=np_state['pos']),
             has_gauss=np_state['has_gauss'], gauss=np_state['gauss']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make a resumed run draw the same random numbers as an uninterrupted one.

    The checkpoint gets ``rng_state`` (see :func:`get_rng_state`); on resume it is restored right
    after loading. Crops, photometric augmentation, negative draws and queue subsets then repeat
    exactly, provided the data loading runs in the main process (``num_workers=0``: worker
    processes have generators of their own) and the train loop does not consume random numbers
    while skipping trained batches (:class:`ResumableIterBasedTrainLoop`).

    Only the saving process's state is stored: in multi-process runs every rank restores rank 0's
    state.
    """
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'rng_state' in checkpoint:
            set_rng_state(checkpoint['rng_state'])
