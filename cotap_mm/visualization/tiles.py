"""Tiles of the feature pictures: label maps in one palette, a PCA shared by several feature
maps, and the three pictures of one image of a CoTAP backbone (``tools/visualize.py``,
``tools/analysis/compare_pca.py``)."""
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from cotap_mm.utils.fileio import atomic_open
from .render import (colorize_labels, fit_pca, image_grid, label_palette, mask_overlay, overlay,
                     pca_to_rgb, save_png, upsample)

__all__ = ['label_tiles', 'pca_tiles', 'backbone_pictures', 'output_stems',
           'write_backbone_pictures']

COLUMNS = ('image', 'PCA', 'prototypes', 'foreground')  # of the contact sheet

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


def output_stems(paths: Sequence[str]) -> List[str]:
    """File stems, made unique with ``_2``, ``_3``... when two inputs share a name."""
    stems, seen = [], {}
    for path in paths:
        stem = osp.splitext(osp.basename(path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f'{stem}_{seen[stem]}')
    return stems


def write_backbone_pictures(out_dir: str, paths: Sequence[str], images: Sequence[np.ndarray],
                            maps: Sequence[Dict[str, np.ndarray]], pca: dict,
                            palette: np.ndarray, pca_interp: str = 'nearest',
                            alpha: float = 0.5, tile_size: int = 224, save_arrays: bool = False,
                            progress: Optional[Callable[[], None]] = None) -> List[str]:
    """Write ``<stem>_{pca,prototypes,foreground}.png`` per image (``<stem>_maps.npz`` too with
    ``save_arrays``) and the contact sheet ``summary.png`` (rows: images; columns:
    :data:`COLUMNS`) into ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written, rows = [], []
    for rgb, m, stem in zip(images, maps, output_stems(paths)):
        pics = backbone_pictures(rgb, m, pca, palette, pca_interp, alpha)
        for kind in ('pca', 'prototypes', 'foreground'):
            written.append(save_png(osp.join(out_dir, f'{stem}_{kind}.png'), pics[kind]))
        if save_arrays:
            path = osp.join(out_dir, f'{stem}_maps.npz')
            with atomic_open(path) as f:
                np.savez_compressed(f, pca_rgb=pca_to_rgb(m['features'], pca),
                                    prototype_ids=m['prototype_ids'].astype(np.int64),
                                    fg_mask=m['fg_mask'].astype(np.uint8),
                                    cls_attn=m['cls_attn'])
            written.append(path)
        rows.append([rgb, pics['pca_map'], pics['prototypes'], pics['foreground']])
        if progress is not None:
            progress()
    tile = min(tile_size, images[0].shape[0])
    written.append(save_png(osp.join(out_dir, 'summary.png'),
                            image_grid(rows, tile_size=(tile, tile), col_titles=COLUMNS)))
    return written
