"""A ``CoTAPVisionTransformer`` trunk for Hugging Face transformers: the ``config.json`` and the
state dict of ``ViTModel`` (DINO-era trunks), ``Dinov2Model`` / ``Dinov2WithRegistersModel``
(LayerScale, registers) or ``DINOv3ViTModel`` (RoPE), in the key names of transformers 4.x,
which 5.x still loads and writes (docs/converters.md, "export.py --to hf").

The key tables are (Hugging Face name, ours), read backwards; ``qkv`` and SwiGLU's ``w12`` are
first split into the pieces ``layers.i.attn.{q,k,v}.*`` and ``layers.i.ffn.{w1,w2}.*``.
Hugging Face models always end in a LayerNorm: a backbone without a final norm gets one with
unit weight and zero bias, so ``hidden_states[-1]`` (``output_hidden_states=True``) holds our
``out_type='raw'`` tokens (with the registers) and ``last_hidden_state`` those tokens normalised.
transformers is imported only when :func:`to_hf` runs.
"""
from typing import Dict, Tuple

import torch

from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from . import dinov3
from .backbone import BACKBONE_PREFIX, rename, unstack

__all__ = ['VIT_KEYS', 'DINOV2_KEYS', 'to_hf']

_QKV = tuple((f'{{layer}}.attention.attention.{hf}.{{w}}', f'layers.{{i}}.attn.{p}.{{w}}')
             for hf, p in (('query', 'q'), ('key', 'k'), ('value', 'v')))


def _table(pairs):
    return tuple((hf.replace('{layer}', 'encoder.layer.{i}'), ours) for hf, ours in pairs)


VIT_KEYS = _table(_QKV + (
    ('embeddings.cls_token', 'cls_token'),
    ('embeddings.position_embeddings', 'pos_embed'),
    ('embeddings.patch_embeddings.projection.{w}', 'patch_embed.projection.{w}'),
    ('{layer}.layernorm_before.{w}', 'layers.{i}.ln1.{w}'),
    ('{layer}.attention.output.dense.{w}', 'layers.{i}.attn.proj.{w}'),
    ('{layer}.layernorm_after.{w}', 'layers.{i}.ln2.{w}'),
    ('{layer}.intermediate.dense.{w}', 'layers.{i}.ffn.layers.0.0.{w}'),
    ('{layer}.output.dense.{w}', 'layers.{i}.ffn.layers.1.{w}'),
    ('layernorm.{w}', 'ln1.{w}')))
DINOV2_KEYS = _table(_QKV + (
    ('embeddings.cls_token', 'cls_token'),
    ('embeddings.position_embeddings', 'pos_embed'),
    ('embeddings.register_tokens', 'register_tokens'),
    ('embeddings.patch_embeddings.projection.{w}', 'patch_embed.projection.{w}'),
    ('{layer}.norm1.{w}', 'layers.{i}.ln1.{w}'),
    ('{layer}.attention.output.dense.{w}', 'layers.{i}.attn.proj.{w}'),
    ('{layer}.layer_scale1.lambda1', 'layers.{i}.attn.gamma1.weight'),
    ('{layer}.norm2.{w}', 'layers.{i}.ln2.{w}'),
    ('{layer}.mlp.fc1.{w}', 'layers.{i}.ffn.layers.0.0.{w}'),
    ('{layer}.mlp.fc2.{w}', 'layers.{i}.ffn.layers.1.{w}'),
    ('{layer}.layer_scale2.lambda1', 'layers.{i}.ffn.gamma2.weight'),
    ('layernorm.{w}', 'ln1.{w}')))


