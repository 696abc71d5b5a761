"""What every converter shares: key tables applied to a state dict, and the converted backbone
checkpoint (its shapes checked against ``CoTAPVisionTransformer``, its ``meta``).

Output format (what ``init_cfg=dict(type='CoTAPPretrained', checkpoint=DST, prefix='backbone.')``
consumes)::

    {'meta': {... source, arch, dropped keys, backbone_cfg ...},
     'state_dict': {'backbone.<key>': tensor}}

where ``<key>`` are the keys of ``CoTAPVisionTransformer`` (= mmpretrain ``VisionTransformer``
names for the ViT part, ``final_norm=False``), plus ``oaf.kernel``, ``oaf.norm_in.*``,
``oaf.norm_out_patch.*`` and ``oaf.norm_out_cls.*`` when the source has an object-aware filter.
"""
import math
import re
from collections import OrderedDict

import torch

from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.utils.checkpoint_loading import CheckpointConversionError, mismatch_lines

__all__ = ['BACKBONE_PREFIX', 'ROPE_CFG', 'rename', 'stack', 'unstack', 'backbone_checkpoint']

BACKBONE_PREFIX = 'backbone.'
# A ViT without absolute positions is a DINOv3 one: RoPE with base 100, LayerNorm eps 1e-5.
ROPE_CFG = dict(rope_base=100., norm_cfg=dict(type='LN', eps=1e-5))
_FIELDS = {'{i}': r'(?P<i>\d+)', '{w}': r'(?P<w>weight|bias)'}


def _rule(src, dst):
    pattern = re.escape(src)
    for field, group in _FIELDS.items():
        pattern = pattern.replace(re.escape(field), group)
    return re.compile(f'^{pattern}$'), dst.replace('{i}', r'\g<i>').replace('{w}', r'\g<w>')


def rename(state, keys, drops=(), reverse=False):
    """Apply a key table to ``state``.

    Args:
        keys (Sequence[tuple[str, str]]): ``(source name, our name)`` templates, tried in order;
            ``{i}`` stands for a block index, ``{w}`` for ``weight`` / ``bias``.
        drops (Sequence[tuple[str, str]]): ``(regex, reason)`` of keys dropped on purpose.
        reverse (bool): Rename our names to the source's.

    Returns:
        tuple: the renamed state, the dropped keys by reason, the keys nothing matched.
    """
    rules = [_rule(*(pair[::-1] if reverse else pair)) for pair in keys]
    out, dropped, unmatched = OrderedDict(), OrderedDict(), []
    for key, value in state.items():
        new = next((p.sub(r, key) for p, r in rules if p.match(key)), None)
        if new is not None:
            out[new] = value
            continue
        why = next((w for p, w in drops if re.match(p, key)), None)
        if why is None:
            unmatched.append(key)
        else:
            dropped.setdefault(why, []).append(key)
    return out, dropped, unmatched


def _blocks(state, prefix='layers'):
    """The block indices of the keys ``<prefix>.<i>.*`` of ``state``, sorted."""
    pattern = re.compile(rf'^{re.escape(prefix)}\.(\d+)\.')
    return sorted({int(m.group(1)) for m in map(pattern.match, state) if m})


def stack(state, pieces, fused):
    """``state`` with, in every block ``i``, the tensors ``pieces`` (key templates over
    ``{i}``) replaced by their concatenation (dim 0) under ``fused``; a piece missing from a
    block that has the others is zeros (e.g. the masked k bias). Blocks are ``layers.<i>``."""
    out = dict(state)
    for i in _blocks(state):
        names = [p.format(i=i) for p in pieces]
        ref = next((out[n] for n in names if n in out), None)
        if ref is not None:
            out[fused.format(i=i)] = torch.cat(
                [out.pop(n) if n in out else torch.zeros_like(ref) for n in names])
    return out


def unstack(state, fused, pieces):
    """The inverse of :func:`stack`: ``fused`` split into equal ``pieces`` (None: left out)."""
    out = dict(state)
    for i in _blocks(state):
        if fused.format(i=i) in out:
            for p, t in zip(pieces, out.pop(fused.format(i=i)).chunk(len(pieces))):
                if p is not None:
                    out[p.format(i=i)] = t
    return out


def _shapes(state):
    fc1 = state.get('layers.0.ffn.layers.0.0.weight')
    # SwiGLU: w12 stacks gate and value, each 2/3 of the width DINOv3 (and mmpretrain) counts
    ffn = fc1.shape[0] if fc1 is not None else state['layers.0.ffn.w12.weight'].shape[0] * 3 // 4
    return dict(embed_dims=int(state['cls_token'].shape[-1]), num_layers=_blocks(state)[-1] + 1,
                feedforward_channels=int(ffn))


