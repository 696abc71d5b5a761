"""DINO-era ViTs -> ``CoTAPVisionTransformer``: DINO, iBOT, Mugs, Leopart, timm's plain ViTs and
the official CoTAP release (with its object-aware filter), all in the DINO/timm key layout.

Key rules, DINO layout -> mmpretrain ``VisionTransformer``::

    cls_token, pos_embed                      -> same
    patch_embed.proj.*                        -> patch_embed.projection.*
    blocks.i.norm1.* / norm2.*                -> layers.i.ln1.* / ln2.*
    blocks.i.attn.qkv.* / attn.proj.*         -> layers.i.attn.qkv.* / attn.proj.*
    blocks.i.mlp.fc1.* / mlp.fc2.*            -> layers.i.ffn.layers.0.0.* / ffn.layers.1.*
    norm.* (final norm)                       -> dropped (CoTAP has none), or ln1.* on request
    official CoTAP: kernel                    -> oaf.kernel
    official CoTAP: blocks.{L-1}.norm_in / norm_out_patch / norm_out_cls -> oaf.<same>
    (the same norms of blocks 0..L-2 exist in the official model but are never used: dropped)
"""
import re

from cotap_mm.utils.checkpoint_layout import layout_hint
from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from .backbone import rename

__all__ = ['FORMATS', 'KEYS', 'convert']

FORMATS = ('dino', 'ibot', 'mugs', 'leopart', 'timm', 'cotap-official')

# (DINO / timm name, CoTAPVisionTransformer name); {i} is a block index, {w} weight or bias
KEYS = (
    ('cls_token', 'cls_token'),
    ('pos_embed', 'pos_embed'),
    ('patch_embed.proj.{w}', 'patch_embed.projection.{w}'),
    ('blocks.{i}.norm1.{w}', 'layers.{i}.ln1.{w}'),
    ('blocks.{i}.norm2.{w}', 'layers.{i}.ln2.{w}'),
    ('blocks.{i}.attn.qkv.{w}', 'layers.{i}.attn.qkv.{w}'),
    ('blocks.{i}.attn.proj.{w}', 'layers.{i}.attn.proj.{w}'),
    ('blocks.{i}.mlp.fc1.{w}', 'layers.{i}.ffn.layers.0.0.{w}'),
    ('blocks.{i}.mlp.fc2.{w}', 'layers.{i}.ffn.layers.1.{w}'),
)
FINAL_NORM = ('norm.{w}', 'ln1.{w}')  # kept on request (--keep-final-norm)
OAF_NORMS = ('norm_in', 'norm_out_patch', 'norm_out_cls')  # official: in every block

# Keys dropped on purpose: (regex, reason), per source.
HEAD = (r'^head\.', 'projection / DINO head (not part of the backbone)')
FINAL_NORM_DROP = (r'^norm\.(weight|bias)$',
                   'final norm (CoTAP has no final norm; --keep-final-norm keeps it as ln1.*)')
DROPS = {
    'dino': (),
    'ibot': ((r'^masked_embed$', 'iBOT mask token (used only for masked image modelling)'), ),
    'mugs': ((r'^relation_blocks\.', 'Mugs relation blocks (local-group supervision only)'), ),
    'leopart': ((r'^prototypes\.', 'Leopart clustering prototypes'), ),
    'timm': ((r'^fc_norm\.', 'timm classifier pooling norm'),
             (r'^pre_logits\.', 'timm pre-logits layer')),
    'cotap-official': ((r'^projection_heads\.', 'CoTAP projection heads (training only)'),
                       (r'^blocks\.\d+\.(norm_in|norm_out_patch|norm_out_cls)\.',
                        'OAF norms of blocks 0..L-2 (instantiated but never used, '
                        'docs/method.md §2.1)')),
}


def convert(state, src_format='dino', keep_final_norm=False, path='checkpoint'):
    """One network's keys (its prefix removed) renamed to ``CoTAPVisionTransformer``'s.

    Returns:
        tuple: the renamed state, the dropped keys by reason, the keys no rule matched.
    """
    keys = KEYS + ((FINAL_NORM, ) if keep_final_norm else ())
    if src_format == 'cotap-official':
        if 'kernel' not in state:
            raise CheckpointConversionError(
                f'{path}: --src-format cotap-official but the backbone has no `kernel` (the OAF '
                f'prototypes). {layout_hint(state)}')
        last = max((int(m.group(1)) for m in map(re.compile(r'^blocks\.(\d+)\.').match, state)
                    if m), default=0)
        keys += (('kernel', 'oaf.kernel'), ) + tuple(
            (f'blocks.{last}.{name}.{{w}}', f'oaf.{name}.{{w}}') for name in OAF_NORMS)
    return rename(state, keys, (HEAD, FINAL_NORM_DROP) + DROPS[src_format])
