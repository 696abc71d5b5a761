"""The CoTAP head: ranking lists of region similarities between an image and its neighbour.

For each pool scale ks, the patch-head score maps of the G global crops of an image u and of its
k-nearest-neighbour image v are average-pooled to ks x ks; the ``topk`` cells with the most
foreground (over both crops) are selected in u and in v; the cosine similarities of u's regions to
v's regions are the positives (topk x topk per image) and those to the regions of other items'
neighbours are the negatives (``num_neg_draws`` blocks). Student and teacher similarities of the
same entries form one list per scale, ranked by :class:`ContinuousAPLoss`; the scales are averaged.
(``docs/method.md`` §1.1-1.3.)

Switches of docs/method.md §8 (corrected behaviour by default, the released one available):

- ``mask_alignment``: ``'aligned'`` scores each (image, crop) with its own foreground mask;
  ``'as_coded'`` reproduces the released reading of the crop-major mask tensor as image-major.
- ``neg_sampler``: ``'derangement'`` draws uniform permutations without fixed points;
  ``'super_perm'`` the released map (a permutation with fixed points shifted by one, mod B, which
  may repeat items).
- ``topk_tie_break``: ``'random'`` picks at random among cells with equal pooled foreground;
  ``'lowest_index'`` reproduces CUDA's top-k in the released code, where ties go to the first cells
  in raster order, so at ks = 14 (binary mask) the regions are nearly always the top rows of the
  object in crop 0 (docs/method.md §1.3, §7.2).
- ``list_scope``: ``'local'`` ranks the list of this rank's batch (released); ``'global'``
  all-gathers the selected regions of every rank, with gradients, and ranks one list over the
  global batch. Every rank computes the same loss; the all-gather's backward sums the ranks'
  gradients, so each rank's input gradient is world_size x that of the global loss, and DDP's
  averaging of parameter gradients turns this into the exact gradient of the global loss.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import broadcast, get_dist_info
from torch import Tensor

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_choice
from ..utils.crop_layout import MASK_ALIGNMENTS, as_coded_region_masks, split_halves

__all__ = ['CorrespondenceHead', 'draw_negative_maps', 'select_regions']

NEG_SAMPLERS = ('derangement', 'super_perm')
TIE_BREAKS = ('lowest_index', 'random')
LIST_SCOPES = ('local', 'global')
SIMILARITY_DTYPES = ('float32', 'float16')


def draw_negative_maps(batch_size: int, num_draws: int, sampler: str,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Index maps pi_r (num_draws, B): item b takes its negatives from item pi_r(b).

    'derangement': uniform permutations without fixed points (redrawn where one occurs).
    'super_perm': the released map: a uniform permutation whose fixed points are moved by one,
    mod B; it has no fixed point for B >= 2 but may hit an item twice. For B = 1 both return the
    identity (there is no other item).
    """
    check_choice('draw_negative_maps', 'sampler', sampler, NEG_SAMPLERS)
    arange = torch.arange(batch_size)
    perms = torch.rand(num_draws, batch_size, generator=generator).argsort(-1)
    if batch_size < 2:
        return perms
    if sampler == 'super_perm':
        return (perms + (perms == arange)) % batch_size
    bad = (perms == arange).any(-1)
    while bool(bad.any()):  # about e tries per row: a loop over redraws, not over items
        redraw = torch.rand(int(bad.sum()), batch_size, generator=generator).argsort(-1)
        perms[bad] = redraw
        bad = (perms == arange).any(-1)
    return perms


