"""Each rank's own state in checkpoints: random generators, feature queues, prototype bank.

mmengine checkpoints hold what rank 0 has: the model's ``state_dict`` (whose buffers include the
per-rank feature queues and prototype bank, since ``broadcast_buffers=False``) and no random
state at all. After a multi-process resume every rank would continue with rank 0's queues and
bank. :class:`RankStateHook` stores, for every rank, its random generators and its model buffers
in the checkpoint (``rank_states``, a list indexed by rank, gathered to the writer), and on resume
each rank restores its own entry.

Gathering has to happen on every rank, while mmengine calls ``before_save_checkpoint`` on rank 0
only; :class:`AtomicCheckpointHook` therefore calls :meth:`RankStateHook.gather` on all ranks just
before each checkpoint. With mmengine's plain ``CheckpointHook`` a multi-process run stores rank
0's state only, with a warning.
"""
import logging
from typing import Sequence

from mmengine.dist import gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from cotap_mm.registry import HOOKS
from cotap_mm.utils.rng import get_rng_state, set_rng_state

__all__ = ['RankStateHook']


def _model(runner):
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def rank_state(model, modules: Sequence[str]) -> dict:
    """This process's random generators and the persistent buffers of its ``modules`` (names of
    submodules of ``model``), as CPU copies."""
    persistent = set(model.state_dict().keys())
    buffers = {}
    for module_name in modules:
        parent_name, _, leaf = module_name.rpartition('.')
        try:
            if getattr(model.get_submodule(parent_name), leaf, False) is None:
                continue  # a component the config switched off (CoTAP without the OAF: bank=None)
            module = model.get_submodule(module_name)
        except AttributeError:
            raise KeyError(f'RankStateHook: the model has no submodule {module_name!r} (from '
                           '`modules`); name the modules whose buffers differ between ranks, '
                           "e.g. modules=('bank', 'patch_queue', 'cls_queue') for CoTAP") from None
        for name, buf in module.named_buffers(prefix=module_name):
            if name in persistent:
                buffers[name] = buf.detach().cpu().clone()
    return dict(rng=get_rng_state(), buffers=buffers)


@HOOKS.register_module(name=['RankStateHook', 'RNGStateHook'])
class RankStateHook(Hook):
    """Make a resumed run continue every rank's random stream, queues and bank.

    Args:
        modules (Sequence[str]): Submodules of the model whose buffers are per rank.
            Defaults to CoTAP's prototype bank and feature queues.

    Saving: ``checkpoint['rank_states'][r] = dict(rng=..., buffers=...)`` of rank r (gathered by
    :meth:`gather`), and ``checkpoint['rng_state']`` (the writer's generators, as before).
    ``buffers`` holds the buffers of ``modules`` only, the state that differs between ranks
    (the teacher, also kept in buffers, is the same on every rank and is not repeated): for the
    ViT-S/16 config on 8 GPUs about 36 MB per rank, mostly the patch queue.
    Resuming with the same world size: rank r restores its generators and puts its buffers into
    the checkpoint's ``state_dict`` before mmengine loads it into the model. Resuming with a
    different world size: a warning; ranks that existed restore their own entry, new ranks take
    rank 0's; the data order and per-item seeds follow the new world size, so the run goes on but
    is not the run an uninterrupted job would have made.

    Crops and neighbour draws do not depend on these generators when the sampler is
    :class:`ItemSeedSampler` (each item is drawn on generators seeded by its position), so data
    loading in worker processes repeats on resume too.
    """
    priority = 'VERY_LOW'

    def __init__(self, modules: Sequence[str] = ('bank', 'patch_queue', 'cls_queue')):
        self.modules = tuple(modules)
        self._gathered = None  # (iteration, [rank_state of rank 0, 1, ...]) on the writer
        self._warned = False

    def gather(self, runner) -> None:
        """Collect every rank's state on rank 0; call on all ranks before a checkpoint."""
        states = gather_object(rank_state(_model(runner), self.modules), dst=0)
        self._gathered = (runner.iter, states) if states is not None else None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = get_rng_state()
        rank, world = get_dist_info()
        if self._gathered is not None and self._gathered[0] == runner.iter:
            checkpoint['rank_states'] = self._gathered[1]
        elif world == 1:
            checkpoint['rank_states'] = [rank_state(_model(runner), self.modules)]
        elif not self._warned:
            self._warned = True
            print_log('RankStateHook: a checkpoint saved without AtomicCheckpointHook\'s '
                      'gathering (the plain CheckpointHook, or a best-checkpoint save) holds '
                      'rank 0\'s random state and buffers only; resumed from it, every rank '
                      'continues from rank 0\'s queues, bank and generators.',
                      logger='current', level=logging.WARNING)
        self._gathered = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get('rank_states')
        if not states:
            if 'rng_state' in checkpoint:
                set_rng_state(checkpoint['rng_state'])
            return
        rank, world = get_dist_info()
        if len(states) != world:
            print_log(f'RankStateHook: the checkpoint was written by {len(states)} ranks and '
                      f'is resumed by {world}: rank r < {min(len(states), world)} restores rank '
                      f"r's queues, bank and random generators, the others rank 0's; the data "
                      'order and item seeds follow the new number of ranks, so this run '
                      'continues but differs from an uninterrupted one.', logger='current',
                      level=logging.WARNING)
        own = states[rank] if rank < len(states) else states[0]
        set_rng_state(own['rng'])
        # mmengine loads the state_dict into the model after this hook: put this rank's buffers in
        state_dict = checkpoint.get('state_dict')
        if state_dict is not None:
            for name, value in own['buffers'].items():
                if name in state_dict:
                    state_dict[name] = value
