"""A ``CoTAPVisionTransformer`` trunk in timm's ``VisionTransformer`` layout, or ``Eva`` for a
RoPE (DINOv3) trunk: the DINO / DINOv2 / DINOv3 key tables read backwards, with timm's names of
the registers and the final norm (docs/converters.md, "export.py").

The object-aware filter has no timm counterpart: its ``oaf.*`` tensors are left out and listed,
so the export holds the ViT trunk, whose tokens equal the backbone's ``out_type='raw'`` output
(keep the OAF by loading the cotap_mm checkpoint into ``CoTAPVisionTransformer``, e.g. as the
mmseg backbone)."""
from typing import Dict, Tuple

from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from . import dino, dinov2, dinov3
from .backbone import BACKBONE_PREFIX, rename, unstack

__all__ = ['KEYS', 'TIMM_NAMES', 'to_timm_state_dict', 'timm_model_kwargs', 'timm_model_name']

# (timm name, CoTAPVisionTransformer name); the first match wins
KEYS = (('reg_token', 'register_tokens'), dino.FINAL_NORM) + dinov2.KEYS
# (embed_dims, num_layers, num_heads, patch_size) -> timm's registered name at 224 px
TIMM_NAMES = {
    (384, 12, 6, 16): 'vit_small_patch16_224', (384, 12, 6, 8): 'vit_small_patch8_224',
    (768, 12, 12, 16): 'vit_base_patch16_224', (768, 12, 12, 8): 'vit_base_patch8_224',
    (1024, 24, 16, 16): 'vit_large_patch16_224',
}


def to_timm_state_dict(state_dict: Dict, path: str = 'checkpoint') -> Tuple[Dict, list]:
    """``CoTAPVisionTransformer`` keys (with or without ``backbone.``) -> timm keys.

    Returns:
        tuple: the timm state dict (tensors contiguous) and the ``oaf.*`` keys left out.
    """
    state = {k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k: v.detach()
             for k, v in state_dict.items()}
    keys = KEYS
    if 'pos_embed' not in state:  # DINOv3: timm's Eva, q / v biases (its k bias is a zero buffer)
        swiglu = 'layers.0.ffn.w12.weight' in state
        keys = (dino.FINAL_NORM, ) + dinov3.LAYOUTS['timm'][2][swiglu] + dinov3.LAYOUTS['timm'][1]
        state = unstack(state, 'layers.{i}.attn.qkv.bias',
                        ('layers.{i}.attn.q.bias', None, 'layers.{i}.attn.v.bias'))
        for w in ('weight', 'bias'):
            state = unstack(state, f'layers.{{i}}.ffn.w12.{w}',
                            (f'layers.{{i}}.ffn.w1.{w}', f'layers.{{i}}.ffn.w2.{w}'))
    out, dropped, unmatched = rename(state, keys, [(r'^oaf\.', 'oaf')], reverse=True)
    if unmatched:
        raise CheckpointConversionError(
            f'{path}: {len(unmatched)} key(s) have no timm counterpart: {unmatched[:10]}; '
            'expected a CoTAPVisionTransformer backbone (tools/model_converters/'
            'extract_backbone.py writes one)')
    if 'cls_token' not in out:
        raise CheckpointConversionError(f'{path}: no cls_token: not a ViT backbone')
    if 'reg_token' in out and 'pos_embed' in out:
        # timm's registers come with no_embed_class: the CLS position moves into cls_token
        out['cls_token'] = out['cls_token'] + out['pos_embed'][:, :1]
        out['pos_embed'] = out['pos_embed'][:, 1:]
    return {k: v.contiguous() for k, v in out.items()}, dropped.get('oaf', [])


def timm_model_name(meta: Dict) -> str:
    """timm's registered model of the backbone: the DINO-era architecture at 224 px
    (:data:`TIMM_NAMES`; '' if none), or the DINOv3 recipe (norms, RoPE) that
    ``timm.create_model(name, **timm_model_kwargs(meta))`` sizes."""
    arch, cfg = meta['arch'], meta['backbone_cfg']
    if cfg.get('rope_base') is not None:
        plus = '_plus' if cfg.get('layer_cfgs', {}).get('ffn_type') == 'swiglu_fused' else ''
        return f'vit_small{plus}_patch16_dinov3' + ('_qkvb' if cfg.get('qkv_bias', True) else '')
    return TIMM_NAMES.get((arch['embed_dims'], arch['num_layers'], arch['num_heads'],
                           meta['patch_size']), '')


def timm_model_kwargs(meta: Dict) -> Dict:
    """The ``timm.models.vision_transformer.VisionTransformer`` arguments of a backbone
    checkpoint's ``meta`` (as :mod:`.backbone` writes it): the trunk only (no head, CLS
    pooling), the final norm only when the backbone has one, any input size (``dynamic_img_size``:
    the position embedding is interpolated as ours is); DINOv2's LayerScale and registers
    (``no_embed_class``, as timm's DINOv2 with registers) where the backbone has them.
    A DINOv3 (RoPE) backbone: the sizes of ``timm.create_model(timm_model_name(meta), ...)``."""
    arch, cfg = meta['arch'], meta['backbone_cfg']
    if cfg.get('rope_base') is not None:
        hidden = arch['feedforward_channels']
        if cfg.get('layer_cfgs', {}).get('ffn_type') == 'swiglu_fused':  # as SwiGLUFFNFused
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        extra = dict(rope_rescale_coords=cfg['rope_rescale_coords']) \
            if cfg.get('rope_rescale_coords') else {}
        return dict(patch_size=int(meta['patch_size']), embed_dim=int(arch['embed_dims']),
                    depth=int(arch['num_layers']), num_heads=int(arch['num_heads']),
                    mlp_ratio=hidden / arch['embed_dims'], rope_temperature=cfg['rope_base'],
                    init_values=cfg.get('layer_scale_init_value') or None,
                    num_reg_tokens=int(cfg.get('num_register_tokens', 0)), num_classes=0,
                    global_pool='token', use_post_transformer_norm=bool(meta.get('final_norm')),
                    **extra)
    extra = {}
    if cfg.get('layer_scale_init_value'):
        extra['init_values'] = float(cfg['layer_scale_init_value'])
    if cfg.get('num_register_tokens'):
        extra.update(reg_tokens=int(cfg['num_register_tokens']), no_embed_class=True)
    return dict(img_size=int(cfg['img_size']), patch_size=int(meta['patch_size']),
                embed_dim=int(arch['embed_dims']), depth=int(arch['num_layers']),
                num_heads=int(arch['num_heads']),
                mlp_ratio=arch['feedforward_channels'] / arch['embed_dims'], qkv_bias=True,
                num_classes=0, global_pool='token', class_token=True,
                final_norm=bool(meta.get('final_norm')), dynamic_img_size=True, **extra)
