"""Object-aware filter (OAF, docs/method.md §2.2): cross-attention of patch tokens to learnable 3x3 prototype
templates, run with the weights of a ViT ``TransformerEncoderLayer``."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vision_transformer import TransformerEncoderLayer

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_choice, check_positive, check_positive_int
from ..utils.token_map import tokens_to_map

__all__ = ['ObjectAwareFilter']


@MODELS.register_module()
class ObjectAwareFilter(BaseModule):
    """Object-aware filter of CoTAP (docs/method.md §2.1-2.2).

    A "13th layer" that reuses a transformer layer's weights (``ln1``, ``attn.qkv``,
    ``attn.proj``, ``ln2``, ``ffn``) but replaces self-attention by cross-attention to ``M``
    prototype templates of size 3x3 (``kernel``, shape (M, D, 3, 3)):

    - patch branch: for head h, position (y, x) and prototype m the logit is
      ``M**-0.5 * sum_{a,b in -1..1} <q_h(y+a, x+b), k_h(m, a+1, b+1)>`` (a 2-D cross-correlation,
      queries outside the grid are zero), softmax over the M prototypes, values are the prototypes'
      value templates averaged over the 9 positions; then ``proj``, residual and
      ``x + ffn(ln2(x))``; output ``norm_out_patch(concat[x_p, x_f])`` (2D channels);
    - CLS branch: the CLS query against keys/values averaged over the 9 positions, same
      ``proj``/residual/FFN, output ``norm_out_cls(concat[x_cls, x_cls_f])``.

    Keys/values are the layer's qkv projection of ``norm_in(kernel)`` (``norm_in`` normalises each
    template position over D). The forward uses ``kernel.detach()``: the main losses send no
    gradient to the prototypes, which are trained only by :class:`EntropyMaxLoss` and
    re-initialised by k-means (docs/method.md §2.4-2.6).

    Where the transformer-layer weights come from (exactly one of):

    - **borrowed** (inside :class:`CoTAPVisionTransformer`): pass ``layer=`` at call time, or at
      construction. A borrowed layer is kept in a plain attribute, *not* registered as a submodule,
      so its weights appear once in a state dict (under the backbone's ``layers.{L-1}``), are not
      moved by ``.to()`` of this module alone, and are not re-mapped by ``copy.deepcopy`` of this
      module alone. Prefer passing it at call time (as the backbone does) so that deep copies of a
      parent module (EMA teachers) stay consistent.
    - **standalone**: give ``num_heads`` and ``feedforward_channels``; the neck then owns a
      :class:`mmpretrain.models.backbones.vision_transformer.TransformerEncoderLayer` as
      ``self.layer`` and can follow any backbone, e.g. as an mmpretrain ``neck``.

    Args:
        embed_dims (int, optional): D. Taken from ``layer`` when it is given.
        num_heads (int, optional): Heads of the standalone layer (when borrowing, the layer's
            own). Defaults to None.
        feedforward_channels (int, optional): FFN width of the standalone layer; when given
            (with ``num_heads``) the standalone layer is built. Defaults to None.
        layer (TransformerEncoderLayer, optional): Layer to borrow. Defaults to None.
        num_prototypes (int): M. Defaults to 64. The templates are 3x3 (the paper's size).
        norm_cfg (dict): Config of the three OAF LayerNorms (and of the standalone layer).
            Defaults to ``dict(type='LN', eps=1e-6)`` (DINO's).
        layer_cfg (dict): Extra arguments of the standalone ``TransformerEncoderLayer``
            (``qkv_bias`` defaults to True). Defaults to ``dict()``.
        out_type (str): For token inputs: ``'tokens'`` returns (B, 1+N, 2D); ``'cls_token'``
            returns the filtered CLS token (B, 2D), e.g. for a stock contrastive head after the
            neck. Defaults to ``'tokens'``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.

    Shapes (``forward(x, hw=None, layer=None)``):

    - ``x`` (B, 1+N, D) tokens with the CLS token first -> (B, 1+N, 2D); ``hw = (H, W)`` with
      ``H*W = N`` (non-square allowed); when ``hw`` is None, N must be a perfect square.
    - ``x`` (B, D, H, W) patch map (no CLS token) -> (B, 2D, H, W); ``hw`` is not used.
    - ``x`` a tuple/list (mmpretrain neck convention): the last element is filtered as above and
      a 1-tuple is returned.

    Example:
        >>> oaf = ObjectAwareFilter(embed_dims=64, num_heads=2, feedforward_channels=256)
        >>> oaf(torch.rand(2, 1 + 3 * 5, 64), hw=(3, 5)).shape
        torch.Size([2, 16, 128])
    """

    def __init__(self,
                 embed_dims=None,
                 num_heads=None,
                 feedforward_channels=None,
                 layer=None,
                 num_prototypes=64,
                 norm_cfg=dict(type='LN', eps=1e-6),
                 layer_cfg=dict(),
                 out_type='tokens',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        check_choice('ObjectAwareFilter', 'out_type', out_type, ('tokens', 'cls_token'))
        check_positive('ObjectAwareFilter', 'num_prototypes', num_prototypes)
        if layer is not None:
            if not all(hasattr(layer, a) for a in ('ln1', 'attn', 'ln2', 'ffn')):
                raise TypeError(f'ObjectAwareFilter: layer must be an mmpretrain '
                                f'TransformerEncoderLayer (ln1, attn, ln2, ffn), got '
                                f'{type(layer).__name__}')
            if (embed_dims not in (None, layer.embed_dims) or feedforward_channels is not None
                    or num_heads not in (None, layer.attn.num_heads)):
                raise ValueError(
                    f'ObjectAwareFilter: layer= sets embed_dims={layer.embed_dims} and num_heads='
                    f'{layer.attn.num_heads}, got embed_dims={embed_dims}, num_heads={num_heads}, '
                    f'feedforward_channels={feedforward_channels}; leave them out when borrowing '
                    f'(feedforward_channels builds a standalone filter instead)')
            embed_dims, num_heads = layer.embed_dims, layer.attn.num_heads
        check_positive_int('ObjectAwareFilter', 'embed_dims', embed_dims)
        self.out_type = out_type
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_prototypes = num_prototypes
        # Not a submodule (plain __dict__ entry): the borrowed weights belong to the backbone.
        self.__dict__['_borrowed_layer'] = layer
        self.layer = None
        if layer is None and feedforward_channels is not None:
            if num_heads is None or embed_dims % num_heads:
                raise ValueError(f'ObjectAwareFilter: a standalone filter (feedforward_channels='
                                 f'{feedforward_channels}) needs num_heads dividing embed_dims='
                                 f'{embed_dims}, got num_heads={num_heads}')
            self.layer = TransformerEncoderLayer(
                embed_dims=embed_dims,
                num_heads=num_heads,
                feedforward_channels=feedforward_channels,
                **dict(dict(qkv_bias=True, norm_cfg=norm_cfg), **layer_cfg))

        self.kernel = nn.Parameter(torch.empty(num_prototypes, embed_dims, 3, 3))
        self.norm_in = build_norm_layer(norm_cfg, embed_dims)[1]
        self.norm_out_patch = build_norm_layer(norm_cfg, 2 * embed_dims)[1]
        self.norm_out_cls = build_norm_layer(norm_cfg, 2 * embed_dims)[1]
        self.reset_kernel()

    def reset_kernel(self):
        """Truncated normal init of the prototypes: std 1, cut at +-2 (docs/method.md §2.1)."""
        trunc_normal_(self.kernel, mean=0., std=1., a=-2., b=2.)

    @torch.no_grad()
    def load_prototypes(self, kernel):
        """Set the prototypes to ``kernel`` (M, D, 3, 3), e.g. the k-means centres of the bank
        (docs/method.md §2.4). The Parameter object, and so its optimiser state, is kept (as
        released); its storage is replaced rather than written in place, because the step's
        forward passes already saved the old kernel for backward (that step used it)."""
        if tuple(kernel.shape) != tuple(self.kernel.shape):
            raise ValueError(f'ObjectAwareFilter.load_prototypes: kernel shape '
                             f'{tuple(kernel.shape)} != prototypes {tuple(self.kernel.shape)}')
        self.kernel.data = kernel.detach().to(dtype=self.kernel.dtype, device=self.kernel.device,
                                              copy=True)
        return self.kernel

    @torch.no_grad()
    def copy_prototypes_from(self, other: 'ObjectAwareFilter'):
        """Copy ``other``'s prototypes into this filter in place: the EMA teacher's filter takes
        the student's k-means kernel at once (``PrototypeBank(teacher_sync=True)``, §2.4b)."""
        self.kernel.copy_(other.kernel)
        return self.kernel

    def init_weights(self):
        super().init_weights()
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            self.reset_kernel()

    def _get_layer(self, layer):
        """The layer to run with: the call's, else the standalone or the borrowed one."""
        for candidate in (layer, self.layer, self._borrowed_layer):
            if candidate is not None:
                return candidate
        raise ValueError('ObjectAwareFilter: no transformer layer to run with; pass layer= '
                         '(at construction or call time) or build a standalone filter with '
                         'num_heads and feedforward_channels')

    def _prototype_kv(self, layer):
        """Keys and values of the (detached, ``norm_in``-ed) templates.

        Returns:
            tuple: k (M, 3, 3, heads, d_h) and v (M, 3, 3, heads, d_h).
        """
        D, heads = self.embed_dims, layer.attn.num_heads
        # detach: the OAF forward must not train the prototypes (docs/method.md §2.2/2.6)
        kernel = self.kernel.detach().permute(0, 2, 3, 1)  # (M, 3, 3, D): LN over D per position
        kn = self.norm_in(kernel)
        w, b = layer.attn.qkv.weight, layer.attn.qkv.bias
        kv = F.linear(kn, w[D:], None if b is None else b[D:])  # (M, 3, 3, 2D)
        k, v = kv.view(*kv.shape[:3], 2, heads, D // heads).unbind(3)
        return k, v

    def _finish(self, layer, x, out):
        """``proj`` + residual + FFN of ``layer`` on the cross-attention output ``out``."""
        # gamma1 is the layer scale (Identity for DINO); FFN adds its own residual (identity=x)
        x = x + layer.attn.gamma1(layer.attn.proj(out))
        return layer.ffn(layer.ln2(x), identity=x)

    def _patch_attn(self, x_p, hw, layer, k):
        """Patch-branch attention over the prototypes, (B, heads, M, N), softmax over M."""
        B, N, D = x_p.shape
        heads = layer.attn.num_heads
        M = self.num_prototypes
        w, b = layer.attn.qkv.weight, layer.attn.qkv.bias
        q = F.linear(layer.ln1(x_p), w[:D], None if b is None else b[:D])  # (B, N, D)
        # channel c = h * d_h + j (head-major, as in qkv.reshape(..., heads, d_h)), so a grouped
        # conv with groups=heads correlates each head's query map with its own key templates.
        q_map = tokens_to_map(q, hw)
        # (M, 3, 3, heads, d_h) -> (heads * M, d_h, 3, 3): output channel h * M + m
        weight = k.permute(3, 0, 4, 1, 2).reshape(heads * M, D // heads, 3, 3)
        # conv2d is a cross-correlation (no flip); padding=1 zero-pads the queries outside the grid
        logits = F.conv2d(q_map, weight.to(q_map.dtype), padding=1, groups=heads)
        return (logits.view(B, heads, M, N) * M**-0.5).softmax(dim=2)  # softmax over prototypes

    def prototype_attention(self, x_p, hw, layer=None):
        """Attention of each patch to the prototypes in the patch branch (for inspection).

        The same α that :meth:`forward_patch` uses to mix the prototypes' values; e.g.
        ``attn.mean(1).argmax(-1)`` is each patch's dominant prototype (tools/visualize.py).

        Args:
            x_p (Tensor): Patch tokens (B, N, D), row-major over the (H, W) grid.
            hw (tuple[int, int]): Grid shape (H, W), ``H * W == N``.
            layer (TransformerEncoderLayer, optional): Layer whose weights are used.

        Returns:
            Tensor: α of shape (B, heads, N, M); sums to 1 over M.
        """
        layer = self._get_layer(layer)
        k, _ = self._prototype_kv(layer)
        return self._patch_attn(x_p, hw, layer, k).transpose(2, 3)

    def forward_patch(self, x_p, hw, layer=None):
        """Patch branch.

        Args:
            x_p (Tensor): Patch tokens (B, N, D), row-major over the (H, W) grid.
            hw (tuple[int, int]): Grid shape (H, W), ``H * W == N``.
            layer (TransformerEncoderLayer, optional): Layer whose weights are used.

        Returns:
            Tensor: (B, N, 2D), ``norm_out_patch(concat[x_p, x_f])``.
        """
        layer = self._get_layer(layer)
        B, N, D = x_p.shape
        k, v = self._prototype_kv(layer)
        attn = self._patch_attn(x_p, hw, layer, k)  # (B, heads, M, N)
        v_mean = v.mean(dim=(1, 2)).transpose(0, 1)  # (heads, M, d_h): 9-position mean
        out = torch.einsum('bhmn,hmd->bnhd', attn, v_mean.to(attn.dtype)).reshape(B, N, D)
        x_f = self._finish(layer, x_p, out)
        return self.norm_out_patch(torch.cat([x_p, x_f], dim=-1))

    def forward_cls(self, x_cls, layer=None):
        """CLS branch.

        Args:
            x_cls (Tensor): CLS tokens (B, 1, D).
            layer (TransformerEncoderLayer, optional): Layer whose weights are used.

        Returns:
            Tensor: (B, 1, 2D), ``norm_out_cls(concat[x_cls, x_cls_f])``.
        """
        layer = self._get_layer(layer)
        B, _, D = x_cls.shape
        heads = layer.attn.num_heads
        M = self.num_prototypes
        k, v = self._prototype_kv(layer)
        k_mean = k.mean(dim=(1, 2)).transpose(0, 1)  # (heads, M, d_h)
        v_mean = v.mean(dim=(1, 2)).transpose(0, 1)
        w, b = layer.attn.qkv.weight, layer.attn.qkv.bias
        q = F.linear(layer.ln1(x_cls), w[:D], None if b is None else b[:D])
        q = q.view(B, heads, D // heads)
        attn = (torch.einsum('bhd,hmd->bhm', q, k_mean.to(q.dtype)) * M**-0.5).softmax(dim=-1)
        out = torch.einsum('bhm,hmd->bhd', attn, v_mean.to(q.dtype)).reshape(B, 1, D)
        x_f = self._finish(layer, x_cls, out)
        return self.norm_out_cls(torch.cat([x_cls, x_f], dim=-1))

    def forward(self, x, hw=None, layer=None):
        """Filter tokens or a patch map; see the class docstring for the shapes."""
        if isinstance(x, (tuple, list)):  # mmpretrain's neck convention: filter the last one
            return (self.forward(x[-1], hw=hw, layer=layer), )
        if x.dim() == 4:
            if self.out_type == 'cls_token':
                raise ValueError("ObjectAwareFilter(out_type='cls_token') needs (B, 1+N, D) "
                                 'tokens with a CLS token, got a (B, D, H, W) map')
            out = self.forward_patch(x.flatten(2).transpose(1, 2), x.shape[-2:], layer)
            return tokens_to_map(out, x.shape[-2:])
        if hw is None:
            side = math.isqrt(x.shape[1] - 1)
            if side * side != x.shape[1] - 1:
                raise ValueError(f'ObjectAwareFilter: hw=None needs a square grid, but x has '
                                 f'{x.shape[1] - 1} patch tokens; pass hw=(H, W)')
            hw = (side, side)
        layer = self._get_layer(layer)
        cls_out = self.forward_cls(x[:, :1], layer)
        if self.out_type == 'cls_token':
            return cls_out[:, 0]
        return torch.cat([cls_out, self.forward_patch(x[:, 1:], hw, layer)], dim=1)
