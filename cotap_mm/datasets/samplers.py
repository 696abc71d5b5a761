"""A sampler whose items carry their own seed, so that data randomness is a function of the run's
seed and the item's place in it, whatever the number of loader workers."""
from typing import Iterator, Optional, Tuple

from mmengine.dataset import DefaultSampler

from cotap_mm.registry import DATA_SAMPLERS
from cotap_mm.utils.rng import derive_seed

__all__ = ['ItemSeedSampler', 'split_item_key']


@DATA_SAMPLERS.register_module()
class ItemSeedSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (same indices, same order), yielding ``(index, item_seed)``.

    ``item_seed = derive_seed(seed, epoch, position)`` with ``position = j * world_size + rank``
    the item's place in the epoch's sequence over all ranks (item j of this rank). Datasets that
    accept such keys (:class:`CoTAPDualDataset`, :class:`KNNPairDataset`) draw the item's
    crops, jitter and neighbour on generators seeded with ``item_seed``. The crops of iteration i
    on rank r are then a function of (seed, i, r) (for a fixed batch size and world size): they
    do not depend on which worker process loads them or on ``num_workers``, and a resumed run
    draws the same crops as an uninterrupted one. It also lets
    :class:`ResumableIterBasedTrainLoop` skip the trained batches of a resumed run without
    loading them (:meth:`start_at`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._start = 0

    def start_at(self, epoch: int, start: int) -> None:
        """Make the next pass begin at this rank's item ``start`` of ``epoch`` (the items before
        are skipped without being loaded: a resume needs their place, not their content)."""
        super().set_epoch(epoch)
        self._start = int(start)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for j, index in enumerate(super().__iter__()):
            if j >= self._start:
                yield index, derive_seed(self.seed, self.epoch, j * self.world_size + self.rank)


def split_item_key(key) -> Tuple[int, Optional[int]]:
    """``index`` -> (index, None); ``(index, item_seed)`` (from :class:`ItemSeedSampler`) ->
    (index, item_seed)."""
    if isinstance(key, (tuple, list)):
        index, seed = key
        return int(index), int(seed)
    return int(key), None
