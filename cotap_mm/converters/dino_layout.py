"""Convert released self-supervised ViT checkpoints (DINO, iBOT, Mugs, Leopart, timm, the official
CoTAP release), all of them in the DINO/timm key layout, into ``CoTAPVisionTransformer``
checkpoints (:mod:`.backbone_meta` describes the output).

Key rules, DINO layout -> mmpretrain ``VisionTransformer``::

    cls_token, pos_embed                      -> same
    patch_embed.proj.*                        -> patch_embed.projection.*
    blocks.i.norm1.* / norm2.*                -> layers.i.ln1.* / ln2.*
    blocks.i.attn.qkv.* / attn.proj.*         -> layers.i.attn.qkv.* / attn.proj.*
    blocks.i.mlp.fc1.* / mlp.fc2.*            -> layers.i.ffn.layers.0.0.* / ffn.layers.1.*
    blocks.i.ls1.gamma / ls2.gamma (DINOv2)   -> layers.i.attn.gamma1.weight / ffn.gamma2.weight
    register_tokens (DINOv2 torch.hub)        -> register_tokens
    reg_token + pos_embed without a CLS position (timm's DINOv2 with registers)
                                              -> register_tokens + pos_embed with a zero CLS
                                                 position (timm folded it into cls_token)
    mask_token (DINOv2)                       -> dropped (masked image modelling only)
    norm.* (final norm)                       -> dropped (CoTAP has none), or ln1.* on request
    official CoTAP: kernel                    -> oaf.kernel
    official CoTAP: blocks.{L-1}.norm_in / norm_out_patch / norm_out_cls -> oaf.<same>
    (the same norms of blocks 0..L-2 exist in the official model but are never used: dropped)
"""
import math
import os.path as osp
import re
from collections import OrderedDict

import torch

from cotap_mm.utils.checkpoint_layout import DEFAULT_WHICH, OAF_NORM_KEY, SRC_FORMATS, layout_hint
from cotap_mm.utils.checkpoint_loading import (CheckpointConversionError, first_keys,
                                               flat_state_dict, is_tensor_dict, load_source)
from .backbone_meta import (backbone_checkpoint, build_reference, check_against_model,
                            infer_heads, resolve_arch)
from .vit_keys import VIT_KEYS, key_rules

__all__ = ['convert_state_dict', 'convert_checkpoint']

# Prefixes under which each layout keeps the ViT (tried in order; the first one holding a
# `cls_token` wins). '' is a bare backbone state dict.
_DINO_ROOTS = ('', 'module.', 'backbone.', 'module.backbone.')
_ROOTS = {
    'dino': {'student': _DINO_ROOTS, 'teacher': _DINO_ROOTS},
    'ibot': {'student': _DINO_ROOTS, 'teacher': _DINO_ROOTS},
    'mugs': {'student': _DINO_ROOTS, 'teacher': _DINO_ROOTS},
    'timm': {None: ('', 'module.')},
    'dinov2': {None: ('', 'module.', 'backbone.')},
    # Lightning module with `self.model` (student) and `self.teacher`
    'leopart': {'student': ('model.', 'module.model.'), 'teacher': ('teacher.', 'module.teacher.')},
    # Lightning module with `self.net = DinoFeaturizer(...)` (whose ViT is `.model`) and
    # `self.net_teacher`; '' / 'model.' accept an already extracted ViT / DinoFeaturizer dict
    'cotap-official': {'student': ('net.model.', 'model.', ''),
                       'teacher': ('net_teacher.model.', )},
}

# Source keys (relative to the backbone root) that are dropped on purpose, with the reason.
_COMMON_DROPS = ((r'^head\.', 'projection / DINO head (not part of the backbone)'), )
_FORMAT_DROPS = {
    'dino': (),
    'ibot': ((r'^masked_embed$', 'iBOT mask token (used only for masked image modelling)'), ),
    'mugs': ((r'^relation_blocks\.', 'Mugs relation blocks (local-group supervision only)'), ),
    'leopart': ((r'^prototypes\.', 'Leopart clustering prototypes'), ),
    'timm': ((r'^fc_norm\.', 'timm classifier pooling norm'),
             (r'^pre_logits\.', 'timm pre-logits layer')),
    'cotap-official': ((r'^projection_heads\.', 'CoTAP projection heads (training only)'), ),
    'dinov2': ((r'^mask_token$', 'DINOv2 mask token (used only for masked image modelling)'),
               (r'^fc_norm\.', 'timm classifier pooling norm')),
}