def _arch(state, arch, num_heads, path):
    """The arch dict to build and how its number of heads was found: the given ``arch`` (name
    or dict), else the shapes of ``state`` with the heads of ``num_heads``, of a matching
    ``arch_zoo`` entry, or 64-d heads (the DINO/timm convention)."""
    zoo = CoTAPVisionTransformer.arch_zoo
    if isinstance(arch, dict):
        return dict(arch), 'given (--arch)'
    if arch is not None:
        if arch.lower() not in zoo:
            raise CheckpointConversionError(f'--arch {arch!r} is unknown; choose one of '
                                            f'{sorted(zoo)} or omit it to infer the arch')
        return dict(zoo[arch.lower()]), f'given (--arch {arch})'
    shapes = _shapes(state)
    if num_heads is not None:
        return dict(shapes, num_heads=int(num_heads)), 'given (--num-heads)'
    matches = [name for name, s in zoo.items() if {k: s[k] for k in shapes} == shapes]
    if matches:
        name = max(matches, key=len)  # the most descriptive alias ('small', not 's')
        return dict(shapes, num_heads=zoo[name]['num_heads']), f'inferred (matches arch {name!r})'
    if shapes['embed_dims'] % 64:
        raise CheckpointConversionError(
            f'{path}: cannot infer the number of heads of a {shapes["embed_dims"]}-d ViT from '
            'tensor shapes (they do not depend on it); pass --num-heads')
    # DINO / timm / iBOT / Mugs ViTs all use 64-d heads (ViT-S 6, ViT-B 12, ViT-L 16)
    return (dict(shapes, num_heads=shapes['embed_dims'] // 64),
            'inferred (64-d heads, the DINO/timm convention)')


def backbone_checkpoint(state, *, converter, source, dropped, outside, final_norm, path,
                        arch=None, num_heads=None):
    """The converted checkpoint: ``meta`` with the ``backbone_cfg`` read from the shapes of
    ``state`` (patch size, image size from the ``pos_embed`` grid, OAF prototypes, LayerScale,
    registers, qkv bias, SwiGLU; no ``pos_embed``: DINOv3's RoPE, :data:`ROPE_CFG`) and the
    ``backbone.*`` state dict, after checking every key and shape against a
    ``CoTAPVisionTransformer`` built from that config on the meta device.

    Args:
        state (dict): ``CoTAPVisionTransformer`` keys (no prefix) -> tensors.
        converter (str): The tool that made it. ``source`` (dict): where it came from.
        dropped (dict): reason -> keys dropped on purpose. ``outside`` (list): keys of the
            source outside the selected network.
        final_norm (bool): The backbone keeps a final norm (``ln1.*``).
        arch (str | dict, optional): Target arch; by default inferred from the shapes.
        num_heads (int, optional): Number of heads when it cannot be inferred.
    """
    swiglu = 'layers.0.ffn.w12.weight' in state
    for key in ('cls_token', 'patch_embed.projection.weight',
                'layers.0.ffn.' + ('w12' if swiglu else 'layers.0.0') + '.weight'):
        if key not in state:
            raise CheckpointConversionError(f'{path}: the backbone has no {key!r} (named as in '
                                            'CoTAPVisionTransformer)')
    arch_settings, heads_how = _arch(state, arch, num_heads, path)
    patch_size = int(state['patch_embed.projection.weight'].shape[-1])
    img_size = None
    if 'pos_embed' in state:
        grid = math.isqrt(state['pos_embed'].shape[1] - 1)
        if grid * grid != state['pos_embed'].shape[1] - 1:
            raise CheckpointConversionError(
                f'{path}: pos_embed {tuple(state["pos_embed"].shape)} is not 1 CLS + a square '
                'grid of patch positions')
        img_size = grid * patch_size
    with_oaf = 'oaf.kernel' in state
    num_prototypes = int(state['oaf.kernel'].shape[0]) if with_oaf else None
    cfg = dict(type='CoTAPVisionTransformer', arch=arch_settings, patch_size=patch_size,
               with_oaf=with_oaf, final_norm=final_norm)
    cfg.update(dict(img_size=img_size) if img_size else ROPE_CFG)
    if 'layers.0.attn.qkv.bias' not in state:
        cfg['qkv_bias'] = False
    if swiglu:
        cfg['layer_cfgs'] = dict(ffn_type='swiglu_fused')
    if 'layers.0.attn.gamma1.weight' in state:  # DINOv2's LayerScale: the weights replace it
        cfg['layer_scale_init_value'] = 1e-5
    if 'register_tokens' in state:
        cfg['num_register_tokens'] = int(state['register_tokens'].shape[1])
    if with_oaf:
        cfg['num_prototypes'] = num_prototypes
    kwargs = {k: v for k, v in cfg.items() if k != 'type'}
    try:  # on the meta device: shapes only, no memory or init time for ViT-B/L
        with torch.device('meta'):
            model = CoTAPVisionTransformer(**kwargs)
    except Exception:  # noqa: BLE001  (an init op without a meta kernel: build on CPU)
        model = CoTAPVisionTransformer(**kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    lines = mismatch_lines(
        [k for k in state if k not in expected], [k for k in expected if k not in state],
        [f'{k}: checkpoint {tuple(state[k].shape)} vs model {s}' for k, s in expected.items()
         if k in state and tuple(state[k].shape) != s])
    if lines:
        shapes = _shapes(state) if arch is not None else None
        raise CheckpointConversionError('\n'.join(
            [f'{path}: the converted weights do not fit CoTAPVisionTransformer(arch='
             f'{arch_settings}, patch_size={patch_size}, with_oaf={with_oaf}' +
             (f'; the checkpoint looks like {shapes}, drop --arch to use it' if shapes else '') +
             '):'] + lines))
    meta = dict(converter=converter, source=source, arch=arch_settings,
                num_heads_source=heads_how, patch_size=patch_size, img_size=img_size,
                with_oaf=with_oaf, num_prototypes=num_prototypes, final_norm=final_norm,
                backbone_cfg=cfg, dropped={why: keys for why, keys in dropped.items() if keys},
                ignored_outside_prefix=dict(count=len(outside), first=list(outside)[:20]),
                num_converted=len(state))
    out = OrderedDict((BACKBONE_PREFIX + k, v.detach().clone().contiguous())
                      for k, v in state.items())
    return dict(meta=meta, state_dict=out)

