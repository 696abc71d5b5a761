"""The one table of ViT key names: the DINO/timm layout against ``CoTAPVisionTransformer``'s
(mmpretrain's), read in one direction by the converters (:mod:`.dino_layout`) and in the other
by the timm export (:mod:`.timm_export`)."""
import re
from typing import List, Tuple

__all__ = ['VIT_KEYS', 'key_rules']

# (DINO / timm name, CoTAPVisionTransformer name); {i} is a block index, {w} weight or bias
VIT_KEYS = (
    ('cls_token', 'cls_token'),
    ('pos_embed', 'pos_embed'),
    ('patch_embed.proj.{w}', 'patch_embed.projection.{w}'),
    ('blocks.{i}.norm1.{w}', 'layers.{i}.ln1.{w}'),
    ('blocks.{i}.norm2.{w}', 'layers.{i}.ln2.{w}'),
    ('blocks.{i}.attn.qkv.{w}', 'layers.{i}.attn.qkv.{w}'),
    ('blocks.{i}.attn.proj.{w}', 'layers.{i}.attn.proj.{w}'),
    ('blocks.{i}.mlp.fc1.{w}', 'layers.{i}.ffn.layers.0.0.{w}'),
    ('blocks.{i}.mlp.fc2.{w}', 'layers.{i}.ffn.layers.1.{w}'),
    ('blocks.{i}.ls1.gamma', 'layers.{i}.attn.gamma1.weight'),  # DINOv2's LayerScale
    ('blocks.{i}.ls2.gamma', 'layers.{i}.ffn.gamma2.weight'),
)
_FIELDS = {'{i}': r'(\d+)', '{w}': r'(weight|bias)'}


def _pattern(template: str) -> str:
    out = re.escape(template)
    for field, group in _FIELDS.items():
        out = out.replace(re.escape(field), group)
    return f'^{out}$'


def _replacement(template: str) -> str:
    n = 0

    def group(_):
        nonlocal n
        n += 1
        return f'\\{n}'
    return re.sub(r'\{[iw]\}', group, template)


def key_rules(pairs=VIT_KEYS, to_ours: bool = True) -> List[Tuple[str, str]]:
    """``(regex, replacement)`` rules from ``pairs``: DINO/timm -> ours (``to_ours``) or back.
    The fields stand in the same order on both sides."""
    return [(_pattern(src), _replacement(dst)) for src, dst in
            ((a, b) if to_ours else (b, a) for a, b in pairs)]
