"""The CoTAP ViT backbone: mmpretrain's ``VisionTransformer`` in the DINO layout, emitting dense
patch feature maps, buildable from mmpretrain *and* mmsegmentation configs."""
import numpy as np
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import ModuleList
from mmpretrain.models.backbones.vision_transformer import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from cotap_mm.models.necks.object_aware_filter import ObjectAwareFilter
from cotap_mm.registry import MODELS, register_in_mmseg
from cotap_mm.utils.checks import check_choice, check_positive_int
from ..utils.token_map import tokens_to_map
from .rope_attention import RopePositionEmbedding, RopeTransformerEncoderLayer

__all__ = ['CoTAPVisionTransformer']

_VIT_S = dict(embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536)
_VIT_B = dict(embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072)
_VIT_L = dict(embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096)
# A test-sized model (not DeiT-Ti): two layers, 64 channels, so unit tests and the smoke demo
# run in seconds on CPU.
_TINY = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=256)


@register_in_mmseg
@MODELS.register_module()
class CoTAPVisionTransformer(VisionTransformer):
    """ViT backbone for CoTAP post-training and dense downstream evaluation.

    Same parameters (and state-dict keys) as :class:`mmpretrain.models.VisionTransformer`, with
    the DINO defaults CoTAP starts from: LayerNorm eps 1e-6, qkv bias, bicubic positional-embedding
    interpolation, no final norm, and ``out_type='featmap'`` so that mmsegmentation decode heads get
    a tuple of NCHW maps.

    Differences from the parent:

    - ``arch_zoo`` holds only the CoTAP sizes. Unlike mmpretrain, where ``'small'`` is a 768-d,
      8-layer model, here ``'s'``/``'small'``/``'deit-s'`` is DINO's ViT-S (384-d, 12 layers,
      6 heads), ``'b'``/``'base'``/``'deit-b'`` is ViT-B and ``'l'``/``'large'`` ViT-L;
      ``'tiny'`` is a 2-layer 64-d test model. A dict with ``embed_dims``, ``num_layers``,
      ``num_heads`` and ``feedforward_channels`` is accepted as well.
    - :meth:`train` keeps ``frozen_stages`` in eval mode (the parent freezes them only in
      ``__init__`` and a later ``model.train()`` re-enables their dropout / drop-path).
    - ``with_oaf=True`` (default) adds the object-aware filter (docs/method.md §2.1-2.2) after the last
      layer, as ``self.oaf`` (:class:`ObjectAwareFilter`). It reuses the last layer's ``ln1``,
      ``attn.qkv``, ``attn.proj``, ``ln2`` and ``ffn`` (passed at call time, so they are not
      duplicated); its own parameters are ``oaf.kernel`` (M, D, 3, 3), ``oaf.norm_in``,
      ``oaf.norm_out_patch`` and ``oaf.norm_out_cls``. An mmpretrain ``VisionTransformer``
      checkpoint (``final_norm=False``) therefore loads with only the ``oaf.*`` keys missing.
    - Freezing: ``frozen_stages=k`` freezes the embeddings and the first k layers as in the
      parent; ``frozen_stages=num_layers`` (mmpretrain's linear-probe idiom, e.g.
      ``frozen_stages=12``) freezes **everything, the OAF included** (the OAF runs with the last
      layer's weights, so freezing that layer and not the OAF norms would be half a freeze);
      larger values are clamped to ``num_layers``.
    - ``forward(x, return_attn=False, return_block_input=False)``: with either flag set, returns
      ``(outs, extras)`` where ``extras['attn']`` is the last layer's CLS->patch self-attention
      (B, heads, N) (softmax over all 1+N keys, then the CLS key dropped; recomputed from q/k
      since mmpretrain's attention uses SDPA) and ``extras['block_input']`` the last layer's
      input patch tokens as a map (B, D, H/p, W/p) (for :class:`PrototypeBank`).
    - ``num_register_tokens=R`` adds R register tokens (DINOv2 with registers, Darcet et al.
      2024): ``register_tokens`` (1, R, D), inserted after the CLS token once the position
      embedding is added (they have none), attended to by every layer, and dropped from every
      output: ``'raw'`` / ``'oaf_raw'`` stay (B, 1 + N, C), CLS first, and the object-aware
      filter sees the CLS and patch tokens only. ``layer_scale_init_value > 0`` (the parent's
      argument) gives DINOv2's LayerScale (``attn.gamma1``, ``ffn.gamma2``).
    - ``rope_base`` (DINOv3, Simeoni et al. 2025): no ``pos_embed``; every layer is a
      :class:`RopeTransformerEncoderLayer` (same keys; RoPE on the patch queries and keys, a
      masked k bias) and ``self.rope`` (:class:`RopePositionEmbedding`, no weights) gives the
      angles of the input's patch grid. DINOv3's storage tokens are ``num_register_tokens=4``;
      its LayerNorm eps 1e-5 is ``norm_cfg``, S+/16's SwiGLU FFN
      ``layer_cfgs=dict(ffn_type='swiglu_fused')`` (``feedforward_channels`` as DINOv3 counts
      it, 6 x 384, of which the FFN keeps 2/3). The OAF runs with the last layer's weights and no
      RoPE: its keys are position-free prototypes.

    Args:
        arch (str | dict): Model size, see above. Defaults to ``'small'`` (ViT-S).
        patch_size (int): Patch size, 16 or 8 for the DINO checkpoints. Defaults to 16.
        out_type (str): ``'featmap'`` (B, C, H/p, W/p), ``'cls_token'`` (B, C),
            ``'avg_featmap'`` (B, C), ``'oaf_raw'`` (B, 1 + H/p * W/p, C) (OAF tokens, CLS
            first; needs ``with_oaf``) or ``'raw'`` (B, 1 + H/p * W/p, D) (the plain ViT tokens,
            *without* the OAF). C = 2D for the last layer when ``with_oaf``, else D (outputs of
            earlier ``out_indices`` are always plain D-wide). Defaults to ``'featmap'``.
        final_norm (bool): Apply the last LayerNorm (``ln1``) after the last layer.
            Defaults to False.
        with_oaf (bool): Object-aware filter after the last layer. Defaults to True;
            False gives the plain ViT.
        num_prototypes (int): M, the number of OAF prototypes. Defaults to 64.
        num_register_tokens (int): R register tokens, see above. Defaults to 0.
        rope_base (float, optional): RoPE instead of the absolute position embedding, with
            this period base (DINOv3: 100). Defaults to None (absolute, as DINO).
        rope_rescale_coords (float, optional): DINOv3's training-time RoPE coordinate
            rescaling, see :class:`RopePositionEmbedding`. Defaults to None (off).
        **kwargs: Other arguments of :class:`mmpretrain.models.VisionTransformer`
            (``img_size``, ``out_indices``, ``frozen_stages``, ``drop_path_rate``,
            ``init_cfg``, ...).

    Inputs of any size work: ``pos_embed`` is interpolated to the input's patch grid (RoPE
    needs nothing). Sizes
    divisible by ``patch_size`` are used as is; others are zero-padded at the bottom/right up to
    the next multiple by mmcv's ``PatchEmbed`` (DINO's conv would crop them instead).

    Example:
        >>> import torch
        >>> vit = CoTAPVisionTransformer(arch='tiny', patch_size=16)
        >>> [o.shape for o in vit(torch.rand(2, 3, 64, 96))]
        [torch.Size([2, 128, 4, 6])]
        >>> (fmap, ), extras = vit(torch.rand(2, 3, 64, 96), return_attn=True)
        >>> extras['attn'].shape
        torch.Size([2, 2, 24])
    """
    OUT_TYPES = {'raw', 'cls_token', 'featmap', 'avg_featmap', 'oaf_raw'}
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], _TINY),
        **dict.fromkeys(['s', 'small', 'deit-s', 'deit-small', 'vit-s'], _VIT_S),
        **dict.fromkeys(['b', 'base', 'deit-b', 'deit-base', 'vit-b'], _VIT_B),
        **dict.fromkeys(['l', 'large', 'vit-l'], _VIT_L),
    }

    def __init__(self,
                 arch='small',
                 patch_size=16,
                 out_type='featmap',
                 final_norm=False,
                 qkv_bias=True,
                 norm_cfg=dict(type='LN', eps=1e-6),
                 interpolate_mode='bicubic',
                 with_oaf=True,
                 num_prototypes=64,
                 num_register_tokens=0,
                 rope_base=None,
                 rope_rescale_coords=None,
                 **kwargs):
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(f'CoTAPVisionTransformer: unknown arch={arch!r}; choose one of '
                             f'{sorted(self.arch_zoo)} or pass a dict')
        check_positive_int('CoTAPVisionTransformer', 'patch_size', patch_size)
        check_choice('CoTAPVisionTransformer', 'out_type', out_type, sorted(self.OUT_TYPES))
        if out_type == 'oaf_raw' and not with_oaf:
            raise ValueError("CoTAPVisionTransformer: out_type='oaf_raw' needs with_oaf=True")
        if isinstance(num_register_tokens, bool) or not isinstance(num_register_tokens, int) \
                or num_register_tokens < 0:
            raise ValueError(f'CoTAPVisionTransformer: num_register_tokens must be an int >= 0, '
                             f'got {num_register_tokens!r}')
        if num_register_tokens and not kwargs.get('with_cls_token', True):
            raise ValueError('CoTAPVisionTransformer: register tokens need with_cls_token=True')
        if with_oaf and not kwargs.get('with_cls_token', True):
            raise ValueError('CoTAPVisionTransformer: with_oaf=True needs with_cls_token=True '
                             '(the OAF has a CLS branch)')
        settings = self.arch_zoo[arch.lower()] if isinstance(arch, str) else arch
        if isinstance(settings, dict) and kwargs.get('frozen_stages', 0) > settings.get(
                'num_layers', float('inf')):
            # "frozen_stages=12" (the linear-probe idiom) on a smaller model: freeze everything
            kwargs['frozen_stages'] = settings['num_layers']
        self.with_oaf = with_oaf  # read by _freeze_stages, which the parent __init__ may call
        super().__init__(
            arch=arch,
            patch_size=patch_size,
            out_type=out_type,
            final_norm=final_norm,
            qkv_bias=qkv_bias,
            norm_cfg=norm_cfg,
            interpolate_mode=interpolate_mode,
            **kwargs)
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.rope = None
        if rope_base is not None:  # DINOv3: positions enter every attention layer as RoPE
            self.pos_embed = None
            heads = self.arch_settings['num_heads']
            self.rope = RopePositionEmbedding(self.embed_dims // heads, rope_base,
                                              rope_rescale_coords)
            layer_cfgs = kwargs.get('layer_cfgs', {})
            layer_cfgs = [layer_cfgs] * self.num_layers if isinstance(layer_cfgs, dict) \
                else layer_cfgs
            dpr = np.linspace(0, kwargs.get('drop_path_rate', 0.), self.num_layers)
            self.layers = ModuleList(RopeTransformerEncoderLayer(**dict(
                embed_dims=self.embed_dims, num_heads=heads,
                feedforward_channels=self.arch_settings['feedforward_channels'],
                layer_scale_init_value=kwargs.get('layer_scale_init_value', 0.),
                drop_rate=kwargs.get('drop_rate', 0.), drop_path_rate=dpr[i],
                qkv_bias=qkv_bias, norm_cfg=norm_cfg), **layer_cfgs[i])
                for i in range(self.num_layers))
        if num_register_tokens:
            # DINOv2's init; the values come from the converted checkpoint
            self.register_tokens = nn.Parameter(
                torch.randn(1, num_register_tokens, self.embed_dims) * 1e-6)
        if with_oaf:
            self.oaf = ObjectAwareFilter(
                embed_dims=self.embed_dims,
                num_heads=self.arch_settings['num_heads'],
                num_prototypes=num_prototypes,
                norm_cfg=norm_cfg)
            if out_type == 'avg_featmap':
                # the parent's ln2 normalises D channels; the averaged OAF output has 2D
                self.ln2 = build_norm_layer(norm_cfg, 2 * self.embed_dims)[1]
        if self.frozen_stages > 0:
            self._freeze_stages()  # again, now that the OAF and the registers exist

    def _freeze_stages(self):
        """Parent freezing, plus the OAF when all ``num_layers`` stages are frozen."""
        super()._freeze_stages()
        if getattr(self, 'num_register_tokens', 0):
            self.register_tokens.requires_grad = False
        if self.frozen_stages >= self.num_layers and getattr(self, 'oaf', None) is not None:
            self.oaf.eval()
            for param in self.oaf.parameters():
                param.requires_grad = False

    def _last_cls_attn(self, layer, x, rope=None):
        """CLS->patch self-attention of ``layer`` on its input ``x`` (B, 1+N, D) -> (B, heads, N).

        mmpretrain's attention runs SDPA and returns no weights, so the CLS query and all keys
        are recomputed (one extra qkv linear) with SDPA's default scale ``head_dims**-0.5``
        (with RoPE: the rotated keys, :meth:`RopeAttention.qkv_heads`).
        """
        attn_mod = layer.attn
        B, T, _ = x.shape
        if rope is not None:
            q, k, _ = attn_mod.qkv_heads(layer.ln1(x), rope)
            q = q[:, :, :1]  # the CLS query (never rotated)
        else:
            qkv = attn_mod.qkv(layer.ln1(x)).view(B, T, 3, attn_mod.num_heads,
                                                  attn_mod.head_dims)
            q = qkv[:, :1, 0].transpose(1, 2)  # (B, heads, 1, d_h): the CLS query only
            k = qkv[:, :, 1].transpose(1, 2)  # (B, heads, 1+N, d_h)
        attn = (q @ k.transpose(-2, -1) * attn_mod.head_dims**-0.5).softmax(dim=-1)
        return attn[:, :, 0, self.num_extra_tokens + self.num_register_tokens:]

    def forward(self, x, return_attn=False, return_block_input=False):
        """Forward.

        Args:
            x (Tensor): Images (B, 3, H, W).
            return_attn (bool): Also return the last layer's CLS->patch attention.
            return_block_input (bool): Also return the last layer's input patch tokens.

        Returns:
            tuple[Tensor] | tuple[tuple[Tensor], dict]: One output per ``out_indices`` (see
            ``out_type``); with either flag, ``(outs, extras)`` with ``extras['attn']``
            (B, heads, N) and/or ``extras['block_input']`` (B, D, H/p, W/p).
        """
        if return_attn and self.cls_token is None:
            raise ValueError('CoTAPVisionTransformer: return_attn=True needs with_cls_token=True')
        B = x.shape[0]
        x, hw = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(
                self.pos_embed,
                self.patch_resolution,
                hw,
                mode=self.interpolate_mode,
                num_extra_tokens=self.num_extra_tokens)
        if self.num_register_tokens:  # after the CLS token, without a position embedding
            x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        x = self.pre_norm(self.drop_after_pos(x))
        skip = self.num_extra_tokens + self.num_register_tokens  # tokens before the patches
        rope = () if self.rope is None else (self.rope(hw), )  # the layers' extra argument

        outs, extras = [], {}
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == last:
                if return_block_input:
                    extras['block_input'] = tokens_to_map(x[:, skip:], hw)
                if return_attn:
                    extras['attn'] = self._last_cls_attn(layer, x, *rope)
            x = layer(x, *rope)
            if i == last and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                y = torch.cat((x[:, :1], x[:, skip:]), dim=1) if self.num_register_tokens else x
                if i == last and self.with_oaf:
                    outs.append(self._format_oaf_output(y, hw))
                else:
                    outs.append(self._format_output(y, hw))
        if return_attn or return_block_input:
            return tuple(outs), extras
        return tuple(outs)

    def _format_output(self, x, hw):
        # plain (D-wide) outputs; 'oaf_raw' of a layer without the OAF is its raw tokens
        if self.out_type == 'oaf_raw':
            return x
        return super()._format_output(x, hw)

    def _format_oaf_output(self, x, hw):
        """Run the OAF on the last layer's output (B, 1+N, D) and format it (2D channels)."""
        if self.out_type == 'raw':  # documented: 'raw' is the plain ViT tokens
            return x
        layer = self.layers[-1]
        if self.out_type == 'cls_token':
            return self.oaf.forward_cls(x[:, :1], layer)[:, 0]
        if self.out_type == 'oaf_raw':
            return self.oaf(x, hw, layer=layer)
        patch = self.oaf.forward_patch(x[:, self.num_extra_tokens:], hw, layer)  # (B, N, 2D)
        if self.out_type == 'featmap':
            return tokens_to_map(patch, hw)
        return self.ln2(patch.mean(dim=1))  # 'avg_featmap'
    def train(self, mode=True):
        """Set train/eval mode, keeping the first ``frozen_stages`` stages frozen and in eval."""
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self
