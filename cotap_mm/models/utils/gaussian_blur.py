"""Separable Gaussian blur with reflect padding, equal to ``torchvision``'s ``gaussian_blur``."""
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['gaussian_blur']


def gaussian_blur(x: Tensor, kernel_size: int, sigma: Union[float, Tensor]) -> Tensor:
    """Blur (N, H, W) or (N, C, H, W) maps; ``sigma`` (> 0) is a float or one value per map (N,).

    Reflect padding needs H, W > kernel_size // 2.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'gaussian_blur: `kernel_size` must be a positive odd int, '
                         f'got {kernel_size}')
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
    pad = kernel_size // 2
    h, w = x.shape[-2:]
    if pad >= h or pad >= w:
        raise ValueError(f'gaussian_blur: reflect padding of {pad} needs a grid larger than '
                         f'{pad} in both dims, got ({h}, {w}); use a smaller kernel')
    maps = x.reshape(1, -1, h, w)  # every (map, channel) its own group
    groups = maps.shape[1]
    half = (kernel_size - 1) * 0.5  # the kernel of torchvision's _get_gaussian_kernel1d
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]).pow(2))  # (N, k)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(groups // x.shape[0], dim=0)
    y = F.pad(maps, [pad, pad, pad, pad], mode='reflect')
    y = F.conv2d(y, k.view(groups, 1, 1, kernel_size), groups=groups)  # along w
    y = F.conv2d(y, k.view(groups, 1, kernel_size, 1), groups=groups)  # along h
    return y.view(x.shape)
