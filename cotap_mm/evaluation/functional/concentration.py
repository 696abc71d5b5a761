"""Semantic concentration of dense features: how tightly the patches of one class gather in
feature space, across images, compared with patches of other classes (docs/probes.md).

For L2-normalised (and, by default, centred) patch features ``z``:

- intra-class, per class ``c``: the mean cosine ``z_a . z_b`` over the pairs of class-``c``
  patches that lie in **different images** (pairs within one image are excluded: neighbouring
  patches of one object are similar in any backbone; the question is whether the *class*
  concentrates);
- inter-class, per class pair ``(c, c')``: the mean cosine over all pairs of a class-``c`` and
  a class-``c'`` patch;
- ``intra`` (mean over the classes that have cross-image pairs), ``inter`` (mean over the
  unordered class pairs), ``gap = intra - inter`` and the normalised
  ``ratio = (intra - inter) / (1 - inter)``: 1 when every class collapses onto one direction
  (intra = 1) whatever the inter-class cosine, 0 when patches of one class are no closer than
  patches of two classes.

Both are computed in closed form from sums, never from an N x N matrix. With ``S_c`` the sum of
the class-``c`` features, ``S_{c,i}`` the sum over the class-``c`` patches of image ``i`` and
``n_c``, ``n_{c,i}`` their counts, the ordered cross-image pairs of class ``c`` sum to
``||S_c||^2 - sum_i ||S_{c,i}||^2`` and number ``n_c^2 - sum_i n_{c,i}^2``; the class pair
``(c, c')`` sums to ``S_c . S_c'`` over ``n_c n_c'`` pairs. Memory: one float64 row per
(class, image) pair present, plus a chunk of patches.

Centring (``center=True``): the mean feature over all labelled patches is subtracted before the
L2 normalisation. ViT patch features share a large common component (the mean token direction),
which makes every cosine close to 1 and the intra / inter difference a small residue of it; with
the common part removed the cosines measure how the patches differ. Adding any constant vector
to all features leaves the centred measure unchanged.
"""
import math
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

__all__ = ['semantic_concentration', 'concentration_per_class', 'patch_labels']

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_concentration_inputs(feats, labels, image_ids, chunk):
    if not torch.is_tensor(feats) or feats.dim() != 2 or not feats.is_floating_point():
        raise ValueError(f'semantic_concentration: feats must be a floating (N, C) tensor, got '
                         f'{_describe(feats)}')
    N, C = feats.shape
    if N == 0 or C == 0:
        raise ValueError(f'semantic_concentration: feats is empty ({tuple(feats.shape)})')
    for name, t in (('labels', labels), ('image_ids', image_ids)):
        if not torch.is_tensor(t) or t.dtype not in _INT_DTYPES or t.shape != (N, ):
            raise ValueError(f'semantic_concentration: {name} must be an integer ({N},) tensor '
                             f'(one per row of feats), got {_describe(t)}')
        if t.device != feats.device:
            raise ValueError(f'semantic_concentration: {name} is on {t.device}, feats on '
                             f'{feats.device}')
    if chunk < 1:
        raise ValueError(f'semantic_concentration: chunk must be >= 1, got {chunk}')


def _describe(t):
    if not torch.is_tensor(t):
        return type(t).__name__
    return f'{t.dtype} {tuple(t.shape)}'


def _finite(x: torch.Tensor, s: int) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f'semantic_concentration: feats has non-finite values among the '
                         f'labelled rows of [{s}, {s + x.shape[0]})')
    return x


def _pair_index(labels, image_ids, valid):
    """Group the labelled patches by class and by (class, image).

    Returns:
        tuple: ``classes`` (K,) the class ids present, sorted; ``slot`` (N,) the (class, image)
        group of each patch, -1 where unlabelled; ``pair_class`` (P,) the class index (into
        ``classes``) of each group.
    """
    classes, cls_idx = torch.unique(labels[valid].long(), return_inverse=True)  # (K,), (M,)
    images, img_idx = torch.unique(image_ids[valid].long(), return_inverse=True)  # (I,), (M,)
    pairs, pair_inv = torch.unique(cls_idx * images.numel() + img_idx,
                                   return_inverse=True)  # (P,), (M,)
    slot = torch.full_like(labels, -1, dtype=torch.long)
    slot[valid] = pair_inv
    return classes, slot, pairs // images.numel()