def to_hf(state_dict: Dict, meta: Dict, path: str = 'checkpoint') -> Tuple[str, Dict, list]:
    """A backbone checkpoint (``state_dict`` with or without ``backbone.``, its ``meta`` as
    :mod:`.backbone` writes it) in Hugging Face's layout.

    Returns:
        tuple: the ``config.json`` text, the state dict (contiguous tensors) and the ``oaf.*``
        keys left out (the object-aware filter has no Hugging Face counterpart).
    """
    try:  # only here: the package does not need transformers
        from transformers import CONFIG_MAPPING
    except ImportError as e:
        raise CheckpointConversionError(
            'the Hugging Face export needs the transformers package (pip install transformers; '
            'requirements/tests.txt pins the tested version)') from e

    state = {k[len(BACKBONE_PREFIX):] if k.startswith(BACKBONE_PREFIX) else k: v.detach()
             for k, v in state_dict.items()}
    arch, cfg = meta['arch'], meta['backbone_cfg']
    D, bias = arch['embed_dims'], cfg.get('qkv_bias', True)
    config = dict(hidden_size=D, num_hidden_layers=arch['num_layers'],
                  num_attention_heads=arch['num_heads'], patch_size=meta['patch_size'],
                  layer_norm_eps=cfg.get('norm_cfg', {}).get('eps', 1e-6), hidden_act='gelu')
    if 'cls_token' not in state:
        raise CheckpointConversionError(f'{path}: no cls_token: not a ViT backbone')
    if 'ln1.weight' not in state:  # the final norm Hugging Face has, as an identity
        state.update({'ln1.weight': torch.ones(D), 'ln1.bias': torch.zeros(D)})
    # fused tensor -> its pieces (None: left out)
    pieces = {f'layers.{{i}}.attn.qkv.{w}': [f'layers.{{i}}.attn.{p}.{w}' for p in 'qkv']
              for w in ('weight', 'bias')}
    if cfg.get('rope_base') is not None:
        swiglu = 'layers.0.ffn.w12.weight' in state
        model_type, name, extra = 'dinov3_vit', 'DINOv3ViTModel', dict(
            mask_token=torch.zeros(1, 1, D))
        keys = (('norm.{w}', 'ln1.{w}'), ) + dinov3.LAYOUTS['Hugging Face'][2][swiglu] + \
            dinov3.LAYOUTS['Hugging Face'][1]
        pieces['layers.{i}.attn.qkv.bias'][1] = None  # the masked k bias: key_bias=False
        pieces.update({f'layers.{{i}}.ffn.w12.{w}': [f'layers.{{i}}.ffn.{p}.{w}'
                                                     for p in ('w1', 'w2')]
                       for w in ('weight', 'bias')})
        hidden = (state['layers.0.ffn.w12.weight'].shape[0] // 2 if swiglu else
                  arch['feedforward_channels'])
        config.update(intermediate_size=int(hidden), use_gated_mlp=swiglu,
                      hidden_act='silu' if swiglu else 'gelu', rope_theta=cfg['rope_base'],
                      num_register_tokens=cfg.get('num_register_tokens', 0), query_bias=bias,
                      key_bias=False, value_bias=bias, layerscale_value=1.0,
                      pos_embed_rescale=cfg.get('rope_rescale_coords'))
    elif 'layers.0.attn.gamma1.weight' in state or 'register_tokens' in state:
        registers = cfg.get('num_register_tokens', 0)
        model_type, name = (('dinov2_with_registers', 'Dinov2WithRegistersModel') if registers
                            else ('dinov2', 'Dinov2Model'))
        extra, keys = dict(mask_token=torch.zeros(1, D)), DINOV2_KEYS
        for i in range(arch['num_layers']):  # no LayerScale: a unit one
            state.setdefault(f'layers.{i}.attn.gamma1.weight', torch.ones(D))
            state.setdefault(f'layers.{i}.ffn.gamma2.weight', torch.ones(D))
        if arch['feedforward_channels'] % D:
            raise CheckpointConversionError(
                f'{path}: {name} needs an FFN width that is a multiple of {D} (its integer '
                f'mlp_ratio); this backbone has {arch["feedforward_channels"]}')
        config.update(mlp_ratio=arch['feedforward_channels'] // D, image_size=cfg['img_size'],
                      qkv_bias=bias, layerscale_value=1.0,
                      **(dict(num_register_tokens=registers) if registers else {}))
    else:
        model_type, name, extra, keys = 'vit', 'ViTModel', {}, VIT_KEYS
        config.update(intermediate_size=arch['feedforward_channels'], image_size=cfg['img_size'],
                      qkv_bias=bias)
    for fused, parts in pieces.items():
        state = unstack(state, fused, parts)
    out, dropped, unmatched = rename(state, keys, [(r'^oaf\.', 'oaf')], reverse=True)
    if unmatched:
        raise CheckpointConversionError(
            f'{path}: {len(unmatched)} key(s) have no Hugging Face {name} counterpart: '
            f'{unmatched[:10]}; expected a CoTAPVisionTransformer backbone')
    out.update({'embeddings.' + k: v for k, v in extra.items()})
    hf_config = CONFIG_MAPPING[model_type](architectures=[name], **config)
    return (hf_config.to_json_string(), {k: v.contiguous() for k, v in out.items()},
            dropped.get('oaf', []))
