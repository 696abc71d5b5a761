"""The kNN neighbour file of an image folder (STEGO ``precompute_knns.py`` format): the writer
(``tools/precompute_knn.py`` is its command line) and the checked reader that
:class:`~cotap_mm.datasets.KNNPairDataset` uses.

Format: an ``.npz`` with ``nns``, int64 (N, k): row i holds the neighbours of image i (in
:func:`~cotap_mm.datasets.image_list.list_images` order), the image itself in column 0. Files
written here also record what they were computed on (``num_images``, ``image_list_sha1``,
``image_dir``), so that a file of another image list is refused; the released STEGO files hold
only ``nns``.
"""
import logging
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from mmengine.logging import print_log

from cotap_mm.utils.fileio import atomic_open
from .image_list import image_list_digest

__all__ = ['META_KEYS', 'load_nns', 'knn_search', 'force_self_first', 'write_knn_file']

# Metadata written by write_knn_file next to `nns` (absent from the released files).
META_KEYS = ('num_images', 'image_list_sha1', 'image_dir')


def load_nns(nns_file: str, num_images: Optional[int] = None, min_columns: int = 1,
             key: str = 'nns', self_check_ratio: float = 0.9,
             list_digest: Optional[str] = None, image_dir: Optional[str] = None) -> np.ndarray:
    """Load and check a STEGO-format neighbour file.

    Files written by ``tools/precompute_knn.py`` also record what they were computed on:
    ``num_images`` and ``image_list_sha1`` (:func:`image_list_digest` of the sorted relative
    image list) and ``image_dir``; a file of another image list is refused even when the
    image count matches. The released STEGO files hold only ``nns``: their order cannot be
    verified beyond the row count and the self-in-column-0 check, which is logged.

    Args:
        nns_file (str): ``.npz`` with ``key`` -> int array (N, >= min_columns), row i = the
            neighbours of image i (in :func:`list_images` order), self in column 0.
        num_images (int, optional): Expected N (the dataset length).
        min_columns (int): Columns needed.
        key (str): Array name. Defaults to ``'nns'``.
        self_check_ratio (float): At least this fraction of rows must have column 0 == row
            index (duplicate images may legitimately swap). Defaults to 0.9.
        list_digest (str, optional): The dataset's image-list digest, compared with the file's.
        image_dir (str, optional): The dataset's image folder (for the messages).

    Returns:
        np.ndarray: (N, C) int64.
    """
    make = f'python tools/precompute_knn.py IMAGE_DIR {nns_file}'
    where = f'IMAGE_DIR = {image_dir}' if image_dir else ('IMAGE_DIR = the folder the dataset '
                                                          'lists, e.g. data/coco/train2017')
    if not osp.isfile(nns_file):
        raise FileNotFoundError(
            f'KNNPairDataset: neighbour file {nns_file!r} not found. Download the released '
            f'nns.zip (see docs/data.md) or compute it with `{make}` ({where}).')
    with np.load(nns_file) as npz:
        if key not in npz.files:
            raise KeyError(f'KNNPairDataset: {nns_file!r} has no array {key!r} (found '
                           f'{npz.files}); expected the STEGO format written by `{make}`.')
        nns = np.asarray(npz[key])
        meta = {k: npz[k].item() for k in META_KEYS if k in npz.files}
    if list_digest is not None and 'image_list_sha1' in meta:
        if meta['image_list_sha1'] != list_digest or (
                num_images is not None and meta.get('num_images', num_images) != num_images):
            raise ValueError(
                f'KNNPairDataset: {nns_file!r} was computed on another image list: '
                f'{meta.get("num_images")} images under {meta.get("image_dir", "?")!r} '
                f'(list sha1 {meta["image_list_sha1"][:12]}), but the dataset lists '
                f'{num_images} images under {image_dir!r} (list sha1 {list_digest[:12]}); '
                'its rows would pair the wrong images. Use the kNN file of this folder, or '
                f'regenerate it with `{make}` ({where}; also after adding, removing or '
                'renaming images).')
    elif list_digest is not None:
        print_log(f'KNNPairDataset: {nns_file!r} records no image list (STEGO format, e.g. '
                  'the released files): its row order cannot be verified beyond the row '
                  'count and the image itself in column 0. Make sure it was computed on '
                  f'{image_dir or "this folder"} as listed by list_images (sorted relative '
                  'paths).', logger='current', level=logging.WARNING)
    if nns.ndim != 2 or not np.issubdtype(nns.dtype, np.integer):
        raise ValueError(f'KNNPairDataset: {nns_file!r}[{key!r}] must be a 2-D integer array '
                         f'(N, k), got shape {nns.shape} dtype {nns.dtype}.')
    if nns.shape[1] < min_columns:
        raise ValueError(f'KNNPairDataset: {nns_file!r} has {nns.shape[1]} neighbour columns '
                         f'but {min_columns} are needed (num_neighbors / nn_column_range); '
                         f'regenerate with `{make} --k {max(min_columns, 30)}`.')
    if num_images is not None:
        if nns.shape[0] != num_images:
            raise ValueError(
                f'KNNPairDataset: {nns_file!r} has {nns.shape[0]} rows but the dataset has '
                f'{num_images} images: the file belongs to another image set or order. '
                f'Regenerate it with `{make}` on the same folder and extensions.')
        if nns.min() < 0 or nns.max() >= num_images:
            bad = np.argwhere((nns < 0) | (nns >= num_images))[0]
            raise ValueError(f'KNNPairDataset: {nns_file!r} has neighbour indices outside '
                             f'[0, {num_images}) (min {nns.min()}, max {nns.max()}; first at '
                             f'row {bad[0]}, column {bad[1]}): it is corrupt or belongs to '
                             f'another image set. Regenerate it with `{make}`.')
        ratio = float((nns[:, 0] == np.arange(num_images)).mean())
        if ratio < self_check_ratio:
            raise ValueError(
                f'KNNPairDataset: in {nns_file!r} only {ratio:.1%} of the rows have the image '
                'itself in column 0 (expected almost all): the rows are not in the order of '
                'the dataset (list_images: sorted relative paths). Regenerate it with '
                f'`{make}`.')
    return nns.astype(np.int64, copy=False)