_VIT_RULES = key_rules(VIT_KEYS + (('register_tokens', 'register_tokens'), ))
_FINAL_NORM = r'^norm\.(weight|bias)$'


def _select_network(obj, fmt, which, explicit, path):
    """Pick the flat state dict of the wanted network out of a checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointConversionError(
            f'{path}: expected a dict checkpoint, got a {type(obj).__name__}. {layout_hint(obj)}')
    if fmt in ('dino', 'ibot', 'mugs') and ('student' in obj or 'teacher' in obj):
        if which not in obj or not isinstance(obj[which], dict):
            have = [k for k in ('student', 'teacher') if isinstance(obj.get(k), dict)]
            raise CheckpointConversionError(
                f'{path}: --which {which} asked for, but this full checkpoint holds only '
                f'{have}; pass --which {have[0] if have else "teacher"}')
        return obj[which], which
    if fmt in ('dino', 'ibot', 'mugs', 'timm', 'dinov2'):
        single = fmt in ('timm', 'dinov2')
        if explicit and which is not None and not (not single and which == 'teacher'):
            kind = ('a single network' if single else
                    'a single backbone (the released teacher)')
            raise CheckpointConversionError(
                f'{path}: --which {which} asked for, but this {fmt} file holds {kind}, not '
                'student/teacher networks; drop --which (or use the *_full_checkpoint.pth / '
                'checkpoint.pth release, which has both)')
        sd = flat_state_dict(obj)
        where = ('state_dict' if sd is not obj and 'state_dict' in obj else
                 'model' if sd is not obj else '<top level>')
        return sd, where
    # Lightning checkpoints: student and teacher share one state dict, told apart by prefix
    return flat_state_dict(obj), 'state_dict' if 'state_dict' in obj else '<top level>'



def _from_timm_registers(sub, path):
    """timm's DINOv2 with registers (``reg_token``, ``no_embed_class``: the CLS position folded
    into ``cls_token``, ``pos_embed`` for the patches only) in the torch.hub layout, which adds
    the CLS position: ``register_tokens`` and ``pos_embed`` with a zero CLS position. Tokens are
    unchanged: the CLS token gets the same sum."""
    if 'reg_token' not in sub:
        return sub
    pos = sub['pos_embed']
    if math.isqrt(pos.shape[1]) ** 2 != pos.shape[1]:
        raise CheckpointConversionError(
            f'{path}: reg_token with pos_embed {tuple(pos.shape)}; expected timm\'s '
            'no_embed_class layout (a square grid of patch positions, no CLS position)')
    out = OrderedDict()
    for k, v in sub.items():
        if k == 'reg_token':
            out['register_tokens'] = v
        elif k == 'pos_embed':
            out[k] = torch.cat([v.new_zeros(1, 1, v.shape[-1]), v], dim=1)
        else:
            out[k] = v
    return out


def _infer_from_dino_layout(sub, path):
    """embed_dims, num_layers, ffn, patch_size and img_size from DINO-layout keys."""
    for key in ('cls_token', 'pos_embed', 'patch_embed.proj.weight'):
        if key not in sub:
            raise CheckpointConversionError(f'{path}: the backbone has no {key!r}')
    embed_dims = sub['cls_token'].shape[-1]
    w = sub['patch_embed.proj.weight']
    if w.dim() != 4 or w.shape[-1] != w.shape[-2]:
        raise CheckpointConversionError(
            f'{path}: patch_embed.proj.weight has shape {tuple(w.shape)}; expected a square '
            '(D, 3, p, p) convolution')
    patch_size = int(w.shape[-1])
    blocks = sorted({int(m.group(1)) for m in (re.match(r'^blocks\.(\d+)\.', k) for k in sub)
                     if m})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointConversionError(
            f'{path}: transformer blocks must be numbered 0..L-1, found indices {blocks[:20]}')
    fc1 = sub.get('blocks.0.mlp.fc1.weight')
    if fc1 is None:
        raise CheckpointConversionError(f'{path}: the backbone has no blocks.0.mlp.fc1.weight')
    num_tokens = sub['pos_embed'].shape[1] - 1  # minus the CLS position
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise CheckpointConversionError(
            f'{path}: pos_embed {tuple(sub["pos_embed"].shape)} is not 1 CLS + a square grid of '
            'patch positions')
    return dict(embed_dims=int(embed_dims), num_layers=len(blocks),
                feedforward_channels=int(fc1.shape[0])), patch_size, grid * patch_size


def convert_state_dict(state_dict,
                       src_format,
                       which=None,
                       arch=None,
                       num_heads=None,
                       keep_final_norm=False,
                       path='<state_dict>',
                       container=None):
    """Convert one network's flat state dict into ``backbone.*`` CoTAPVisionTransformer keys.

    Args:
        state_dict (dict[str, Tensor]): The (possibly prefixed) source state dict.
        src_format (str): One of :data:`SRC_FORMATS`.
        which (str, optional): ``'student'`` / ``'teacher'``: picks the prefix of Lightning
            checkpoints (Leopart, official CoTAP). Defaults to :data:`DEFAULT_WHICH`.
        arch (str | dict, optional): Target arch; by default inferred from the shapes.
        num_heads (int, optional): Number of heads when it cannot be inferred.
        keep_final_norm (bool): Keep the source's final ``norm.*`` as ``ln1.*`` (to load into a
            ``final_norm=True`` backbone). Defaults to False (dropped, as CoTAP does).
        path (str): Source name for messages.
        container (str, optional): Where in the file the state dict was found (for meta).

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    if src_format not in SRC_FORMATS:
        raise CheckpointConversionError(
            f'unknown --src-format {src_format!r}; choose one of {list(SRC_FORMATS)}')
    if which is None:
        which = DEFAULT_WHICH[src_format]
    if not is_tensor_dict(state_dict):
        bad = [k for k, v in (state_dict or {}).items() if not torch.is_tensor(v)] if isinstance(
            state_dict, dict) else []
        raise CheckpointConversionError(
            f'{path}: expected a dict of tensors for the {src_format} backbone, got '
            f'{type(state_dict).__name__}' + (f' with non-tensor entries {first_keys(bad)}' if bad
                                              else '') + f'. {layout_hint(state_dict)}')
    roots = _ROOTS[src_format].get(which if src_format not in ('timm', 'dinov2') else None)
    if roots is None:
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    root = next((r for r in roots if r + 'cls_token' in state_dict), None)
    if root is None:
        raise CheckpointConversionError(
            f'{path}: no {src_format} ViT backbone found for --which {which}: expected a '
            f'`cls_token` under one of the prefixes {list(roots)}. Keys that did not match: '
            f'{first_keys(state_dict)}. {layout_hint(state_dict)}')
    sub = OrderedDict((k[len(root):], v) for k, v in state_dict.items() if k.startswith(root))
    outside = [k for k in state_dict if not k.startswith(root)]
    if src_format in ('dinov2', 'timm'):
        sub = _from_timm_registers(sub, path)

    shapes, patch_size, img_size = _infer_from_dino_layout(sub, path)
    last = shapes['num_layers'] - 1
    is_official = src_format == 'cotap-official'
    drops = [(re.compile(p), why) for p, why in _COMMON_DROPS + _FORMAT_DROPS[src_format]]

    out, dropped, unmatched = OrderedDict(), OrderedDict(), []

    def drop(key, why):
        dropped.setdefault(why, []).append(key)

    for key, value in sub.items():
        new = None
        for pattern, repl in _VIT_RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new is None and re.match(_FINAL_NORM, key):
            if keep_final_norm:
                new = 'ln1.' + key.split('.', 1)[1]
            else:
                drop(key, 'final norm (CoTAP has no final norm; --keep-final-norm keeps it as '
                     'ln1.*)')
                continue
        if new is None and is_official:
            m = re.match(OAF_NORM_KEY, key)
            if key == 'kernel':
                new = 'oaf.kernel'
            elif m and int(m.group(1)) == last:
                new = f'oaf.{m.group(2)}.{m.group(3)}'
            elif m:
                drop(key, 'OAF norms of blocks 0..L-2 (instantiated but never used, docs/method.md §2.1)')
                continue
        if new is None:
            why = next((why for pattern, why in drops if pattern.match(key)), None)
            if why is not None:
                drop(key, why)
                continue
            unmatched.append(key)
            continue
        out[new] = value
    if unmatched:
        raise CheckpointConversionError(
            f'{path}: {len(unmatched)} key(s) of the {src_format} backbone (prefix {root!r}) '
            f'match no conversion rule: {first_keys(unmatched)}. {layout_hint(state_dict)} If the '
            'layout is right, the model has parts the converter does not know (SwiGLU MLPs, '
            'rotary embeddings, ...): CoTAPVisionTransformer cannot hold them.')
    with_oaf = 'oaf.kernel' in out
    if is_official and not with_oaf:
        raise CheckpointConversionError(
            f'{path}: --src-format cotap-official but the backbone has no `kernel` (the OAF '
            f'prototypes). {layout_hint(state_dict)}')
    num_prototypes = int(out['oaf.kernel'].shape[0]) if with_oaf else None
    extras = dict(layer_scale='layers.0.attn.gamma1.weight' in out,
                  num_register_tokens=int(out['register_tokens'].shape[1])
                  if 'register_tokens' in out else 0)

    heads, heads_how = infer_heads(shapes['embed_dims'], shapes['num_layers'],
                                    shapes['feedforward_channels'], arch, num_heads)
    arch_settings = resolve_arch(arch, shapes, heads)
    expected = build_reference(arch_settings, patch_size, img_size, with_oaf, num_prototypes,
                                keep_final_norm, **extras)
    check_against_model(
        out, expected, path,
        f'arch={arch_settings}, patch_size={patch_size}, with_oaf={with_oaf}' +
        (f'; the checkpoint looks like {shapes}, drop --arch to use it' if arch is not None
         else ''))

    source = dict(file=osp.abspath(path) if osp.exists(str(path)) else str(path),
                  format=src_format, which=which, container=container, prefix=root,
                  num_keys=len(state_dict))
    return backbone_checkpoint(
        out, converter='cotap_mm tools/model_converters/convert.py', source=source,
        arch=arch_settings, num_heads_source=heads_how, patch_size=patch_size,
        img_size=img_size, with_oaf=with_oaf, num_prototypes=num_prototypes,
        final_norm=keep_final_norm, dropped=dropped, outside=outside, **extras)


