"""Pure rendering helpers for feature / prototype / mask pictures (used by tools/visualize.py and
tools/analysis/compare_pca.py).

Everything here takes numpy arrays or torch tensors and returns ``uint8`` RGB arrays (H, W, 3);
only :func:`save_png` touches the file system.
"""
from .render import (colorize_labels, fit_pca, image_grid, label_palette, mask_overlay, overlay,
                     pca_to_rgb, save_png, upsample)
from .heatmap import save_matrix_heatmap
from .tiles import (backbone_pictures, label_tiles, output_stems, pca_tiles,
                    write_backbone_pictures)

__all__ = [
    'fit_pca', 'pca_to_rgb', 'label_palette', 'colorize_labels', 'overlay', 'mask_overlay',
    'upsample', 'image_grid', 'save_png', 'label_tiles', 'pca_tiles',
    'backbone_pictures', 'output_stems', 'write_backbone_pictures', 'save_matrix_heatmap'
]
