"""Teacher foreground mask from the CLS attention (``docs/method.md`` §4.4).

::

    a = mean_heads(cls_attn)                             (B, h, w)
    a = GaussianBlur(kernel 7, sigma 0.6, reflect)(a)    torchvision-equivalent
    sort a ascending per image, normalise to sum 1, cumulative sum
    keep = cumsum > 1 - mass                             the top patches holding ~`mass` of it
    unsort -> float {0, 1} mask (B, 1, h, w), detached

The patch that crosses the 1 - mass boundary is kept too, so the kept mass is always >= ``mass``.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from .gaussian_blur import gaussian_blur

__all__ = ['attention_foreground_mask']


@torch.no_grad()
def attention_foreground_mask(cls_attn: Tensor,
                              grid: Optional[Sequence[int]] = None,
                              mass: float = 0.6,
                              blur_kernel: int = 7,
                              blur_sigma: float = 0.6) -> Tensor:
    """Binary foreground mask keeping the highest-attention patches that hold ``mass`` of it.

    Args:
        cls_attn: CLS-query -> patch-key attention of the last block, (B, heads, N) with
            ``N == h * w``.
        grid: (h, w) of the token grid (required).
        mass: fraction of the (blurred) attention mass to keep, in (0, 1]. Defaults to 0.6.
        blur_kernel: Gaussian kernel size (odd; 0 or 1 disables the blur). Defaults to 7.
        blur_sigma: Gaussian sigma. Defaults to 0.6.

    Returns:
        (B, 1, h, w) float mask with values in {0, 1}, no gradient, dtype of ``cls_attn``.
    """
    if not isinstance(cls_attn, Tensor):
        raise TypeError('attention_foreground_mask: `cls_attn` must be a torch.Tensor, '
                        f'got {type(cls_attn).__name__}')
    if not cls_attn.is_floating_point():
        raise TypeError('attention_foreground_mask: `cls_attn` must be floating point, '
                        f'got {cls_attn.dtype}')
    if cls_attn.dim() != 3:
        raise ValueError('attention_foreground_mask: `cls_attn` must be (B, heads, N), got '
                         f'shape {tuple(cls_attn.shape)}')
    if grid is None:
        raise ValueError('attention_foreground_mask: `grid` (h, w) is required')
    h, w = (int(s) for s in grid)
    if h * w != cls_attn.shape[-1]:
        raise ValueError(f'attention_foreground_mask: `grid` {tuple(grid)} has {h * w} cells '
                         f'but `cls_attn` has N={cls_attn.shape[-1]} keys; drop the CLS '
                         '(and register) keys before calling')
    attn = cls_attn.reshape(cls_attn.shape[0], cls_attn.shape[1], h, w)
    if not 0 < mass <= 1:
        raise ValueError(f'attention_foreground_mask: `mass` must be in (0, 1], got {mass}')

    in_dtype = cls_attn.dtype
    # fp32 for the cumulative sum: fp16 cumsums of 196 entries drift visibly near the threshold.
    attn = attn.detach().float().mean(dim=1)  # (B, h, w)
    if blur_kernel > 1:
        attn = gaussian_blur(attn, blur_kernel, blur_sigma)
    flat = attn.flatten(1)  # (B, h*w)
    values, order = torch.sort(flat, dim=1)  # ascending
    cum = torch.cumsum(values / values.sum(dim=1, keepdim=True), dim=1)
    keep_sorted = (cum > 1 - mass).to(in_dtype)
    # Undo the sort: position order[b, i] holds sorted entry i.
    keep = torch.empty_like(keep_sorted).scatter_(1, order, keep_sorted)
    return keep.view(-1, 1, h, w)