def convert_checkpoint(src,
                       src_format,
                       which=None,
                       arch=None,
                       num_heads=None,
                       keep_final_norm=False,
                       unsafe_pickle=False):
    """Load ``src`` and convert it (see :func:`convert_state_dict`).

    Args:
        src (str): Source checkpoint file.
        src_format (str): One of :data:`SRC_FORMATS`.
        which (str, optional): ``'student'`` or ``'teacher'``; None uses
            :data:`DEFAULT_WHICH`.
        arch, num_heads, keep_final_norm: see :func:`convert_state_dict`.
        unsafe_pickle (bool): See :func:`load_source`.

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    if src_format not in SRC_FORMATS:
        raise CheckpointConversionError(
            f'unknown --src-format {src_format!r}; choose one of {list(SRC_FORMATS)}')
    if which not in (None, 'student', 'teacher'):
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    explicit = which is not None
    if which is None:
        which = DEFAULT_WHICH[src_format]
    obj, how = load_source(src, unsafe_pickle=unsafe_pickle)
    sd, container = _select_network(obj, src_format, which, explicit, src)
    ckpt = convert_state_dict(sd, src_format, which=which, arch=arch, num_heads=num_heads,
                              keep_final_norm=keep_final_norm, path=src, container=container)
    ckpt['meta']['source']['loaded_with'] = how
    ckpt['meta']['source']['which_default'] = not explicit
    return ckpt
