"""The CoTAP ViT backbone: mmpretrain's ``VisionTransformer`` in the DINO layout, emitting dense
patch feature maps, buildable from mmpretrain *and* mmsegmentation configs."""
from mmpretrain.models.backbones.vision_transformer import VisionTransformer

from cotap_mm.registry import MODELS, register_in_mmseg

__all__ = ['CoTAPVisionTransformer']

_VIT_S = dict(embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536)
_VIT_B = dict(embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072)
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
      6 heads) and ``'b'``/``'base'``/``'deit-b'`` is ViT-B; ``'tiny'`` is a 2-layer 64-d test
      model. A dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
      ``feedforward_channels`` is accepted as well.
    - :meth:`train` keeps ``frozen_stages`` in eval mode (the parent freezes them only in
      ``__init__`` and a later ``model.train()`` re-enables their dropout / drop-path).

    Args:
        arch (str | dict): Model size, see above. Defaults to ``'small'`` (ViT-S).
        patch_size (int): Patch size, 16 or 8 for the DINO checkpoints. Defaults to 16.
        out_type (str): ``'featmap'`` (B, C, H/p, W/p), ``'raw'`` (B, 1 + H/p * W/p, C),
            ``'cls_token'`` (B, C) or ``'avg_featmap'`` (B, C). Defaults to ``'featmap'``.
        final_norm (bool): Apply the last LayerNorm (``ln1``) after the last layer.
            Defaults to False.
        with_oaf (bool): Object-aware filter on the patch features. Not implemented yet; only
            False is accepted.
        **kwargs: Other arguments of :class:`mmpretrain.models.VisionTransformer`
            (``img_size``, ``out_indices``, ``frozen_stages``, ``drop_path_rate``,
            ``init_cfg``, ...).

    Inputs of any size work: ``pos_embed`` is interpolated to the input's patch grid. Sizes
    divisible by ``patch_size`` are used as is; others are zero-padded at the bottom/right up to
    the next multiple by mmcv's ``PatchEmbed`` (DINO's conv would crop them instead).

    Example:
        >>> import torch
        >>> vit = CoTAPVisionTransformer(arch='tiny', patch_size=16)
        >>> [o.shape for o in vit(torch.rand(2, 3, 64, 96))]
        [torch.Size([2, 64, 4, 6])]
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], _TINY),
        **dict.fromkeys(['s', 'small', 'deit-s', 'deit-small', 'vit-s'], _VIT_S),
        **dict.fromkeys(['b', 'base', 'deit-b', 'deit-base', 'vit-b'], _VIT_B),
    }

    def __init__(self,
                 arch='small',
                 patch_size=16,
                 out_type='featmap',
                 final_norm=False,
                 qkv_bias=True,
                 norm_cfg=dict(type='LN', eps=1e-6),
                 interpolate_mode='bicubic',
                 with_oaf=False,
                 **kwargs):
        if with_oaf:
            raise NotImplementedError(
                'CoTAPVisionTransformer(with_oaf=True): the object-aware filter (OAF) is not '
                'implemented yet (planned in a later issue); use with_oaf=False')
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(f'CoTAPVisionTransformer: unknown arch={arch!r}; choose one of '
                             f'{sorted(self.arch_zoo)} or pass a dict')
        if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0:
            raise ValueError(f'CoTAPVisionTransformer: patch_size must be a positive int '
                             f'(16 or 8 for DINO weights), got {patch_size!r}')
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'CoTAPVisionTransformer: unknown out_type={out_type!r}; choose one '
                             f'of {sorted(self.OUT_TYPES)}')
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
        self.with_oaf = with_oaf

    def train(self, mode=True):
        """Set train/eval mode, keeping the first ``frozen_stages`` stages frozen and in eval."""
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self
