"""DINOv3 ViTs (S/16, S+/16, B/16, L/16) -> ``CoTAPVisionTransformer`` with ``rope_base=100``,
from the official layout, timm's ``Eva`` or Hugging Face's ``DINOv3ViTModel`` (detected).

One key table per layout, source name -> ours; split tensors first go to the pieces
``layers.i.attn.{q,k,v}.*`` and ``layers.i.ffn.{w1,w2}.*``, which are then stacked into ``qkv``
and SwiGLU's ``w12`` (gate first). Every layout ends with the k third of ``qkv.bias`` zeroed
(the model masks it; timm and Hugging Face have no k bias). ::

    official              timm Eva               Hugging Face (4.x; 5.4+: model.layer.i)
    storage_tokens        reg_token              embeddings.register_tokens  -> register_tokens
    blocks.i.attn.qkv     attn.qkv + q/v_bias    layer.i.attention.{q,k,v}_proj -> attn.qkv
    blocks.i.ls1.gamma    blocks.i.gamma_1       layer.i.layer_scale1.lambda1 -> attn.gamma1
    blocks.i.mlp.w1/w2/w3 mlp.fc1_g/fc1_x/fc2    mlp.gate/up/down_proj       -> ffn.w12, ffn.w3
    blocks.i.mlp.fc1/fc2  mlp.fc1/fc2            mlp.up/down_proj            -> ffn.layers.*
"""
import torch

from cotap_mm.utils.checkpoint_layout import layout_hint
from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from . import dino
from .backbone import rename, stack

__all__ = ['LAYOUTS', 'convert']

_COMMON = (('cls_token', 'cls_token'),
           ('blocks.{i}.norm1.{w}', 'layers.{i}.ln1.{w}'),
           ('blocks.{i}.norm2.{w}', 'layers.{i}.ln2.{w}'),
           ('blocks.{i}.attn.qkv.{w}', 'layers.{i}.attn.qkv.{w}'),
           ('blocks.{i}.attn.proj.{w}', 'layers.{i}.attn.proj.{w}'),
           ('patch_embed.proj.{w}', 'patch_embed.projection.{w}'))
_MLP = (('blocks.{i}.mlp.fc1.{w}', 'layers.{i}.ffn.layers.0.0.{w}'),
        ('blocks.{i}.mlp.fc2.{w}', 'layers.{i}.ffn.layers.1.{w}'))