def _group_sums(feats, slot, num_groups, mean, chunk):
    """Sum of the L2-normalised ``feats - mean`` rows per group, in float64.

    Args:
        feats (Tensor): (N, C) features.
        slot (Tensor): (N,) group of each row, -1 to skip.
        num_groups (int): P.
        mean (Tensor): (C,) float64 subtracted before the normalisation.

    Returns:
        Tensor: (P, C) float64.
    """
    sums = feats.new_zeros((num_groups, feats.shape[1]), dtype=torch.float64)
    for s in range(0, feats.shape[0], chunk):
        keep = slot[s:s + chunk] >= 0
        x = _finite(feats[s:s + chunk][keep].double(), s) - mean  # (m, C)
        sums.index_add_(0, slot[s:s + chunk][keep], F.normalize(x, dim=1))
    return sums


def _labelled_mean(feats, valid, chunk):
    """(C,) float64 mean of the labelled rows of (N, C) ``feats``."""
    total = feats.new_zeros(feats.shape[1], dtype=torch.float64)
    for s in range(0, feats.shape[0], chunk):
        total += _finite(feats[s:s + chunk][valid[s:s + chunk]].double(), s).sum(0)
    return total / valid.sum()


def _mean_or_nan(x: torch.Tensor) -> float:
    return x.mean().item() if x.numel() else math.nan


@torch.no_grad()
def semantic_concentration(feats: torch.Tensor,
                           labels: torch.Tensor,
                           image_ids: torch.Tensor,
                           center: bool = True,
                           ignore_index: int = 255,
                           chunk: int = 65536) -> Dict[str, object]:
    """Intra-class (across images) and inter-class mean cosine of labelled patch features.

    Args:
        feats (Tensor): (N, C) patch features, any float dtype and device.
        labels (Tensor): (N,) integer class of each patch; ``ignore_index`` and negative values
            are skipped.
        image_ids (Tensor): (N,) integer id of the image each patch comes from.
        center (bool): Subtract the mean of the labelled features before the L2 normalisation
            (see the module docstring). Defaults to True.
        ignore_index (int): Label to skip. Defaults to 255.
        chunk (int): Rows converted to float64 at a time. Defaults to 65536.

    Returns:
        dict: ``intra``, ``inter``, ``gap``, ``ratio`` (floats; NaN where undefined: ``intra``
        without any cross-image pair, ``inter`` with fewer than two classes), and per class, in
        the order of ``classes`` (K,) (the class ids present, sorted): ``intra_per_class`` (K,)
        float64 (NaN for a class seen in one image only), ``cosine_matrix`` (K, K) float64
        (off the diagonal the inter-class mean cosine, on it ``intra_per_class``),
        ``num_patches_per_class`` and ``num_images_per_class`` (K,) int64; ``num_patches``,
        ``num_classes`` (K), ``num_intra_classes`` (classes with cross-image pairs) and
        ``centered``. A feature equal to the mean (or zero, uncentred) has no direction and
        counts with cosine 0.

    Raises:
        ValueError: Bad shapes or dtypes, non-finite features, or no labelled patch.
    """
    _check_concentration_inputs(feats, labels, image_ids, chunk)
    valid = (labels >= 0) & (labels != ignore_index)  # (N,)
    if not bool(valid.any()):
        raise ValueError(f'semantic_concentration: labels has no labelled patch (all negative or '
                         f'== ignore_index {ignore_index})')
    classes, slot, pair_class = _pair_index(labels, image_ids, valid)
    K, P = classes.numel(), pair_class.numel()
    mean = (_labelled_mean(feats, valid, chunk) if center else
            feats.new_zeros(feats.shape[1], dtype=torch.float64))
    s_pair = _group_sums(feats, slot, P, mean, chunk)  # (P, C): S_{c,i}
    n_pair = torch.bincount(slot[valid], minlength=P).double()  # (P,): n_{c,i}

    def per_class(v):  # (P, ...) -> (K, ...) sums over the images of each class
        return v.new_zeros((K, *v.shape[1:])).index_add_(0, pair_class, v)

    s_cls, n_cls = per_class(s_pair), per_class(n_pair)  # (K, C), (K,)
    gram = s_cls @ s_cls.T  # (K, K): S_c . S_c'
    cross_sum = gram.diagonal() - per_class((s_pair * s_pair).sum(1))  # (K,)
    cross_cnt = n_cls * n_cls - per_class(n_pair * n_pair)  # (K,)
    has_cross = cross_cnt > 0
    intra_c = torch.where(has_cross, cross_sum / cross_cnt.clamp_min(1),
                          torch.full_like(cross_sum, math.nan))
    cos = gram / torch.outer(n_cls, n_cls)  # (K, K)
    cos.diagonal().copy_(intra_c)
    intra = _mean_or_nan(intra_c[has_cross])
    inter = _mean_or_nan(cos[torch.triu_indices(K, K, 1, device=cos.device).unbind()])
    gap = intra - inter
    return dict(
        intra=intra, inter=inter, gap=gap,
        ratio=gap / (1.0 - inter) if inter != 1.0 else math.nan,
        classes=classes, intra_per_class=intra_c, cosine_matrix=cos,
        num_patches_per_class=n_cls.long(),
        num_images_per_class=torch.bincount(pair_class, minlength=K),
        num_patches=int(valid.sum()), num_classes=K, num_intra_classes=int(has_cross.sum()),
        centered=bool(center))


