"""The object-aware filter's prototype life cycle (docs/method.md §2.3, §2.4): a FIFO bank of
3x3 whole-image token layouts, the one-time k-means of the prototypes over it, their load into
the student's filter and, on request, into the EMA teacher's, and what the entropy loss takes."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import broadcast, get_rank

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_positive_int

from ..utils.kmeans import spherical_kmeans

__all__ = ['PrototypeBank']


@MODELS.register_module()
class PrototypeBank(nn.Module):
    """Per-rank FIFO memory of 3x3 layouts of the last block's input, and the life cycle of the
    object-aware filter's prototypes.

    Each image contributes one sample: its (D, H, W) patch tokens *before the last block* (raw
    residual stream, detached) pooled to (D, 3, 3), the size of the filter's templates. While the
    bank is not full, every sample of a step is inserted; once full, a random ``num_insert`` of
    them. New samples go first (index 0 is the newest) and the oldest fall off the end.

    The algorithm calls two methods per step: :meth:`update` with the block input of the student's
    ImageNet globals, and, after the step's forward passes, :meth:`prototypes`, which runs the
    one-time k-means once the bank is full, loads the centres into the student's filter (and the
    teacher's with ``teacher_sync``) and returns the inputs of :class:`EntropyMaxLoss`.

    Unlike the reference (a plain attribute), the bank, its fill count and the ``initialized``
    flag are **buffers**, so a resumed run keeps the bank and does not re-run k-means. Under DDP
    keep ``broadcast_buffers=False`` (mmengine's default) so that each rank keeps its own bank.

    Args:
        embed_dims (int): D.
        capacity (int): Number of samples. Defaults to 1024.
        num_insert (int): Samples inserted per step once full. Defaults to 32.
        num_prototypes (int): Number of k-means centres (M). Defaults to 64.
        kmeans_iters (int): Maximum k-means iterations. Defaults to 3000.
        teacher_sync (bool): Copy the k-means centres into the teacher's filter at once
            (``CoTAP(teacher_kernel_sync=True)``, docs/method.md §2.4b); False leaves the teacher
            to take them through its EMA, as released. Defaults to False.

    Buffers:
        bank (capacity, D, 3, 3); num_filled (long scalar); initialized (bool scalar).
    """

    def __init__(self, embed_dims, capacity=1024, num_insert=32, num_prototypes=64,
                 kmeans_iters=3000, teacher_sync=False):
        super().__init__()
        for name, val in dict(embed_dims=embed_dims, capacity=capacity, num_insert=num_insert,
                              num_prototypes=num_prototypes, kmeans_iters=kmeans_iters).items():
            check_positive_int('PrototypeBank', name, val)
        if num_prototypes > capacity:
            raise ValueError(f'PrototypeBank: num_prototypes={num_prototypes} > '
                             f'capacity={capacity}; k-means needs at least one sample per centre')
        self.embed_dims = embed_dims
        self.capacity = capacity
        self.num_insert = num_insert
        self.num_prototypes = num_prototypes
        self.kmeans_iters = kmeans_iters
        self.teacher_sync = teacher_sync
        self.register_buffer('bank', torch.zeros(capacity, embed_dims, 3, 3))
        self.register_buffer('num_filled', torch.zeros((), dtype=torch.long))
        self.register_buffer('initialized', torch.zeros((), dtype=torch.bool))

    @property
    def is_full(self):
        return int(self.num_filled) >= self.capacity

    @property
    def samples(self):
        """The filled part of the bank, newest first: (num_filled, D, 3, 3)."""
        return self.bank[:int(self.num_filled)]

    @torch.no_grad()
    def update(self, feats, generator=None):
        """Insert the pooled layouts of a batch.

        Args:
            feats (Tensor): Last-block input patch tokens as maps (n, D, H, W).
            generator (torch.Generator, optional): RNG for the random subset once full.
        """
        samples = F.adaptive_avg_pool2d(feats.detach().float(), 3)
        filled = int(self.num_filled)
        if filled >= self.capacity:
            idx = torch.randperm(samples.shape[0], generator=generator,
                                 device=generator.device if generator is not None else 'cpu')
            samples = samples[idx[:self.num_insert].to(samples.device)]
        samples = samples.to(self.bank.dtype)
        new = torch.cat([samples, self.bank[:filled]])[:self.capacity]  # prepend, drop oldest
        self.bank[:new.shape[0]] = new
        self.num_filled.fill_(new.shape[0])

    @torch.no_grad()
    def maybe_cluster(self, generator=None):
        """Run the one-time k-means when the bank is full and not yet used for initialisation.

        k-means runs on rank 0 only; its centres are broadcast to every rank (all ranks fill in
        lock-step, so all of them reach this branch in the same step), and ``initialized`` is set
        on all ranks. Works without a distributed environment.

        Returns:
            Tensor | None: The new kernel (M, D, 3, 3) (identical on every rank), or None when
            nothing was done.
        """
        if bool(self.initialized) or not self.is_full:
            return None
        M = self.num_prototypes
        if get_rank() == 0:
            centres = spherical_kmeans(self.bank.flatten(1), M, self.kmeans_iters,
                                       generator=generator)
        else:
            centres = torch.empty(M, self.bank[0].numel(), dtype=self.bank.dtype,
                                  device=self.bank.device)
        broadcast(centres, src=0)
        self.initialized.fill_(True)
        return centres.view(M, self.embed_dims, 3, 3)

    def prototypes(self, oaf, teacher_oaf=None):
        """After the step's forward passes (they ran with the prototypes they started with): the
        one-time k-means once the bank is full (:meth:`maybe_cluster`), its centres loaded into
        ``oaf`` (:meth:`ObjectAwareFilter.load_prototypes`) and, with ``teacher_sync``, copied
        into ``teacher_oaf`` (the EMA teacher's filter).

        Returns:
            tuple: the inputs of :class:`EntropyMaxLoss`: ``oaf.kernel`` (M, D, 3, 3), the
            parameter it trains, and the bank's samples (num_filled, D, 3, 3).
        """
        kernel = self.maybe_cluster()
        if kernel is not None:
            oaf.load_prototypes(kernel)
            if self.teacher_sync:
                teacher_oaf.copy_prototypes_from(oaf)
        return oaf.kernel, self.samples

    def extra_repr(self):
        return (f'embed_dims={self.embed_dims}, capacity={self.capacity}, '
                f'num_insert={self.num_insert}, num_prototypes={self.num_prototypes}, '
                f'teacher_sync={self.teacher_sync}')
