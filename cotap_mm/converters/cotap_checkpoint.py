"""Extract the student or EMA-teacher backbone of a checkpoint of our own CoTAP pretraining
(:class:`~cotap_mm.models.algorithms.CoTAP`) as a ``backbone.*`` checkpoint
(:mod:`.backbone_meta` describes the output)."""
import math
import os.path as osp
import re
from collections import OrderedDict

from cotap_mm.utils.checkpoint_layout import NETWORK_PREFIXES, layout_hint
from cotap_mm.utils.checkpoint_loading import (CheckpointConversionError, first_keys,
                                               flat_state_dict, is_tensor_dict, load_source)
from .backbone_meta import backbone_checkpoint, build_reference, check_against_model, infer_heads

__all__ = ['extract_backbone']

# each network's backbone, also under DDP's `module.`
_OURS_ROOTS = {which: (prefix, 'module.' + prefix)
               for which, prefix in NETWORK_PREFIXES.items()}


def extract_backbone(src, which='student', num_heads=None, unsafe_pickle=False,
                     drop_final_norm=False):
    """Backbone of a cotap_mm CoTAP pretraining checkpoint as a ``backbone.*`` checkpoint.

    The CoTAP algorithm (``cotap_mm/models/algorithms/cotap.py``) keeps the student backbone
    under ``backbone.*`` and the EMA teacher (a ``CoTAPTeacherEMA`` over
    ``ModuleDict(backbone, patch_head, cls_head)``) under ``teacher.module.backbone.*``; heads,
    queues, the prototype bank and the teacher's ``steps`` are dropped.

    Args:
        src (str): Checkpoint saved by the Runner (``{'meta', 'state_dict', ...}``).
        which (str): ``'student'`` (default: what the official evaluation uses,
            docs/method.md §6.1) or
            ``'teacher'``.
        num_heads (int, optional): Recorded in meta when it cannot be inferred.
        unsafe_pickle (bool): See :func:`load_source`.
        drop_final_norm (bool): Drop the final LayerNorm (``ln1.*``) of a backbone trained with
            ``final_norm=True`` (e.g. the demo's DINO-like init), as CoTAP drops DINO's final
            norm (docs/method.md §2.1); it is listed under ``meta['dropped']``.

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    if which not in _OURS_ROOTS:
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    obj, how = load_source(src, unsafe_pickle=unsafe_pickle)
    sd = flat_state_dict(obj)
    if not is_tensor_dict(sd):
        raise CheckpointConversionError(
            f'{src}: expected an mmengine checkpoint with a `state_dict` of tensors. '
            f'{layout_hint(obj)}')
    roots = _OURS_ROOTS[which]
    root = next((r for r in roots if r + 'cls_token' in sd), None)
    if root is None:
        have = [w for w, rs in _OURS_ROOTS.items() if any(r + 'cls_token' in sd for r in rs)]
        extra = (f' This checkpoint has the {have} backbone(s); pass --which {have[0]}.'
                 if have else f' {layout_hint(obj)}')
        raise CheckpointConversionError(
            f'{src}: no CoTAP {which} backbone found (expected keys under one of {list(roots)}); '
            f'keys that did not match: {first_keys(sd)}.{extra}')
    sub = OrderedDict((k[len(root):], v) for k, v in sd.items() if k.startswith(root))
    dropped = {}
    if drop_final_norm:
        dropped['final norm (--drop-final-norm)'] = [k for k in sub if k.startswith('ln1.')]
        sub = OrderedDict((k, v) for k, v in sub.items() if not k.startswith('ln1.'))
    for key in ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
                'layers.0.ffn.layers.0.0.weight'):
        if key not in sub:
            raise CheckpointConversionError(f'{src}: the {which} backbone has no {key!r}')
    layers = sorted({int(m.group(1)) for m in (re.match(r'^layers\.(\d+)\.', k) for k in sub)
                     if m})
    shapes = dict(embed_dims=int(sub['cls_token'].shape[-1]), num_layers=len(layers),
                  feedforward_channels=int(sub['layers.0.ffn.layers.0.0.weight'].shape[0]))
    patch_size = int(sub['patch_embed.projection.weight'].shape[-1])
    grid = math.isqrt(sub['pos_embed'].shape[1] - 1)
    with_oaf = 'oaf.kernel' in sub
    num_prototypes = int(sub['oaf.kernel'].shape[0]) if with_oaf else None
    final_norm = 'ln1.weight' in sub
    extras = dict(layer_scale='layers.0.attn.gamma1.weight' in sub,
                  num_register_tokens=int(sub['register_tokens'].shape[1])
                  if 'register_tokens' in sub else 0)
    heads, heads_how = infer_heads(shapes['embed_dims'], shapes['num_layers'],
                                    shapes['feedforward_channels'], None, num_heads)
    arch = dict(shapes, num_heads=heads)
    expected = build_reference(arch, patch_size, grid * patch_size, with_oaf,
                                num_prototypes, final_norm, **extras)
    check_against_model(sub, expected, src, f'arch={arch}, with_oaf={with_oaf}')
    run_meta = obj.get('meta', {}) if isinstance(obj, dict) else {}
    run_meta = run_meta if isinstance(run_meta, dict) else {}
    source = dict(file=osp.abspath(src), format='cotap-mm', which=which, prefix=root,
                  loaded_with=how, num_keys=len(sd), epoch=run_meta.get('epoch'),
                  iter=run_meta.get('iter'))
    return backbone_checkpoint(
        sub, converter='cotap_mm tools/model_converters/extract_backbone.py', source=source,
        arch=arch, num_heads_source=heads_how, patch_size=patch_size,
        img_size=grid * patch_size, with_oaf=with_oaf, num_prototypes=num_prototypes,
        final_norm=final_norm, dropped=dropped,
        outside=[k for k in sd if not k.startswith(root)], **extras)
