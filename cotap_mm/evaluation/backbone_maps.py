"""What ``tools/visualize.py`` draws, computed from one forward of a CoTAP backbone: the
object-aware filter's patch features and prototype attention, the last layer's CLS attention and
the foreground mask derived from it (docs/visualize.md)."""
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from cotap_mm.models.utils import attention_foreground_mask
from cotap_mm.models.utils.loading import backbone_cfg, build_backbone
from cotap_mm.utils.images import load_squashed

__all__ = ['cotap_backbone_cfg', 'build_raw_backbone', 'compute_maps', 'maps_of_images']


def cotap_backbone_cfg(cfg, who: str = 'visualize') -> dict:
    """The backbone dict of ``cfg`` (``model.backbone``, or ``model``), which must be a
    ``CoTAPVisionTransformer`` (a scope prefix such as ``'mmseg.'`` is allowed); ``who`` starts
    the message otherwise."""
    bcfg = backbone_cfg(cfg)
    kind = bcfg.get('type', '')
    name = kind.__name__ if isinstance(kind, type) else str(kind).split('.')[-1]
    if name != 'CoTAPVisionTransformer':
        raise ValueError(f'{who}: the config\'s model (type={cfg.model.get("type")!r}) is '
                         f'not a CoTAPVisionTransformer and has none as model.backbone (found '
                         f'{kind!r}); use a CoTAP pretraining or mmseg config')
    return bcfg


def build_raw_backbone(cfg):
    """Build the backbone for inspection: ``out_type='raw'`` on the last layer, no init_cfg.

    ``'raw'`` returns the last layer's tokens (the OAF's input); the OAF is then run here through
    :meth:`ObjectAwareFilter.forward_patch` / ``prototype_attention`` exactly as the backbone's
    ``'featmap'`` path does, so both the features and the attention come from one forward.
    """
    if not isinstance(cfg.get('model', None), dict):
        raise KeyError('visualize: the config has no `model`')
    if not cotap_backbone_cfg(cfg).get('with_oaf', True):
        raise ValueError('visualize: the backbone has with_oaf=False; the pictures need the '
                         'object-aware filter (its 2D-wide features and prototypes)')
    # drop a scope prefix such as 'mmseg.'
    return build_backbone(cfg, out_type='raw', overrides=dict(type='CoTAPVisionTransformer'))[0]


@torch.no_grad()
def compute_maps(backbone, x: torch.Tensor, fg_mass: float = 0.6) -> Dict[str, torch.Tensor]:
    """Patch-level maps of a batch.

    Args:
        backbone: a :class:`CoTAPVisionTransformer` from :func:`build_raw_backbone` (``'raw'``).
        x: normalised images (B, 3, S, S), S a multiple of the patch size.
        fg_mass: attention mass kept by the foreground mask.

    Returns:
        dict of CPU tensors: ``features`` (B, h, w, 2D) OAF patch features; ``prototype_attn``
        (B, heads, N, M) OAF patch-branch α; ``prototype_ids`` (B, h, w) argmax over M of α
        averaged over heads; ``cls_attn`` (B, heads, N) last-layer CLS->patch attention;
        ``fg_mask`` (B, h, w) {0, 1} from ``attention_foreground_mask`` of ``cls_attn``.
    """
    p = backbone.patch_size
    B, _, H, W = x.shape
    if H % p or W % p:
        raise ValueError(f'visualize: image size {(H, W)} is not a multiple of the patch size {p}')
    hw = (H // p, W // p)
    (tokens, ), extras = backbone(x, return_attn=True)  # (B, 1+N, D), last layer output
    patch = tokens[:, backbone.num_extra_tokens:]
    layer = backbone.layers[-1]
    feats = backbone.oaf.forward_patch(patch, hw, layer)  # (B, N, 2D), as out_type='featmap'
    alpha = backbone.oaf.prototype_attention(patch, hw, layer)  # (B, heads, N, M)
    ids = alpha.mean(dim=1).argmax(dim=-1)  # (B, N)
    mask = attention_foreground_mask(extras['attn'], hw, mass=fg_mass)  # (B, 1, h, w)
    return dict(features=feats.reshape(B, *hw, -1).float().cpu(),
                prototype_attn=alpha.float().cpu(),
                prototype_ids=ids.reshape(B, *hw).cpu(),
                cls_attn=extras['attn'].float().cpu(),
                fg_mask=mask[:, 0].float().cpu())


def maps_of_images(backbone, paths: Sequence[str], size: int, fg_mass: float = 0.6,
                   batch_size: int = 8, device='cpu') -> Tuple[List[np.ndarray], List[dict]]:
    """Every image of ``paths`` squashed to ``size`` x ``size`` (uint8 RGB) and its maps of
    :func:`compute_maps` as numpy arrays (without the full ``prototype_attn``); with a
    progress bar."""
    from mmengine.utils import ProgressBar
    images, maps = [], []
    bar = ProgressBar(len(paths))
    for start in range(0, len(paths), batch_size):
        batch = [load_squashed(path, size) for path in paths[start:start + batch_size]]
        x = torch.stack([t for _, t in batch]).to(device)
        out = compute_maps(backbone, x, fg_mass)
        for i, (rgb, _) in enumerate(batch):
            images.append(rgb)
            maps.append({k: v[i].numpy() for k, v in out.items() if k != 'prototype_attn'})
            bar.update()
    sys.stdout.write('\n')
    return images, maps