def concentration_per_class(m: dict) -> List[dict]:
    """One row per class present in the result ``m`` of :func:`semantic_concentration`: its
    patch and image counts, its intra cosine, and the closest other class with their cosine."""
    cos, K = m['cosine_matrix'], m['num_classes']
    off = cos.clone()
    off.diagonal().fill_(-float('inf'))
    rows = []
    for k, c in enumerate(m['classes'].tolist()):
        j = int(off[k].argmax()) if K > 1 else None
        rows.append(dict(
            cls=c, num_patches=int(m['num_patches_per_class'][k]),
            num_images=int(m['num_images_per_class'][k]),
            intra=float(m['intra_per_class'][k]),
            closest_class=None if j is None else int(m['classes'][j]),
            closest_inter=None if j is None else float(cos[k, j])))
    return rows


@torch.no_grad()
def patch_labels(label: torch.Tensor,
                 grid: Sequence[int],
                 num_classes: int,
                 ignore_index: int = 255,
                 min_purity: float = 0.75,
                 return_purity: bool = False,
                 chunk: int = 64):
    """Pool pixel labels to a patch grid: each patch takes the majority class of its pixels if
    that class covers at least ``min_purity`` of them, else ``ignore_index``.

    The label map is spread evenly over the grid (pixel row ``y`` falls in patch row
    ``y * h // H``; exact blocks when ``H`` is a multiple of ``h``). Ignored pixels (and labels
    outside [0, num_classes)) count in a patch's size but for no class, so a patch that is
    mostly unlabelled is ignored too. Ties go to the lowest class id.

    Args:
        label (Tensor): (B, H, W) integer pixel labels.
        grid (tuple[int, int]): (h, w) patch grid, h <= H and w <= W.
        num_classes (int): C.
        ignore_index (int): Defaults to 255.
        min_purity (float): In [0, 1]. Defaults to 0.75.
        return_purity (bool): Also return the majority fraction. Defaults to False.
        chunk (int): Images pooled at a time; bounds the (chunk, h, w, C + 1) counts.

    Returns:
        Tensor | tuple[Tensor, Tensor]: (B, h, w) int64 patch labels (and the (B, h, w)
        float64 majority fraction).
    """
    if label.dim() != 3 or label.is_floating_point():
        raise ValueError(f'patch_labels: label must be an integer (B, H, W) tensor, got '
                         f'{_describe(label)}')
    B, H, W = label.shape
    if B > chunk:
        parts = [patch_labels(label[s:s + chunk], grid, num_classes, ignore_index, min_purity,
                              True, chunk) for s in range(0, B, chunk)]
        out, purity = (torch.cat(t) for t in zip(*parts))
        return (out, purity) if return_purity else out
    h, w = (int(g) for g in grid)
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f'patch_labels: grid {tuple(grid)} must lie within 1 and the label size '
                         f'{(H, W)}')
    if not 0.0 <= min_purity <= 1.0:
        raise ValueError(f'patch_labels: min_purity must be in [0, 1], got {min_purity}')
    lab = label.long()
    lab = torch.where((lab >= 0) & (lab < num_classes), lab, torch.full_like(lab, num_classes))
    rows = torch.arange(H, device=lab.device) * h // H  # (H,) patch row of each pixel row
    cols = torch.arange(W, device=lab.device) * w // W  # (W,)
    cell = (rows[:, None] * w + cols[None, :]).expand(B, H, W)  # (B, H, W) in [0, h*w)
    img = torch.arange(B, device=lab.device)[:, None, None] * (h * w)
    counts = torch.bincount(((img + cell) * (num_classes + 1) + lab).flatten(),
                            minlength=B * h * w * (num_classes + 1))
    counts = counts.view(B, h, w, num_classes + 1)  # the last bin: unlabelled pixels
    cls = counts[..., :num_classes].argmax(-1)  # (B, h, w): the first maximum on ties
    best = counts.gather(-1, cls[..., None])[..., 0]  # (B, h, w)
    purity = best.double() / counts.sum(-1).double()  # correctly rounded: 7 / 10 == 0.7
    out = torch.where((best > 0) & (purity >= min_purity), cls, torch.full_like(cls, ignore_index))
    return (out, purity) if return_purity else out