def select_regions(mask_cells: Tensor, k: int, tie_break: str,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """Indices (B, k) of the k cells with the most foreground per row of ``mask_cells`` (B, M).

    Ties go to the lowest index ('lowest_index', as CUDA's top-k does) or at random ('random').
    """
    check_choice('select_regions', 'tie_break', tie_break, TIE_BREAKS)
    key = mask_cells.float()
    if tie_break == 'random':
        # a random order among equal values only: the noise is below any gap of pooled masks
        noise = torch.rand(key.shape, generator=generator).to(key.device)
        key = key + 1e-6 * noise
    return torch.sort(-key, dim=-1, stable=True).indices[:, :k]


@MODELS.register_module()
class CorrespondenceHead(nn.Module):
    """CoTAP loss head over an image and its nearest-neighbour image.

    Args:
        loss (dict): config of the ranking loss. Defaults to ``ContinuousAPLoss``.
        pool_sizes (Sequence[int]): pooling scales ks. Defaults to (7, 14).
        topk (int): regions selected per image over all its crops. Defaults to 5.
        num_neg_draws (int): negative blocks (other items' neighbours). Defaults to 5.
        num_crops (int): global crops G per image. Defaults to 2.
        mask_alignment (str): 'aligned' or 'as_coded'. Defaults to 'aligned'.
        neg_sampler (str): 'derangement' or 'super_perm'. Defaults to 'derangement'.
        topk_tie_break (str): 'random' or 'lowest_index'. Defaults to 'random'.
        list_scope (str): 'local' or 'global'. Defaults to 'local'.
        seed (int, optional): seed of the head's own generator for negatives and tie noise.
        similarity_dtype (str): precision of the cosine lists. ``'float32'`` (default) or
            ``'float16'``: the normalised region features and the cosines are rounded to fp16,
            as the released code's AMP matmul does on any device, which creates the ties of
            its lists (docs/continuous_ap_loss.md).
    """

    def __init__(self,
                 loss: dict = dict(type='ContinuousAPLoss'),
                 pool_sizes: Sequence[int] = (7, 14),
                 topk: int = 5,
                 num_neg_draws: int = 5,
                 num_crops: int = 2,
                 mask_alignment: str = 'aligned',
                 neg_sampler: str = 'derangement',
                 topk_tie_break: str = 'random',
                 list_scope: str = 'local',
                 seed: Optional[int] = None,
                 similarity_dtype: str = 'float32') -> None:
        super().__init__()
        check_choice('CorrespondenceHead', 'mask_alignment', mask_alignment, MASK_ALIGNMENTS)
        check_choice('CorrespondenceHead', 'neg_sampler', neg_sampler, NEG_SAMPLERS)
        check_choice('CorrespondenceHead', 'topk_tie_break', topk_tie_break, TIE_BREAKS)
        check_choice('CorrespondenceHead', 'list_scope', list_scope, LIST_SCOPES)
        check_choice('CorrespondenceHead', 'similarity_dtype', similarity_dtype, SIMILARITY_DTYPES)
        if not pool_sizes or any(int(k) < 1 for k in pool_sizes):
            raise ValueError(f'CorrespondenceHead: `pool_sizes` must be positive ints, got '
                             f'{pool_sizes!r}')
        for name, value in (('topk', topk), ('num_crops', num_crops)):
            if int(value) < 1:
                raise ValueError(f'CorrespondenceHead: `{name}` must be >= 1, got {value}')
        if int(num_neg_draws) < 0:
            raise ValueError(f'CorrespondenceHead: `num_neg_draws` must be >= 0, got '
                             f'{num_neg_draws}')
        self.loss_module = MODELS.build(loss)
        self.pool_sizes = tuple(int(k) for k in pool_sizes)
        self.topk, self.num_neg_draws, self.num_crops = int(topk), int(num_neg_draws), num_crops
        self.mask_alignment, self.neg_sampler = mask_alignment, neg_sampler
        self.topk_tie_break, self.list_scope = topk_tie_break, list_scope
        self.similarity_dtype = similarity_dtype
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    # -- layout ----------------------------------------------------------------------------

    def _masks_per_image(self, masks: Tensor) -> Tensor:
        """Foreground masks (2 G B, 1, h, w) -> (2, B, G, h, w) as used for region selection."""
        halves = split_halves(masks[:, 0], self.num_crops)
        return halves if self.mask_alignment == 'aligned' else as_coded_region_masks(halves)

    # -- lists -----------------------------------------------------------------------------

    def _regions(self, maps: Tensor, masks: Tensor, ks: int):
        """Pooled region features of the selected cells.

        maps: (2, B, G, C, h, w) per network stacked as (nets, ...) below; masks: (2, B, G, h, w).
        Returns features (nets, 2, B, k, C) and the selection (2, B, k).
        """
        nets, two, B, G, C, h, w = maps.shape
        pooled = F.adaptive_avg_pool2d(maps.reshape(-1, C, h, w).float(), ks)
        cells = pooled.reshape(nets, two, B, G, C, ks * ks).permute(0, 1, 2, 3, 5, 4)
        cells = cells.reshape(nets, two, B, G * ks * ks, C)  # crop 0's cells first
        mask_cells = F.adaptive_avg_pool2d(masks.reshape(-1, 1, h, w).float(), ks)
        mask_cells = mask_cells.reshape(two * B, G * ks * ks)
        k = min(self.topk, G * ks * ks)
        index = select_regions(mask_cells, k, self.topk_tie_break, self.generator)
        index = index.reshape(two, B, k)
        feats = cells.gather(3, index[None, ..., None].expand(nets, -1, -1, -1, C))
        return feats, index

    def _gather_global(self, feats: Tensor) -> Tensor:
        """All-gather (nets, 2, B, k, C) over ranks along B, keeping the student's gradient."""
        if self.list_scope != 'global' or get_dist_info()[1] == 1:
            return feats
        from torch.distributed.nn.functional import all_gather
        return torch.cat(all_gather(feats.contiguous()), dim=2)

    def _negative_maps(self, batch_size: int, device) -> Tensor:
        perms = draw_negative_maps(batch_size, self.num_neg_draws, self.neg_sampler,
                                   self.generator).to(device)
        if self.list_scope == 'global' and get_dist_info()[1] > 1:
            broadcast(perms, 0)  # every rank must rank the same global list
        return perms

    def build_lists(self, student_maps: Tensor, teacher_maps: Tensor, fg_masks: Tensor,
                    ks: int):
        """Student and teacher similarity lists (n,) and labels at one pool scale.

        n = B * (1 + num_neg_draws) * k * k, ordered (item, block, u region, v region) with the
        positive block first.
        """
        maps = torch.stack([split_halves(student_maps, self.num_crops),
                            split_halves(teacher_maps.detach(), self.num_crops)])
        feats, _ = self._regions(maps, self._masks_per_image(fg_masks), ks)
        feats = self._gather_global(feats)
        # the precision is the switch's, not autocast's: under AMP the einsum would run in fp16
        with torch.autocast(feats.device.type, enabled=False):
            feats = feats.float()
            feats = feats / feats.norm(dim=-1, keepdim=True).clamp(min=1e-5)
            anchors, neighbours = feats[:, 0], feats[:, 1]  # (nets, B, k, C)
            B = anchors.shape[1]
            # block 0: own neighbour; block r: the neighbour of item pi_r(b)
            partner = torch.cat([torch.arange(B, device=feats.device)[None],
                                 self._negative_maps(B, feats.device)])  # (1 + R, B)
            others = neighbours[:, partner]  # (nets, 1 + R, B, k, C)
            if self.similarity_dtype == 'float16':
                # an fp16 matmul: fp16 operands, fp32 accumulation, fp16 result
                anchors, others = anchors.half().float(), others.half().float()
            sims = torch.einsum('nbic,nrbjc->nbrij', anchors, others)  # (nets, B, 1 + R, k, k)
        if self.similarity_dtype == 'float16':
            sims = sims.half()
        labels = torch.zeros(sims.shape[1:], dtype=torch.bool, device=sims.device)
        labels[:, 0] = True
        # the teacher half was detached before stacking; its slice only inherits the flag
        return sims[0].reshape(-1), sims[1].detach().reshape(-1), labels.reshape(-1)

    def loss(self, student_maps: Tensor, teacher_maps: Tensor, fg_masks: Tensor) -> Tensor:
        """CoTAP loss averaged over the pool scales.

        Args:
            student_maps: (2 G B, C, h, w) patch-head scores of the global crops in the flat
                order [u crop 0 (B), ..., u crop G-1 (B), v crop 0 (B), ..., v crop G-1 (B)],
                where v[b] is the neighbour image of u[b].
            teacher_maps: the same layout from the teacher (no gradient).
            fg_masks: (2 G B, 1, h, w) teacher foreground masks, same order, values in [0, 1].
        """
        if student_maps.dim() != 4 or student_maps.shape != teacher_maps.shape:
            raise ValueError('CorrespondenceHead: `student_maps` and `teacher_maps` must be '
                             'equal-shaped (2 G B, C, h, w) maps, got '
                             f'{tuple(student_maps.shape)} and {tuple(teacher_maps.shape)}')
        expected = (student_maps.shape[0], 1, *student_maps.shape[2:])
        if tuple(fg_masks.shape) != expected:
            raise ValueError(f'CorrespondenceHead: `fg_masks` must have shape {expected}, got '
                             f'{tuple(fg_masks.shape)}')
        losses = []
        for ks in self.pool_sizes:  # two scales: a loop over a config list, not over data
            pred, target, labels = self.build_lists(student_maps, teacher_maps, fg_masks, ks)
            losses.append(self.loss_module(pred, target, labels))
        return torch.stack(losses).mean()

    def forward(self, student_maps: Tensor, teacher_maps: Tensor, fg_masks: Tensor) -> Tensor:
        return self.loss(student_maps, teacher_maps, fg_masks)
