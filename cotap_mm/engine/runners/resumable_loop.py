"""Iteration-based train loop whose resume skip leaves the random-number streams untouched and,
with :class:`ItemSeedSampler`, loads nothing."""
import logging

from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator

from cotap_mm.datasets.samplers import ItemSeedSampler
from cotap_mm.registry import LOOPS
from cotap_mm.utils.rng import get_rng_state, set_rng_state

__all__ = ['ResumableIterBasedTrainLoop']


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` with a resume skip that changes no random stream.

    mmengine advances the dataloader over the already-trained batches by loading them, which
    draws random crops again and takes as long as loading them for training. Here:

    - with :class:`ItemSeedSampler` (the default configs), the sampler is started at the first
      untrained item and nothing is loaded: the items carry the seeds of their place, so the
      batches that follow are those of an uninterrupted run, at once;
    - with another sampler, the trained batches are loaded as in mmengine, with the random
      generators' state saved and restored around them (see :class:`RankStateHook`).
    """

    def run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._skip_trained_batches()
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

    def _skip_trained_batches(self) -> None:
        sampler = getattr(self.dataloader, 'sampler', None)
        if isinstance(sampler, ItemSeedSampler) and self.dataloader.batch_size:
            # items carry seeds of their place: start the sampler there, load nothing
            epoch, batch = divmod(self._iter, len(self.dataloader))
            if batch == 0:
                # at an epoch boundary start at the end of the previous epoch, so that the next
                # batch opens the new epoch (set_epoch, a new iterator) as in an unbroken run
                epoch, batch = epoch - 1, len(self.dataloader)
            # a new iterator draws its base seed from torch's generator; the unbroken run did
            # not draw here
            state = get_rng_state()
            sampler.start_at(epoch, batch * self.dataloader.batch_size)
            self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
            self.dataloader_iterator._epoch = epoch
            set_rng_state(state)
            print_log(f'Skipped the {self._iter} trained batches without loading them '
                      f'(ItemSeedSampler: epoch {epoch}, batch {batch})', logger='current')
            return
        print_log(f'Advance dataloader {self._iter} steps to skip data that has already '
                  'been trained (random generators preserved)', logger='current',
                  level=logging.WARNING)
        state = get_rng_state()
        for _ in range(self._iter):
            next(self.dataloader_iterator)
        set_rng_state(state)
