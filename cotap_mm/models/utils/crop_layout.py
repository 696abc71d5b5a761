"""The crop layout of a CoTAP batch, in one place (docs/method.md §0).

A subset's crops reach the networks as one batch in the crop-major flat order
``[u c0, u c1, ..., v c0, v c1, ...]`` (``u`` the images, ``v`` their kNN neighbours; each entry
B images). The algorithm, the correspondence head and the inner patch loss all reshape it with
the helpers below, and the released code's two mask misalignments (§1.2, §3.4) are re-created
here from aligned masks when ``mask_alignment='as_coded'``.
"""
from typing import List, Sequence

import torch
from torch import Tensor

__all__ = ['MASK_ALIGNMENTS', 'check_num_crops', 'select_crops', 'per_crop', 'split_halves',
           'as_coded_region_masks', 'as_coded_inner_masks']

# 'aligned': each crop's own foreground mask (default); 'as_coded': the released misalignment
MASK_ALIGNMENTS = ('aligned', 'as_coded')


def check_num_crops(num_crops: Sequence[int], num_views: int, num_subsets: int = 2) -> None:
    """Refuse a batch whose crop count is not the model's (G, L): ``num_views`` crops per
    batch must be ``num_subsets * 2 * (G + L)`` (COCO and ImageNet pairs, u and v halves)."""
    G, L = num_crops
    if num_views != num_subsets * 2 * (G + L):
        got = num_views / (num_subsets * 2)
        raise ValueError(
            f'CoTAP: `model.num_crops=({G}, {L})` but the data pipeline gives {got:g} crops per '
            f'image; set `train_dataloader.dataset.view_pipeline` CoTAPMultiCrop '
            f'`nmb_crops=({G}, {L})` or change `model.num_crops` to match it')


def select_crops(views: List[Tensor], num_crops: Sequence[int], images: Sequence[int],
                 kind: str, crop_major: bool = False) -> Tensor:
    """The ``kind`` (``'global'`` or ``'local'``) crops of the image slots ``images`` as one
    batch. A batch's view list holds, per slot ``2 * subset + half`` (subset 0 = COCO,
    1 = ImageNet; half 0 = u, 1 = its neighbour v), G global then L local crops: view
    ``slot * (G + L) + crop``. The result is slot-major ``[slot crops..., next slot crops...]``,
    or with ``crop_major`` ``[crop 0 of every slot, crop 1 of every slot, ...]``."""
    G, L = num_crops
    crops = range(G) if kind == 'global' else range(G, G + L)
    pairs = ([(i, c) for c in crops for i in images] if crop_major else
             [(i, c) for i in images for c in crops])
    return torch.cat([views[i * (G + L) + c] for i, c in pairs])


def per_crop(x: Tensor, num_crops: int) -> Tensor:
    """(2 n B, ...) in [u c0..c(n-1), v c0..] order -> (n, 2B, ...) with [u's; v's] per crop."""
    if x.shape[0] % (2 * num_crops):
        raise ValueError(f'per_crop: the first dim ({x.shape[0]}) must be 2 * num_crops * B '
                         f'(u and v halves of {num_crops} crops each)')
    x = x.reshape(2, num_crops, -1, *x.shape[1:]).transpose(0, 1)
    return x.reshape(num_crops, -1, *x.shape[3:])


def split_halves(x: Tensor, num_crops: int) -> Tensor:
    """(2 G B, ...) in [u c0, u c1, v c0, v c1] order -> (2, B, G, ...): halves, images, crops."""
    G = num_crops
    if x.shape[0] % (2 * G):
        raise ValueError(f'split_halves: the first dim ({x.shape[0]}) must be 2 * num_crops * B '
                         f'(u and v halves of {G} crops each)')
    return x.reshape(2, G, x.shape[0] // (2 * G), *x.shape[1:]).transpose(1, 2)


def as_coded_region_masks(halves: Tensor) -> Tensor:
    """The CoTAP region selector's masks as released (§1.2, §7.1): each crop-major half (G, B)
    is read as if it were image-major (B, G), so slot (image r, crop c) of ``halves``
    (2, B, G, ...) gets the mask at flat index q = G r + c: (crop q // B, image q % B)."""
    return halves.transpose(1, 2).reshape(halves.shape)


def as_coded_inner_masks(fg_mask: Tensor) -> Tensor:
    """The inner patch loss's masks as released (§3.4, §7.3), from aligned masks (G, M, ...),
    M = 2B: aligned ``fg_mask[c, h * B + b]`` (half h: 0 = u, 1 = v) sits at flat index
    ``h * G * B + c * B + b`` of the released tensor, which the code then reads as (G, 2B)."""
    num_crops, num_images = fg_mask.shape[:2]
    if num_images % 2:
        raise ValueError("inner_patch_loss: mask_alignment='as_coded' needs an even number of "
                         f'images (u and v halves), got {num_images}')
    rest = fg_mask.shape[2:]
    halves = fg_mask.reshape(num_crops, 2, num_images // 2, *rest).transpose(0, 1)
    return halves.reshape(num_crops, num_images, *rest)
