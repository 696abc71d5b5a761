"""The global random generators (python, numpy, torch CPU and CUDA): their state as a
weights-only-loadable dict, and a context that runs code on generators of its own seed."""
import contextlib
import random

import numpy as np
import torch

__all__ = ['get_rng_state', 'set_rng_state', 'seeded_generators', 'derive_seed']


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


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that is a function of the integers ``keys`` only (numpy's SeedSequence:
    nearby keys give unrelated seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_generators(seed: int):
    """Seed python's, numpy's and torch's CPU generators with ``seed`` for the block, then put
    back the state they had: what the block draws depends on ``seed`` only, and code outside it
    draws as if the block had not run."""
    state = get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)  # CPU only: CUDA state is left alone
    try:
        yield
    finally:
        set_rng_state(state)