def force_self_first(nns: np.ndarray) -> np.ndarray:
    """Make column 0 of row i equal i (ties between duplicates may put another image first).

    If i is in the row it is moved to the front (the others keep their order); otherwise it is
    prepended and the last neighbour dropped.
    """
    n, k = nns.shape
    rows = np.arange(n)[:, None]
    is_self = nns == rows                                          # (N, k)
    has_self = is_self.any(axis=1)
    # Position of self, or k-1 (the dropped last column) when absent.
    pos = np.where(has_self, is_self.argmax(axis=1), k - 1)
    cols = np.arange(k)[None]
    # New row: [i, old[0..pos-1], old[pos+1..k-1]].
    src = np.where(cols <= pos[:, None], cols - 1, cols)          # (N, k); -1 at column 0
    out = np.take_along_axis(nns, np.clip(src, 0, k - 1), axis=1)
    out[:, 0] = np.arange(n)
    return out


def knn_search(features: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Top-k cosine neighbours (features L2-normalised): (N, k) int64, self in column 0.

    Exact inner-product search: faiss's ``IndexFlatIP`` when faiss is installed, else the same
    search with torch matrix products in row chunks (the pretraining-only environments)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    try:
        import faiss
    except ImportError:
        import torch
        feats = torch.from_numpy(features)
        nns = torch.cat([torch.topk(feats[i:i + chunk] @ feats.T, k, dim=1).indices
                         for i in range(0, len(feats), chunk)]).numpy()
    else:
        index = faiss.IndexFlatIP(features.shape[1])
        index.add(features)
        _, nns = index.search(features, k)
    return force_self_first(nns.astype(np.int64))


def write_knn_file(path: str, nns: np.ndarray, paths: Sequence[str], image_dir: str) -> None:
    """Write ``nns`` (N, k) and what it was computed on (the image list of ``image_dir``)
    atomically: an interrupted run leaves neither a partial ``path`` nor a temporary file (an
    old ``path`` is kept)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path) as f:
        np.savez(f, nns=np.asarray(nns, dtype=np.int64), num_images=np.int64(len(paths)),
                 image_list_sha1=np.str_(image_list_digest(paths, image_dir)),
                 image_dir=np.str_(osp.abspath(image_dir)))
