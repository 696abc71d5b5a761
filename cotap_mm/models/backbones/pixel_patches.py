"""Raw pixels as a "backbone": the pixels of each non-overlapping patch, stacked as channels.

A linear probe on these maps is the floor any learned backbone must beat on the same protocol
(docs/synthetic.md, "How much do raw pixels tell?")."""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule

from cotap_mm.registry import MODELS, register_in_mmseg

__all__ = ['PixelPatches']


@register_in_mmseg
@MODELS.register_module()
class PixelPatches(BaseModule):
    """The (already normalised) pixels of every ``patch_size`` x ``patch_size`` patch as one
    feature vector; no parameters.

    Channel ``c * p * p + i * p + j`` of the output at patch ``(y, x)`` is input channel ``c`` at
    pixel ``(y * p + i, x * p + j)`` (the order of :func:`torch.nn.functional.unfold`). With
    ``patch_size=8`` and RGB input, a pixel map is 192 channels wide, the width a 1x1-conv
    decode head gets on the 8-px patch grid of a ViT/8.

    Args:
        patch_size (int): Side p of the square, non-overlapping patches. Defaults to 8.
        init_cfg (dict | list, optional): Unused (nothing to initialise); accepted as by any
            mmengine ``BaseModule``.

    Example:
        >>> import torch
        >>> (out, ) = PixelPatches(patch_size=8)(torch.rand(2, 3, 96, 64))
        >>> out.shape
        torch.Size([2, 192, 12, 8])
    """

    def __init__(self, patch_size: int = 8, init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f'PixelPatches: patch_size={patch_size!r}; it must be an int >= 1')
        self.patch_size = patch_size

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor]:
        """(B, C, H, W) -> a 1-tuple with the (B, C * p * p, H / p, W / p) patch map."""
        if x.dim() != 4:
            raise ValueError(f'PixelPatches: expected a (B, C, H, W) input, got shape '
                             f'{tuple(x.shape)}')
        B, C, H, W = x.shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f'PixelPatches: the input size (H, W) = ({H}, {W}) must be '
                             f'divisible by patch_size={p}; resize or pad the input (e.g. the '
                             'data preprocessor\'s size / size_divisor)')
        patches = F.unfold(x, kernel_size=p, stride=p)  # (B, C * p * p, H/p * W/p)
        return (patches.reshape(B, C * p * p, H // p, W // p), )