# layout -> (the key it is detected by, its table, the table of its SwiGLU FFN or plain MLP)
LAYOUTS = {
    'official': ('storage_tokens', _COMMON + (
        ('storage_tokens', 'register_tokens'),
        ('blocks.{i}.ls1.gamma', 'layers.{i}.attn.gamma1.weight'),
        ('blocks.{i}.ls2.gamma', 'layers.{i}.ffn.gamma2.weight')), {
            True: (('blocks.{i}.mlp.w1.{w}', 'layers.{i}.ffn.w1.{w}'),
                   ('blocks.{i}.mlp.w2.{w}', 'layers.{i}.ffn.w2.{w}'),
                   ('blocks.{i}.mlp.w3.{w}', 'layers.{i}.ffn.w3.{w}')),
            False: _MLP}),
    'timm': ('reg_token', _COMMON + (
        ('reg_token', 'register_tokens'),
        ('blocks.{i}.attn.q_bias', 'layers.{i}.attn.q.bias'),
        ('blocks.{i}.attn.v_bias', 'layers.{i}.attn.v.bias'),
        ('blocks.{i}.gamma_1', 'layers.{i}.attn.gamma1.weight'),
        ('blocks.{i}.gamma_2', 'layers.{i}.ffn.gamma2.weight')), {
            True: (('blocks.{i}.mlp.fc1_g.{w}', 'layers.{i}.ffn.w1.{w}'),
                   ('blocks.{i}.mlp.fc1_x.{w}', 'layers.{i}.ffn.w2.{w}'),
                   ('blocks.{i}.mlp.fc2.{w}', 'layers.{i}.ffn.w3.{w}')),
            False: _MLP}),
    'Hugging Face': ('embeddings.register_tokens', (
        ('embeddings.cls_token', 'cls_token'),
        ('embeddings.register_tokens', 'register_tokens'),
        ('embeddings.patch_embeddings.{w}', 'patch_embed.projection.{w}'),
        ('layer.{i}.norm1.{w}', 'layers.{i}.ln1.{w}'),
        ('layer.{i}.norm2.{w}', 'layers.{i}.ln2.{w}'),
        ('layer.{i}.attention.q_proj.{w}', 'layers.{i}.attn.q.{w}'),
        ('layer.{i}.attention.k_proj.{w}', 'layers.{i}.attn.k.{w}'),
        ('layer.{i}.attention.v_proj.{w}', 'layers.{i}.attn.v.{w}'),
        ('layer.{i}.attention.o_proj.{w}', 'layers.{i}.attn.proj.{w}'),
        ('layer.{i}.layer_scale1.lambda1', 'layers.{i}.attn.gamma1.weight'),
        ('layer.{i}.layer_scale2.lambda1', 'layers.{i}.ffn.gamma2.weight')), {
            True: (('layer.{i}.mlp.gate_proj.{w}', 'layers.{i}.ffn.w1.{w}'),
                   ('layer.{i}.mlp.up_proj.{w}', 'layers.{i}.ffn.w2.{w}'),
                   ('layer.{i}.mlp.down_proj.{w}', 'layers.{i}.ffn.w3.{w}')),
            False: (('layer.{i}.mlp.up_proj.{w}', 'layers.{i}.ffn.layers.0.0.{w}'),
                    ('layer.{i}.mlp.down_proj.{w}', 'layers.{i}.ffn.layers.1.{w}'))}),
}
SWIGLU_KEYS = ('.mlp.w1.weight', '.mlp.fc1_g.weight', '.mlp.gate_proj.weight')
DROPS = ((r'^(embeddings\.)?mask_token$', 'DINOv3 mask token (masked image modelling only)'),
         (r'^rope_embed\.periods$', 'RoPE periods (recomputed from base 100 in float32)'),
         (r'^blocks\.\d+\.attn\.qkv\.bias_mask$', 'k-bias mask (the model masks the k bias)'),
         (r'^(cls_norm|local_cls_norm)\.', 'untied final norms of the CLS and storage tokens'),
         (r'^fc_norm\.', 'timm classifier pooling norm'), dino.HEAD, dino.FINAL_NORM_DROP)


def convert(state, src_format='dinov3', keep_final_norm=False, path='checkpoint'):
    """One network's keys renamed to ``CoTAPVisionTransformer``'s (see :func:`.dino.convert`),
    its layout detected by the keys of :data:`LAYOUTS`."""
    state = {k[len('model.'):] if k.startswith('model.layer.') else k: v for k, v in state.items()}
    layout = next((name for name, (key, _, _) in LAYOUTS.items() if key in state), None)
    if layout is None:
        raise CheckpointConversionError(
            f'{path}: --src-format dinov3 but the backbone has none of the DINOv3 layouts\' '
            f'storage tokens ({", ".join(f"{n}: {k!r}" for n, (k, _, _) in LAYOUTS.items())}). '
            f'{layout_hint(state)}')
    periods = state.get('rope_embed.periods')
    if periods is not None:  # the release stores them (in bf16); RopePositionEmbedding's base
        n = periods.numel()
        if not torch.allclose(periods.float(), 100.**(torch.arange(n) / n), rtol=1e-2):
            raise CheckpointConversionError(
                f'{path}: rope_embed.periods {periods.tolist()[:4]}... are not the periods of '
                'base 100, which CoTAPVisionTransformer(rope_base=100) computes')
    _, keys, mlp = LAYOUTS[layout]
    swiglu = any(k.endswith(SWIGLU_KEYS) for k in state)
    keys = mlp[swiglu] + keys + ((dino.FINAL_NORM, ) if keep_final_norm else ())
    out, dropped, unmatched = rename(state, keys, DROPS)
    for w in ('weight', 'bias'):
        out = stack(out, [f'layers.{{i}}.attn.{p}.{w}' for p in 'qkv'],
                    f'layers.{{i}}.attn.qkv.{w}')
        out = stack(out, [f'layers.{{i}}.ffn.{p}.{w}' for p in ('w1', 'w2')],
                    f'layers.{{i}}.ffn.w12.{w}')
    for k in [k for k in out if k.endswith('attn.qkv.bias')]:  # the masked k bias
        out[k] = out[k].clone()
        out[k].view(3, -1)[1] = 0
    return out, dropped, unmatched
