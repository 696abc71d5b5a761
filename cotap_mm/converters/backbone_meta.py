"""What a converted backbone checkpoint is: the shapes it must fit, its ``meta`` and the
``backbone.*`` state dict, shared by both converters (released layouts and our own checkpoints).

Output format (what ``init_cfg=dict(type='CoTAPPretrained', checkpoint=DST, prefix='backbone.')``
consumes)::

    {'meta': {... source, arch, dropped keys, backbone_cfg ...},
     'state_dict': {'backbone.<key>': tensor}}

where ``<key>`` are the keys of ``CoTAPVisionTransformer`` (= mmpretrain ``VisionTransformer``
names for the ViT part, ``final_norm=False``), plus ``oaf.kernel``, ``oaf.norm_in.*``,
``oaf.norm_out_patch.*`` and ``oaf.norm_out_cls.*`` when the source has an object-aware filter.
"""
from collections import OrderedDict

import torch

from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.utils.checkpoint_loading import FIRST, CheckpointConversionError, first_keys

__all__ = ['BACKBONE_PREFIX', 'infer_heads', 'resolve_arch', 'build_reference',
           'check_against_model', 'backbone_checkpoint', 'format_summary']

BACKBONE_PREFIX = 'backbone.'


def _named_arch(arch: str) -> dict:
    setting = CoTAPVisionTransformer.arch_zoo.get(arch.lower())
    if setting is None:
        raise CheckpointConversionError(
            f'--arch {arch!r} is unknown; choose one of '
            f'{sorted(CoTAPVisionTransformer.arch_zoo)} or omit it to infer the arch')
    return setting


def infer_heads(embed_dims, num_layers, ffn, arch=None, num_heads=None):
    if num_heads is not None:
        return int(num_heads), 'given (--num-heads)'
    if isinstance(arch, dict) and 'num_heads' in arch:
        return int(arch['num_heads']), 'given (--arch)'
    if isinstance(arch, str):
        return _named_arch(arch)['num_heads'], f'given (--arch {arch})'
    matches = [name for name, setting in CoTAPVisionTransformer.arch_zoo.items()
               if (setting['embed_dims'], setting['num_layers'],
                   setting['feedforward_channels']) == (embed_dims, num_layers, ffn)]
    if matches:
        name = max(matches, key=len)  # the most descriptive alias ('small', not 's')
        return (CoTAPVisionTransformer.arch_zoo[name]['num_heads'],
                f'inferred (matches arch {name!r})')
    if embed_dims % 64 == 0:
        # DINO / timm / iBOT / Mugs ViTs all use 64-d heads (ViT-S 6, ViT-B 12, ViT-L 16)
        return embed_dims // 64, 'inferred (64-d heads, the DINO/timm convention)'
    raise CheckpointConversionError(
        f'cannot infer the number of heads of a {embed_dims}-d ViT from tensor shapes (they do '
        'not depend on it); pass --num-heads')


def resolve_arch(arch, inferred, num_heads):
    """Arch dict to build: the given ``--arch`` (name/dict) or the inferred shapes."""
    if arch is None:
        return dict(inferred, num_heads=num_heads)
    if isinstance(arch, str):
        return dict(_named_arch(arch))
    return dict(arch)


def _extra_cfg(layer_scale, num_register_tokens):
    """Backbone arguments of DINOv2's LayerScale (any value > 0: the weights replace it) and
    registers, only where present (older configs stay as they were)."""
    cfg = dict(layer_scale_init_value=1e-5) if layer_scale else {}
    if num_register_tokens:
        cfg['num_register_tokens'] = int(num_register_tokens)
    return cfg


