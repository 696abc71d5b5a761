"""The InnerSample patch loss (Leopart-style; ``docs/method.md`` §3.4).

The M = 2B images (COCO u's then v's) are treated as independent images, each with V = G + L crops
(crop order: the G global crops, then the L local crops). Every global crop g is an *assigning*
crop: its teacher Sinkhorn code map supervises the student score maps of the V - 1 other crops on
their overlaps with g::

    for each g < G and each v != g, for each image m:
        q    = roi_align(codes_g[m],   bbox_gc[m, g, v] / patch)         (K, S, S)  targets
        keep = roi_align(fgmask_g[m],  bbox_gc[m, g, v] / patch) >= 1    (S, S)     bins fully fg
        p    = log_softmax(roi_align(student_v[m], bbox_all[m, v, g] / patch) / T)  (K, S, S)
    ce(g, v) = -sum_{m, bins} keep * sum_k q_k p_k / max(sum_{m, bins} keep, 1)
    loss     = mean_g  sum_{v != g} ce(g, v) / (V - 1)

``roi_align`` is ``torchvision.ops.roi_align`` with output S x S (6), ``aligned=True``, spatial scale
1 and adaptive sampling (``sampling_ratio=0``), which computes what the released code's
``mmcv.ops.roi_align`` with the same settings does (values and gradients; tested), so pretraining
needs no compiled mmcv ops; boxes are in crop pixels divided by the backbone's patch
size (16 for ViT-S/16, 8 for ViT-B/8 and the demo ViT), i.e. token-grid coordinates. The
:class:`CoTAP` algorithm passes its backbone's patch size to :class:`InnerPatchLoss`, so that the
teacher codes and the student bins they supervise cover the same pixels. All (g, v, m) regions are
batched: one roi_align over the teacher codes with the mask stacked as an extra channel, one over
the global student maps, one over the local ones.

Keep threshold: a bin counts when its bilinearly pooled mask is ``>= keep_threshold`` (1.0 as
released). Pooling an all-ones region does not always give exactly 1.0 in floating point: about 2 %
of fully-foreground bins come out as 0.99999988 (mmcv and torchvision alike, fp32) and are dropped,
as they are in the released code. ``keep_threshold=1 - 1e-4`` keeps them, if that is wanted.

Mask alignment (``mask_alignment``):

- ``'aligned'`` (intended): crop g's mask of image m is used for image m.
- ``'as_coded'`` (the released code, a [QUIRK]): the masks arrive in the flat order
  ``[u c0, u c1, v c0, v c1]`` (each B) and are viewed as (G, 2B) without the crop/half
  permutation, so e.g. crop 0 of v_b is given u_b's crop-1 mask. Here the masks are passed
  aligned, (G, M) with M = [u's; v's], and the quirk is re-created from them.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_choice, check_positive, check_positive_int
from ..utils.crop_layout import MASK_ALIGNMENTS, as_coded_inner_masks

__all__ = ['InnerPatchLoss', 'inner_patch_loss']

def _rois(batch_index: Tensor, boxes: Tensor, patch_size: float) -> Tensor:
    """(R,) image indices and (R, 4) pixel boxes -> (R, 5) token-grid rois for roi_align."""
    return torch.cat([batch_index.to(boxes).unsqueeze(1), boxes / patch_size], dim=1)


def _roi_align(maps: Tensor, rois: Tensor, output_size: int) -> Tensor:
    """(N, C, h, w) maps, (R, 5) rois -> (R, C, S, S): average of bilinear samples, pixel-centre
    aligned, adaptive sampling grid, spatial scale 1 (the released settings)."""
    return roi_align(maps, rois, (output_size, output_size), spatial_scale=1.0,
                     sampling_ratio=0, aligned=True)


def _check(teacher_codes, student_global, student_local, bbox_gc, bbox_all, fg_mask,
           mask_alignment, temperature, patch_size, output_size, keep_threshold):
    tensors = (('teacher_codes', teacher_codes), ('student_global', student_global),
               ('bbox_gc', bbox_gc), ('bbox_all', bbox_all), ('fg_mask', fg_mask))
    if student_local is not None:
        tensors += (('student_local', student_local), )
    for name, value in tensors:
        if not isinstance(value, Tensor):
            raise TypeError(f'inner_patch_loss: `{name}` must be a torch.Tensor, '
                            f'got {type(value).__name__}')
        if not value.is_floating_point():
            raise TypeError(f'inner_patch_loss: `{name}` must be floating point, '
                            f'got {value.dtype}')
    if teacher_codes.dim() != 5:
        raise ValueError('inner_patch_loss: `teacher_codes` must be (G, M, K, h, w), '
                         f'got shape {tuple(teacher_codes.shape)}')
    if teacher_codes.requires_grad:
        raise ValueError('inner_patch_loss: `teacher_codes` requires grad, but the teacher '
                         'targets must be constant: pass `teacher_codes.detach()`')
    G, M, K = teacher_codes.shape[:3]
    if student_global.dim() != 5 or student_global.shape[:3] != (G, M, K):
        raise ValueError(f'inner_patch_loss: `student_global` must be (G={G}, M={M}, K={K}, h, w) '
                         f'like `teacher_codes`, got shape {tuple(student_global.shape)}')
    L = 0
    if student_local is not None:
        if student_local.dim() != 5 or student_local.shape[1:3] != (M, K):
            raise ValueError(f'inner_patch_loss: `student_local` must be (L, M={M}, K={K}, hl, '
                             f'wl), got shape {tuple(student_local.shape)}')
        L = student_local.shape[0]
    V = G + L
    if bbox_gc.shape != (M, G, V, 4):
        raise ValueError(f'inner_patch_loss: `bbox_gc` must be (M, G, V, 4) = {(M, G, V, 4)}, '
                         f'got {tuple(bbox_gc.shape)}')
    if bbox_all.shape != (M, V, G, 4):
        raise ValueError(f'inner_patch_loss: `bbox_all` must be (M, V, G, 4) = {(M, V, G, 4)}, '
                         f'got {tuple(bbox_all.shape)}')
    hw = tuple(teacher_codes.shape[-2:])
    if fg_mask.shape not in ((G, M) + hw, (G, M, 1) + hw):
        raise ValueError(f'inner_patch_loss: `fg_mask` must be (G, M, h, w) or (G, M, 1, h, w) '
                         f'with (G, M, h, w) = {(G, M) + hw}, got {tuple(fg_mask.shape)}')
    if V < 2:
        raise ValueError('inner_patch_loss: needs at least 2 crops in all')
    check_choice('inner_patch_loss', 'mask_alignment', mask_alignment, MASK_ALIGNMENTS)
    check_positive('inner_patch_loss', 'temperature', temperature)
    check_positive('inner_patch_loss', 'patch_size', patch_size)
    if not 0 < keep_threshold <= 1:
        raise ValueError(f'inner_patch_loss: `keep_threshold` must be in (0, 1], '
                         f'got {keep_threshold}')
    check_positive_int('inner_patch_loss', 'output_size', output_size)
    return G, M, K, L


def inner_patch_loss(teacher_codes: Tensor,
                     student_global: Tensor,
                     student_local,
                     bbox_gc: Tensor,
                     bbox_all: Tensor,
                     fg_mask: Tensor,
                     *,
                     temperature: float = 0.1,
                     patch_size: float = 16,
                     output_size: int = 6,
                     mask_alignment: str = 'aligned',
                     keep_threshold: float = 1.0) -> Tensor:
    """Masked cross-entropy between aligned teacher codes and student scores (see module doc).

    Args:
        teacher_codes: (G, M, K, h, w) Sinkhorn codes of the G global (assigning) crops; no grad.
        student_global: (G, M, K, h, w) raw student scores of the global crops.
        student_local: (L, M, K, hl, wl) raw student scores of the local crops, or None (L = 0).
        bbox_gc: (M, G, V, 4) pixel boxes (x1, y1, x2, y2): overlap of crop g with crop v in crop
            g's output frame (V = G + L, v = g included).
        bbox_all: (M, V, G, 4) pixel boxes: the same overlap in crop v's output frame.
        fg_mask: (G, M, h, w) or (G, M, 1, h, w) teacher {0, 1} foreground masks of the global
            crops, aligned with ``teacher_codes`` (see ``mask_alignment``).
        temperature: student softmax temperature. Defaults to 0.1.
        patch_size: pixels per token; boxes are divided by it. Defaults to 16.
        output_size: roi_align output S (S x S bins). Defaults to 6.
        mask_alignment: ``'aligned'`` or ``'as_coded'`` (M must be even: u's then v's).
        keep_threshold: pooled-mask value from which a bin counts. Defaults to 1.0 (released).

    Returns:
        A scalar, float32 (float64 for float64 student input); 0 where no bin is foreground.
    """
    G, M, K, L = _check(teacher_codes, student_global, student_local, bbox_gc, bbox_all, fg_mask,
                        mask_alignment, temperature, patch_size, output_size, keep_threshold)
    V = G + L
    S = output_size
    device = student_global.device
    dtype = torch.promote_types(student_global.dtype, torch.float32)
    if fg_mask.dim() == 4:
        fg_mask = fg_mask.unsqueeze(2)
    if mask_alignment == 'as_coded':
        fg_mask = as_coded_inner_masks(fg_mask)

    # (g, v) pairs, v != g: g-major, so pairs [g * (V-1) : (g+1) * (V-1)] belong to crop g.
    pair_g = torch.tensor([g for g in range(G) for v in range(V) if v != g], device=device)
    pair_v = torch.tensor([v for g in range(G) for v in range(V) if v != g], device=device)
    image = torch.arange(M, device=device)

    # roi_align runs in fp32: the CPU kernels have no half version, and AMP gains nothing here.
    with torch.autocast(device_type=device.type, enabled=False):
        # Teacher codes and masks share maps and boxes: one roi_align, the mask as channel K.
        teacher_in = torch.cat([teacher_codes.detach(), fg_mask.detach().to(teacher_codes)], 2)
        teacher_in = teacher_in.to(dtype).flatten(0, 1)  # (G*M, K+1, h, w), index g*M + m
        # Regions of the pairs only, ordered (pair, image).
        t_index = pair_g[:, None] * M + image[None, :]  # (P, M)
        t_boxes = bbox_gc.to(dtype)[:, pair_g, pair_v].transpose(0, 1)  # (P, M, 4)
        t_out = _roi_align(teacher_in,
                           _rois(t_index.flatten(), t_boxes.flatten(0, 1), patch_size), S)
        t_out = t_out.view(len(pair_g), M, K + 1, S, S)
        targets = t_out[:, :, :K]  # (P, M, K, S, S)
        # Only bins fully inside the foreground after bilinear sampling count.
        keep = (t_out[:, :, K] >= keep_threshold).to(dtype)  # (P, M, S, S)

        s_boxes = bbox_all.to(dtype)[:, pair_v, pair_g].transpose(0, 1)  # (P, M, 4)
        student = torch.empty(len(pair_g), M, K, S, S, dtype=dtype, device=device)
        for is_local, maps in ((False, student_global), (True, student_local)):
            # Global and local maps have different grids: one batched roi_align per crop kind.
            if maps is None:
                continue
            sel = pair_v >= G if is_local else pair_v < G
            if not bool(sel.any()):
                continue
            crop = pair_v[sel] - (G if is_local else 0)
            s_index = crop[:, None] * M + image[None, :]
            aligned = _roi_align(maps.to(dtype).flatten(0, 1),
                                 _rois(s_index.flatten(), s_boxes[sel].flatten(0, 1), patch_size),
                                 S)
            student = student.index_put((sel.nonzero().squeeze(1), ),
                                        aligned.view(-1, M, K, S, S))

        log_p = F.log_softmax(student / temperature, dim=2)
        ce_map = -(targets * log_p).sum(dim=2)  # (P, M, S, S)
        ce_pair = (ce_map * keep).sum(dim=(1, 2, 3)) / keep.sum(dim=(1, 2, 3)).clamp(min=1)
        # Every g has V - 1 pairs, so the mean over pairs is mean_g of sum_v / (V - 1).
        return ce_pair.mean()


@MODELS.register_module()
class InnerPatchLoss(nn.Module):
    """Module form of :func:`inner_patch_loss`, scaled by ``loss_weight``.

    Args:
        temperature (float): student temperature. Defaults to 0.1.
        patch_size (int, optional): pixels per token of the backbone whose maps are compared.
            ``None`` (default) until set: the ``CoTAP`` algorithm fills in its backbone's
            ``patch_size`` and refuses a config that sets another value; a standalone user
            must give it.
        output_size (int): roi_align output size. Defaults to 6.
        mask_alignment (str): ``'aligned'`` or ``'as_coded'``. Defaults to 'aligned'.
        keep_threshold (float): pooled-mask value from which a bin counts. Defaults to 1.0.
        loss_weight (float): multiplier. Defaults to 1.0.
    """

    def __init__(self,
                 temperature: float = 0.1,
                 patch_size: Optional[int] = None,
                 output_size: int = 6,
                 mask_alignment: str = 'aligned',
                 keep_threshold: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        check_choice('InnerPatchLoss', 'mask_alignment', mask_alignment, MASK_ALIGNMENTS)
        check_positive('InnerPatchLoss', 'temperature', temperature)
        self.temperature = temperature
        self.patch_size = patch_size
        self.output_size = output_size
        self.mask_alignment = mask_alignment
        self.keep_threshold = keep_threshold
        self.loss_weight = loss_weight

    def forward(self, teacher_codes: Tensor, student_global: Tensor, student_local,
                bbox_gc: Tensor, bbox_all: Tensor, fg_mask: Tensor) -> Tensor:
        """Shapes as in :func:`inner_patch_loss`."""
        if self.patch_size is None:
            raise ValueError(
                'InnerPatchLoss: `patch_size` is not set; give the backbone\'s patch size '
                '(the CoTAP algorithm sets it from `model.backbone.patch_size`)')
        loss = inner_patch_loss(
            teacher_codes, student_global, student_local, bbox_gc, bbox_all, fg_mask,
            temperature=self.temperature, patch_size=self.patch_size,
            output_size=self.output_size, mask_alignment=self.mask_alignment,
            keep_threshold=self.keep_threshold)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'temperature={self.temperature}, patch_size={self.patch_size}, '
                f'output_size={self.output_size}, mask_alignment={self.mask_alignment!r}, '
                f'keep_threshold={self.keep_threshold}, loss_weight={self.loss_weight}')
