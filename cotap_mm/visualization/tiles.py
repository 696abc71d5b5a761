"""Tiles of the feature pictures: label maps in one palette, a PCA shared by several feature
maps, and the three pictures of one image of a CoTAP backbone (``tools/visualize.py``,
``tools/analysis/compare_pca.py``)."""
from typing import Dict, List, Sequence

import numpy as np

from .render import (colorize_labels, fit_pca, label_palette, mask_overlay, overlay, pca_to_rgb,
                     upsample)

__all__ = ['label_tiles', 'pca_tiles', 'backbone_pictures']

IGNORE_INDEX = 255  # unlabelled pixels, drawn black


def label_tiles(label_maps: Sequence[np.ndarray]) -> List[np.ndarray]:
    """(S, S) int label maps -> (S, S, 3) uint8 in one shared palette; 255 is black."""
    top = max((int(m[m != IGNORE_INDEX].max()) for m in label_maps
               if (m != IGNORE_INDEX).any()), default=0)
    palette = label_palette(max(64, top + 1))
    return [colorize_labels(m, palette, ignore_index=IGNORE_INDEX) for m in label_maps]


def pca_tiles(feats: Sequence[np.ndarray], size: int) -> List[np.ndarray]:
    """One 3-component PCA fitted on the patches of all (h, w, C) maps -> (size, size, 3) uint8
    each, so that equal colours mean equal directions across the tiles."""
    pca = fit_pca(list(feats), num_components=3)
    return [upsample(pca_to_rgb(f, pca), (size, size)) for f in feats]


def backbone_pictures(rgb: np.ndarray, maps: Dict[str, np.ndarray], pca: dict,
                      palette: np.ndarray, pca_interp: str = 'nearest',
                      alpha: float = 0.5) -> Dict[str, np.ndarray]:
    """The pictures of one image (uint8 RGB) from its patch maps (``features`` (h, w, C),
    ``prototype_ids`` and ``fg_mask`` (h, w)): ``pca`` (S, 2S, image beside its PCA colours),
    ``prototypes`` and ``foreground`` overlays (S, S), and the bare ``pca_map`` (S, S)."""
    size = rgb.shape[:2]
    pca_map = upsample(pca_to_rgb(maps['features'], pca), size, pca_interp)
    protos = overlay(rgb, upsample(colorize_labels(maps['prototype_ids'], palette), size), alpha)
    fg = mask_overlay(rgb, upsample(maps['fg_mask'], size))
    return dict(pca=np.concatenate([rgb, pca_map], axis=1), pca_map=pca_map, prototypes=protos,
                foreground=fg)
