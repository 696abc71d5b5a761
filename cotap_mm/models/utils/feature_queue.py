"""A FIFO queue of teacher score rows for the Sinkhorn step (``docs/method.md`` §3.2).

New rows are *prepended*: ``rows[0]`` is the newest, and rows beyond ``capacity`` fall off the end.
The storage and the fill count are buffers, so the queue is saved in and restored from checkpoints
with the model (and moved with ``.to(device)``). Queues are per process: the configured total length
divided by the world size is the capacity given here.

- Patch queue: capacity 65,536 (x 512), fed ``push(fg_rows, max_insert=2048)`` each step.
- CLS queue: capacity 8,192 (x 4096), fed all rows the first time (``max_insert=None``), then
  ``max_insert=100``.
"""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_positive_int

__all__ = ['FeatureQueue']


@MODELS.register_module()
class FeatureQueue(nn.Module):
    """FIFO of (capacity, dim) rows held in buffers.

    Args:
        capacity (int): maximum number of rows kept.
        dim (int): row width.
        dtype: storage dtype. Defaults to float32 (teacher scores may arrive in fp16 under AMP).
    """

    def __init__(self, capacity: int, dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        for name, value in (('capacity', capacity), ('dim', dim)):
            check_positive_int('FeatureQueue', name, value)
        self.capacity = capacity
        self.dim = dim
        self.register_buffer('queue', torch.zeros(capacity, dim, dtype=dtype))
        self.register_buffer('num_filled', torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.num_filled)

    @property
    def is_empty(self) -> bool:
        return int(self.num_filled) == 0

    @property
    def rows(self) -> Tensor:
        """The filled part, (num_filled, dim), newest first."""
        return self.queue[:int(self.num_filled)]

    @torch.no_grad()
    def push(self,
             rows: Tensor,
             max_insert: Optional[int] = None,
             generator: Optional[torch.Generator] = None) -> None:
        """Prepend ``rows`` (or a random subset of at most ``max_insert`` of them).

        Args:
            rows: (n, dim) new rows; detached and cast to the queue's dtype and device.
            max_insert: if given and n > max_insert, a uniformly random subset of ``max_insert``
                rows (in random order) is inserted instead.
            generator: random generator for the subset (on the rows' device), for reproducibility.
        """
        if max_insert is not None and (not isinstance(max_insert, int) or max_insert < 0):
            raise ValueError(f'FeatureQueue.push: `max_insert` must be None or an int >= 0, '
                             f'got {max_insert!r}')
        rows = rows.detach()
        if max_insert is not None and rows.shape[0] > max_insert:
            perm = torch.randperm(rows.shape[0], generator=generator,
                                  device=generator.device if generator is not None
                                  else rows.device)
            rows = rows[perm[:max_insert].to(rows.device)]
        # More new rows than the capacity: only the first `capacity` of them survive prepending.
        rows = rows[:self.capacity].to(self.queue)
        n = rows.shape[0]
        if n == 0:
            return
        # Shift the old rows back and write the new ones in front (in place, so the buffer object
        # and any references to it stay valid).
        self.queue[n:] = self.queue[:self.capacity - n].clone()
        self.queue[:n] = rows
        self.num_filled.fill_(min(int(self.num_filled) + n, self.capacity))

    def extra_repr(self) -> str:
        return f'capacity={self.capacity}, dim={self.dim}'
