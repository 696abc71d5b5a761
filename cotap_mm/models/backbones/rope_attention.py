"""DINOv3's attention: axial 2-D rotary position embeddings (RoPE) on the patch tokens and a
masked k bias, as layers of :class:`CoTAPVisionTransformer` (``rope_base``).

The parameters keep mmpretrain's names (``ln1``, ``attn.qkv``, ``attn.proj``, ``attn.gamma1``,
``ln2``, ``ffn``), so the object-aware filter borrows a RoPE layer as it borrows a DINO one. RoPE
has no learnable weights: the angles of a patch grid are computed at each forward.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer
from mmpretrain.models.utils import MultiheadAttention

from cotap_mm.registry import MODELS

__all__ = ['RopePositionEmbedding', 'RopeAttention', 'RopeTransformerEncoderLayer']


class RopePositionEmbedding(nn.Module):
    """DINOv3's axial RoPE angles of an (H, W) patch grid.

    - Coordinates, each axis on its own: ``(arange(0.5, H) / H) * 2 - 1``, so positions are
      relative to the grid (a 14 x 14 and a 6 x 6 crop both span [-1, 1]) and never interpolated.
    - Periods ``base ** (2 i / (d_h / 2))`` for ``i < d_h / 4``; angles
      ``2 pi * coord / period``. A head's d_h channels hold the y angles, then the x angles, then
      both again (the rotate-half layout).
    - ``rescale_coords=R`` (DINOv3 trains with 2): in training mode, every forward multiplies
      all coordinates by one factor drawn log-uniformly from [1/R, R]. None (default, as timm):
      off.

    Args:
        head_dims (int): d_h, a multiple of 4.
        base (float): Period base. Defaults to 100 (DINOv3).
        rescale_coords (float, optional): R >= 1, see above. Defaults to None.

    Shapes: ``forward((H, W))`` -> ``(sin, cos)``, each (H * W, d_h), patches row-major.
    """

    def __init__(self, head_dims, base=100., rescale_coords=None):
        super().__init__()
        if head_dims % 4:
            raise ValueError(f'RopePositionEmbedding: head_dims must be a multiple of 4 (two '
                             f'axes, sin and cos), got {head_dims}')
        if rescale_coords is not None and not rescale_coords >= 1:
            raise ValueError(f'RopePositionEmbedding: rescale_coords must be None or >= 1, got '
                             f'{rescale_coords!r}')
        self.base, self.rescale_coords = float(base), rescale_coords
        exponents = 2 * torch.arange(head_dims // 4, dtype=torch.float32) / (head_dims // 2)
        self.register_buffer('periods', self.base**exponents, persistent=False)

    def forward(self, hw):
        H, W = hw
        device = self.periods.device
        coords = torch.stack(torch.meshgrid(torch.arange(0.5, H, device=device) / H,
                                            torch.arange(0.5, W, device=device) / W,
                                            indexing='ij'), dim=-1).flatten(0, 1) * 2. - 1.
        if self.training and self.rescale_coords is not None:
            log_r = math.log(self.rescale_coords)
            coords = coords * torch.empty(1, device=device).uniform_(-log_r, log_r).exp()
        angles = 2 * math.pi * coords[:, :, None] / self.periods  # (HW, 2, d_h / 4)
        angles = angles.flatten(1).tile(2)  # (HW, d_h)
        return angles.sin(), angles.cos()

    def extra_repr(self):
        return f'base={self.base}, rescale_coords={self.rescale_coords}'


def _rotate(x, sin, cos):
    """Rotate-half RoPE of ``x`` (..., N, d_h) by angles (N, d_h); in ``x``'s dtype."""
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


@MODELS.register_module()
class RopeAttention(MultiheadAttention):
    """mmpretrain's ``MultiheadAttention`` (same arguments and keys) with DINOv3's two changes:

    - RoPE rotates the queries and keys of the last N tokens, the patches; the tokens before
      them (CLS, storage tokens) are not rotated;
    - the k third of ``qkv.bias`` is masked: adding a vector to every key shifts all logits of a
      query equally, so it cannot change the softmax; DINOv3 zeroes it (``bias_mask``) and so
      does this forward (the converters also store it as zeros).

    Shapes: ``forward(x, rope)`` with ``x`` (B, T, D) and ``rope = (sin, cos)``, each (N, d_h),
    N <= T (None: no rotation) -> (B, T, D).
    """

    def qkv_heads(self, x, rope=None):
        """Queries, keys and values (B, heads, T, d_h), the patch queries and keys rotated."""
        B, T, _ = x.shape
        D, bias = self.embed_dims, self.qkv.bias
        if bias is not None:
            bias = torch.cat((bias[:D], torch.zeros_like(bias[D:2 * D]), bias[2 * D:]))
        qkv = F.linear(x, self.qkv.weight, bias).view(B, T, 3, self.num_heads, self.head_dims)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            n = T - rope[0].shape[0]  # prefix tokens, not rotated
            q = torch.cat((q[:, :, :n], _rotate(q[:, :, n:], *rope)), dim=2)
            k = torch.cat((k[:, :, :n], _rotate(k[:, :, n:], *rope)), dim=2)
        return q, k, v

    def forward(self, x, rope=None):
        B, T, _ = x.shape
        q, k, v = self.qkv_heads(x, rope)
        x = self.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        x = self.proj(x.transpose(1, 2).reshape(B, T, self.embed_dims))
        return self.out_drop(self.gamma1(self.proj_drop(x)))


@MODELS.register_module()
class RopeTransformerEncoderLayer(TransformerEncoderLayer):
    """mmpretrain's ``TransformerEncoderLayer`` (same arguments and keys, ``ffn_type`` included:
    ``'swiglu_fused'`` is DINOv3 S+/16's SwiGLU FFN) with :class:`RopeAttention`.

    Shapes: ``forward(x, rope)`` with ``x`` (B, T, D), ``rope`` as :class:`RopeAttention`
    -> (B, T, D).
    """

    def __init__(self, embed_dims, num_heads, feedforward_channels, layer_scale_init_value=0.,
                 drop_rate=0., attn_drop_rate=0., drop_path_rate=0., qkv_bias=True, **kwargs):
        super().__init__(embed_dims, num_heads, feedforward_channels, layer_scale_init_value,
                         drop_rate, attn_drop_rate, drop_path_rate, qkv_bias=qkv_bias, **kwargs)
        self.attn = RopeAttention(
            embed_dims=embed_dims, num_heads=num_heads, attn_drop=attn_drop_rate,
            proj_drop=drop_rate, dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate),
            qkv_bias=qkv_bias, layer_scale_init_value=layer_scale_init_value)

    def forward(self, x, rope=None):
        x = x + self.attn(self.ln1(x), rope)
        return self.ffn(self.ln2(x), identity=x)
