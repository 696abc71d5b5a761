"""Rendering of dense-feature pictures: PCA colours, label maps, mask overlays, grids.

Conventions: images are ``uint8`` RGB arrays of shape (H, W, 3); feature maps are (h, w, C) or
(N, C) float arrays; torch tensors are accepted wherever an array is (moved to CPU numpy).
"""
import colorsys
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cotap_mm.utils.fileio import atomic_open

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    'fit_pca', 'pca_to_rgb', 'label_palette', 'colorize_labels', 'overlay', 'mask_overlay',
    'upsample', 'image_grid', 'save_png'
]

# number of colours of the fixed palette (the paper's M = 64 prototypes)
NUM_FIXED_COLOURS = 64


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f'{name} must be a numpy array or a torch tensor, got {type(x).__name__}')


def _check_image(image: ArrayLike, name: str = 'image') -> np.ndarray:
    image = _to_numpy(image, name)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'{name} must be a uint8 (H, W, 3) RGB array, got dtype {image.dtype} '
                         f'and shape {image.shape}')
    return image


# -- PCA -----------------------------------------------------------------------------------------


def fit_pca(features: Union[ArrayLike, Sequence[ArrayLike]],
            num_components: int = 3) -> Dict[str, np.ndarray]:
    """Fit a PCA on patch features and record the range of each component.

    Fitting once on the features of *all* images (pass a list) and colouring every image with
    the result keeps the colours comparable across images.

    Args:
        features: (N, C) or (h, w, C) features, or a list of such arrays (stacked over rows).
        num_components: number k of principal components. Defaults to 3 (RGB).

    Returns:
        dict with ``mean`` (C,), ``components`` (k, C) (unit rows, by decreasing variance),
        ``explained_variance`` (k,), and ``lo`` / ``hi`` (k,): the min / max projection over the
        fitted features, used by :func:`pca_to_rgb` for min-max scaling. Each component's sign is
        fixed so that its largest-magnitude loading is positive (the SVD sign is arbitrary), so
        refits on the same data give the same colours.
    """
    if isinstance(features, (list, tuple)):
        if not features:
            raise ValueError('fit_pca: got an empty list of features')
        rows = [_to_numpy(f, 'features').reshape(-1, _to_numpy(f, 'features').shape[-1])
                for f in features]
        if len({r.shape[1] for r in rows}) != 1:
            raise ValueError(f'fit_pca: all feature arrays need the same channel count, got '
                             f'{sorted({r.shape[1] for r in rows})}')
        x = np.concatenate(rows, axis=0)
    else:
        x = _to_numpy(features, 'features')
        x = x.reshape(-1, x.shape[-1])
    n, c = x.shape
    if num_components < 1 or num_components > c:
        raise ValueError(f'fit_pca: num_components={num_components} must be in [1, {c}] '
                         f'(the feature width)')
    if n < 2:
        raise ValueError(f'fit_pca: need at least 2 feature vectors, got {n}')
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    # C x C covariance + eigh: cheaper than an SVD of the (N, C) matrix when N >> C
    evals, evecs = np.linalg.eigh(xc.T @ xc / (n - 1))
    order = np.argsort(evals)[::-1][:num_components]
    comps = evecs[:, order].T  # (k, C)
    flip = np.sign(comps[np.arange(num_components), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(flip == 0, 1., flip)[:, None]
    proj = xc @ comps.T  # (N, k)
    return dict(mean=mean, components=comps, explained_variance=np.maximum(evals[order], 0.),
                lo=proj.min(axis=0), hi=proj.max(axis=0))


def pca_to_rgb(features: ArrayLike, pca: Dict[str, np.ndarray]) -> np.ndarray:
    """Project features on the fitted components, min-max scaled per component to [0, 255].

    Args:
        features: (..., C) features, e.g. (h, w, C).
        pca: the output of :func:`fit_pca` with 3 components.

    Returns:
        uint8 array (..., 3): component 1 -> R, 2 -> G, 3 -> B. Values outside the fitted range
        are clipped; a component with zero range maps to 128.
    """
    x = _to_numpy(features, 'features').astype(np.float64)
    comps = pca['components']
    if comps.shape[0] != 3:
        raise ValueError(f'pca_to_rgb: the PCA must have 3 components, has {comps.shape[0]}')
    if x.shape[-1] != comps.shape[1]:
        raise ValueError(f'pca_to_rgb: features have {x.shape[-1]} channels but the PCA was '
                         f'fitted on {comps.shape[1]}')
    proj = (x - pca['mean']) @ comps.T
    span = pca['hi'] - pca['lo']
    scaled = np.where(span > 0, (proj - pca['lo']) / np.where(span > 0, span, 1.), 0.5)
    return np.round(np.clip(scaled, 0., 1.) * 255.).astype(np.uint8)


# -- label maps ----------------------------------------------------------------------------------


def label_palette(num_colours: int = NUM_FIXED_COLOURS) -> np.ndarray:
    """A fixed palette: (num_colours, 3) uint8 RGB.

    Colour i has hue ``(i * 0.618034) mod 1`` (golden-ratio steps keep neighbouring ids far apart
    in hue) and cycles through 4 (saturation, value) levels, so the first 64 colours, one per
    prototype of the paper's M = 64, are distinct. Larger palettes continue the same sequence
    (colours start to look alike beyond ~64).
    """
    if num_colours < 1:
        raise ValueError(f'label_palette: num_colours must be >= 1, got {num_colours}')
    levels = ((0.90, 0.95), (0.55, 1.00), (0.95, 0.65), (0.45, 0.75))  # (saturation, value)
    colours = []
    for i in range(num_colours):
        s, v = levels[i % len(levels)]
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1., s, v)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(colours, dtype=np.uint8)


def colorize_labels(labels: ArrayLike,
                    palette: Optional[np.ndarray] = None,
                    ignore_index: Optional[int] = None,
                    ignore_colour: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Colour an integer label map: (h, w) -> (h, w, 3) uint8 with ``palette[label]``.

    Args:
        labels: integer ids in ``[0, len(palette))``, or ``ignore_index``.
        palette: (K, 3) uint8; defaults to :func:`label_palette` with 64 colours.
        ignore_index: an id drawn in ``ignore_colour`` (e.g. 255, mmseg's unlabelled pixels).
        ignore_colour: RGB of the ignored pixels. Defaults to black.
    """
    labels = _to_numpy(labels, 'labels')
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f'colorize_labels: labels must be integers, got {labels.dtype}')
    palette = label_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    ignored = labels == ignore_index if ignore_index is not None else np.zeros(labels.shape, bool)
    valid = labels[~ignored]
    if valid.size and (valid.min() < 0 or valid.max() >= len(palette)):
        raise ValueError(f'colorize_labels: labels span [{valid.min()}, {valid.max()}] but '
                         f'the palette has {len(palette)} colours; pass a larger palette')
    out = palette[np.where(ignored, 0, labels)]
    out[ignored] = np.asarray(ignore_colour, dtype=np.uint8)
    return out


# -- resizing and compositing --------------------------------------------------------------------


def upsample(x: ArrayLike, size: Tuple[int, int], mode: str = 'nearest') -> np.ndarray:
    """Resize a (h, w) or (h, w, C) map to ``size = (H, W)``.

    ``'nearest'`` keeps the dtype and the exact values (label ids, mask values; each patch
    becomes a block); ``'bilinear'`` (``align_corners=False``, as ``F.interpolate``) is for
    float or uint8 colour maps and returns the input dtype (uint8 rounded).
    """
    x = _to_numpy(x, 'x')
    if x.ndim not in (2, 3):
        raise ValueError(f'upsample: x must be (h, w) or (h, w, C), got shape {x.shape}')
    H, W = (int(s) for s in size)
    h, w = x.shape[:2]
    if mode == 'nearest':
        # index map, not cv2: cv2.resize does not take int64 labels
        rows = np.minimum((np.arange(H) * h) // H, h - 1)
        cols = np.minimum((np.arange(W) * w) // W, w - 1)
        return x[rows][:, cols]
    if mode != 'bilinear':
        raise ValueError(f"upsample: mode must be 'nearest' or 'bilinear', got {mode!r}")
    t = torch.from_numpy(x.astype(np.float32))
    t = t[None, None] if x.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(H, W), mode='bilinear', align_corners=False)[0]
    out = out[0].numpy() if x.ndim == 2 else out.permute(1, 2, 0).numpy()
    if x.dtype == np.uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


def overlay(image: ArrayLike, colour_map: ArrayLike, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a (H, W, 3) uint8 colour map over an image of the same size."""
    image = _check_image(image)
    colour_map = _check_image(colour_map, 'colour_map')
    if image.shape != colour_map.shape:
        raise ValueError(f'overlay: image {image.shape} and colour_map {colour_map.shape} '
                         'differ in size; upsample the map first')
    if not 0. <= alpha <= 1.:
        raise ValueError(f'overlay: alpha must be in [0, 1], got {alpha}')
    out = (1. - alpha) * image.astype(np.float32) + alpha * colour_map.astype(np.float32)
    return np.round(out).astype(np.uint8)


def mask_overlay(image: ArrayLike,
                 mask: ArrayLike,
                 colour: Sequence[int] = (255, 40, 40),
                 alpha: float = 0.35,
                 background: float = 0.35) -> np.ndarray:
    """Show a binary mask on an image: tinted foreground, darkened background, outlined edge.

    Args:
        image: (H, W, 3) uint8.
        mask: (H, W) with foreground > 0.5 (upsample the patch mask first).
        colour: RGB tint and outline colour of the foreground.
        alpha: tint strength on the foreground.
        background: brightness factor of the background pixels (1 = unchanged).
    """
    image = _check_image(image)
    mask = _to_numpy(mask, 'mask')
    if mask.shape != image.shape[:2]:
        raise ValueError(f'mask_overlay: mask {mask.shape} and image {image.shape[:2]} differ '
                         'in size; upsample the mask first')
    fg = mask.astype(np.float32) > 0.5
    out = image.astype(np.float32)
    tint = np.asarray(colour, dtype=np.float32)
    out[fg] = (1. - alpha) * out[fg] + alpha * tint
    out[~fg] *= background
    # outline: foreground pixels with a background 4-neighbour
    pad = np.pad(fg, 1, mode='edge')
    edge = fg & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:])
    out[edge] = tint
    return np.round(out).astype(np.uint8)


def image_grid(rows: Sequence[Sequence[ArrayLike]],
               tile_size: Optional[Tuple[int, int]] = None,
               pad: int = 4,
               pad_value: int = 255,
               col_titles: Optional[Sequence[str]] = None) -> np.ndarray:
    """Tile images into a grid (a contact sheet).

    Args:
        rows: rows of (H, W, 3) uint8 tiles; every row has the same number of tiles.
        tile_size: (H, W) every tile is resized to (bilinear/area); defaults to the first tile's
            size (then all tiles must have that size).
        pad: pixels between tiles and around the grid.
        pad_value: grey level of the padding.
        col_titles: optional titles written above the columns.

    Returns:
        uint8 (R * (H + pad) + pad [+ title strip], C * (W + pad) + pad, 3).
    """
    if not rows or not rows[0]:
        raise ValueError('image_grid: needs at least one row with one tile')
    ncol = len(rows[0])
    if any(len(r) != ncol for r in rows):
        raise ValueError(f'image_grid: every row needs {ncol} tiles, got '
                         f'{[len(r) for r in rows]}')
    if col_titles is not None and len(col_titles) != ncol:
        raise ValueError(f'image_grid: {len(col_titles)} col_titles for {ncol} columns')
    first = _check_image(rows[0][0], 'rows[0][0]')
    th, tw = first.shape[:2] if tile_size is None else (int(tile_size[0]), int(tile_size[1]))
    gh, gw = len(rows) * (th + pad) + pad, ncol * (tw + pad) + pad
    grid = np.full((gh, gw, 3), pad_value, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            tile = _check_image(tile, f'rows[{r}][{c}]')
            if tile.shape[:2] != (th, tw):
                if tile_size is None:
                    raise ValueError(f'image_grid: tile [{r}][{c}] is {tile.shape[:2]}, '
                                     f'expected {(th, tw)}; pass tile_size to resize')
                shrink = tile.shape[0] > th or tile.shape[1] > tw
                tile = cv2.resize(tile, (tw, th),
                                  interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            y, x = pad + r * (th + pad), pad + c * (tw + pad)
            grid[y:y + th, x:x + tw] = tile
    if col_titles is not None:
        header = np.full((22, gw, 3), pad_value, dtype=np.uint8)
        for c, title in enumerate(col_titles):
            cv2.putText(header, str(title), (pad + c * (tw + pad) + 2, 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        grid = np.concatenate([header, grid], axis=0)
    return grid


# -- output --------------------------------------------------------------------------------------


def save_png(path: str, image: ArrayLike) -> str:
    """Write an RGB uint8 image as PNG atomically (temporary file + ``os.replace``).

    Readers never see a half-written file; the folder is created if needed. Returns ``path``.
    """
    image = _check_image(image)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ok, buf = cv2.imencode('.png', cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f'save_png: OpenCV could not encode an image of shape {image.shape}')
    with atomic_open(path) as f:
        f.write(buf.tobytes())
    return path
