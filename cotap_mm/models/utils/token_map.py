"""Patch tokens as a feature map: the one reshape from a token sequence to its (H, W) grid."""
from typing import Sequence

from torch import Tensor

__all__ = ['tokens_to_map']


def tokens_to_map(tokens: Tensor, grid_hw: Sequence[int]) -> Tensor:
    """Patch tokens (B, N, C), row-major over an (H, W) grid with ``H * W == N`` (any aspect
    ratio), as a map (B, C, H, W)."""
    H, W = (int(s) for s in grid_hw)
    if tokens.shape[1] != H * W:
        raise ValueError(f'tokens_to_map: {tokens.shape[1]} tokens do not fill the {H} x {W} '
                         'grid; pass the grid the tokens were made on')
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, H, W)
