"""What a user's script needs from cotap_mm: a backbone with its weights, and its patch features
of images, through the package's one loader (:mod:`cotap_mm.models.utils.loading`).

    from cotap_mm.apis import init_backbone, extract_features
    backbone = init_backbone('configs/cotap_vit-s16_coco.py', 'cotap_vit-s16.pth')
    feats = extract_features(backbone, ['a.jpg', 'b.jpg'], size=448)   # (2, 2D, 28, 28)
"""
from typing import Sequence, Union

import numpy as np
import torch

from .models.utils.loading import get_normalization, load_checkpoint_backbone, load_config
from .utils.images import load_squashed, to_normalized_tensor

__all__ = ['init_backbone', 'extract_features']


def init_backbone(config, checkpoint: str, device: str = 'cpu', prefix: str = 'backbone.',
                  out_type: str = 'featmap', cfg_options=None):
    """The backbone of ``config`` with the weights of ``checkpoint``, loaded strictly, in eval
    mode on ``device``. A checkpoint with ``oaf.*`` keys gives the 2D-wide features of the ViT
    and its object-aware filter, one without them the plain D-wide ViT. The config's
    normalisation is kept on the module as ``backbone.normalization`` for
    :func:`extract_features`."""
    cfg = load_config(config, cfg_options)
    backbone = load_checkpoint_backbone(cfg, checkpoint, prefix, out_type=out_type)
    backbone.normalization = get_normalization(cfg)
    return backbone.to(device).eval()


@torch.no_grad()
def extract_features(backbone, images: Sequence[Union[str, np.ndarray]], size: int,
                     batch_size: int = 16) -> torch.Tensor:
    """Features of ``images`` (file paths, or uint8 RGB (H, W, 3) arrays), each squashed to
    ``size`` x ``size`` and normalised as the backbone's config says: (N, C, size/p, size/p) for
    a ``'featmap'`` backbone, (N, C) for ``'cls_token'``; float32 on the CPU."""
    from PIL import Image
    mean, std = backbone.normalization
    device = next(backbone.parameters()).device
    out = []
    for s in range(0, len(images), batch_size):
        batch = [load_squashed(im, size, mean, std)[1] if isinstance(im, str) else
                 to_normalized_tensor(Image.fromarray(im).resize((size, size), Image.BILINEAR),
                                      mean, std) for im in images[s:s + batch_size]]
        feats = backbone(torch.stack(batch).to(device))
        out.append((feats[-1] if isinstance(feats, (tuple, list)) else feats).float().cpu())
    return torch.cat(out)
