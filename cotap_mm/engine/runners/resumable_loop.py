"""Iteration-based train loop whose resume skip leaves the random-number streams untouched."""
import logging

from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from cotap_mm.registry import LOOPS
from ..hooks.rng_state_hook import get_rng_state, set_rng_state

__all__ = ['ResumableIterBasedTrainLoop']


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop``, except that the batches skipped on resume are loaded
    with the random generators' state saved and restored around them.

    mmengine advances the dataloader over the already-trained batches by loading them, which
    draws random crops again; without this, a resumed run would continue from a different random
    stream than the uninterrupted one (see :class:`RNGStateHook`).
    """

    def run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            print_log(f'Advance dataloader {self._iter} steps to skip data that has already '
                      'been trained (random generators preserved)', logger='current',
                      level=logging.WARNING)
            state = get_rng_state()
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            set_rng_state(state)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None
                    and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0
                         or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