def build_reference(arch_settings, patch_size, img_size, with_oaf, num_prototypes, final_norm,
                    layer_scale=False, num_register_tokens=0):
    """State-dict shapes of the CoTAPVisionTransformer the converted weights must fit."""
    kwargs = dict(arch=arch_settings, patch_size=patch_size, img_size=img_size,
                  with_oaf=with_oaf, final_norm=final_norm, out_type='raw',
                  **_extra_cfg(layer_scale, num_register_tokens))
    if with_oaf:
        kwargs['num_prototypes'] = num_prototypes
    try:
        # meta device: shapes only, no memory or init time for ViT-B/L
        with torch.device('meta'):
            model = CoTAPVisionTransformer(**kwargs)
    except Exception:  # noqa: BLE001  (some init op without a meta kernel: build on CPU)
        model = CoTAPVisionTransformer(**kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_against_model(state_dict, expected, path, what):
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), expected[k]) for k in expected
                  if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if not (missing or unexpected or mismatched):
        return
    lines = [f'{path}: the converted weights do not fit CoTAPVisionTransformer({what}):']
    if missing:
        lines.append(f'  missing keys: {first_keys(missing)}')
    if unexpected:
        lines.append(f'  unexpected keys: {first_keys(unexpected)}')
    if mismatched:
        shown = '; '.join(f'{k}: checkpoint {s} vs model {e}' for k, s, e in mismatched[:FIRST])
        lines.append(f'  shape mismatches ({len(mismatched)}): {shown}')
    raise CheckpointConversionError('\n'.join(lines))



def backbone_checkpoint(state, *, converter, source, arch, num_heads_source, patch_size,
                        img_size, with_oaf, num_prototypes, final_norm, dropped, outside,
                        layer_scale=False, num_register_tokens=0):
    """The converted checkpoint: ``meta`` (with the ``backbone_cfg`` that fits ``state``) and
    the ``backbone.*`` state dict (tensors copied, contiguous).

    Args:
        state (dict): ``CoTAPVisionTransformer`` keys (no prefix) -> tensors, already checked
            by :func:`check_against_model`.
        converter (str): The tool that made it. ``source`` (dict): where it came from.
        dropped (dict): reason -> keys dropped on purpose. ``outside`` (list): keys of the
            source outside the selected network.
    """
    backbone_cfg = dict(type='CoTAPVisionTransformer', arch=arch, patch_size=patch_size,
                        img_size=img_size, with_oaf=with_oaf, final_norm=final_norm,
                        **_extra_cfg(layer_scale, num_register_tokens))
    if with_oaf:
        backbone_cfg['num_prototypes'] = num_prototypes
    meta = dict(converter=converter, source=source, arch=arch,
                num_heads_source=num_heads_source, patch_size=patch_size, img_size=img_size,
                with_oaf=with_oaf, num_prototypes=num_prototypes, final_norm=final_norm,
                backbone_cfg=backbone_cfg,
                dropped={why: keys for why, keys in dropped.items() if keys},
                ignored_outside_prefix=dict(count=len(outside), first=list(outside)[:20]),
                num_converted=len(state))
    out = OrderedDict((BACKBONE_PREFIX + k, v.detach().clone().contiguous())
                      for k, v in state.items())
    return dict(meta=meta, state_dict=out)


def format_summary(ckpt, dst=None):
    """Human-readable summary of a converted checkpoint's ``meta``."""
    meta = ckpt['meta']
    src = meta['source']
    arch = meta['arch']
    lines = [
        f'source      : {src["file"]} ({src["format"]}, {src.get("which") or "single network"}'
        + (', default' if src.get('which_default') else '') + f'; prefix {src["prefix"]!r}'
        + (f', loaded with {src["loaded_with"]}' if src.get('loaded_with') else '') + ')',
        f'arch        : embed_dims={arch["embed_dims"]} num_layers={arch["num_layers"]} '
        f'num_heads={arch["num_heads"]} ({meta["num_heads_source"]}) '
        f'ffn={arch["feedforward_channels"]} patch_size={meta["patch_size"]} '
        f'img_size={meta["img_size"]}',
        'OAF         : ' + (f'yes ({meta["num_prototypes"]} prototypes)' if meta['with_oaf']
                             else 'no (oaf.* will be initialised fresh: allow_missing oaf.)'),
        'final norm  : ' + ('kept as ln1.*' if meta['final_norm'] else 'none'),
        f'converted   : {meta["num_converted"]} tensors -> backbone.*',
    ]
    for why, keys in meta['dropped'].items():
        lines.append(f'dropped     : {len(keys)} x {why}: {first_keys(keys, 4)}')
    ign = meta['ignored_outside_prefix']
    if ign['count']:
        lines.append(f'not selected: {ign["count"]} keys outside {src["prefix"]!r} (other '
                     f'network / heads / training state), e.g. {ign["first"][:4]}')
    if dst is not None:
        lines.append(f'written     : {dst}')
        lines.append(f"use with    : init_cfg=dict(type='CoTAPPretrained', checkpoint='{dst}', "
                     "prefix='backbone.')")
    return '\n'.join(lines)
