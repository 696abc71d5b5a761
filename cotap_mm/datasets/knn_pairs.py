"""kNN pairs of images (docs/method.md §5.1): the neighbour file of an image folder and the
datasets that draw the pairs from it, with the CoTAP COCO + ImageNet item (docs/method.md §0, §5).

The file (STEGO ``precompute_knns.py`` format; ``tools/precompute_knn.py`` writes it): an ``.npz``
with ``nns``, int64 (N, k): row i holds the neighbours of image i (in
:func:`~cotap_mm.datasets.image_list.list_images` order), the image itself in column 0. Files
written here also record what they were computed on (``num_images``, ``image_list_sha1``,
``image_dir``), so that a file of another image list is refused; the released STEGO files hold
only ``nns``.
"""
import contextlib
import copy
import logging
import os
import os.path as osp
from typing import Optional, Sequence, Union

import numpy as np
from mmengine.dataset import Compose
from mmengine.logging import print_log

from cotap_mm.registry import DATASETS, TRANSFORMS
from cotap_mm.utils.checks import check_choice, check_positive_int
from cotap_mm.utils.fileio import atomic_open
from cotap_mm.utils.rng import seeded_generators
from .image_list import image_list_digest
from .samplers import split_item_key

__all__ = ['META_KEYS', 'load_nns', 'write_knn_file', 'KNNPairDataset', 'CoTAPDualDataset']

# Metadata written by write_knn_file next to `nns` (absent from the released files).
META_KEYS = ('num_images', 'image_list_sha1', 'image_dir')


def load_nns(nns_file: str, num_images: int, min_columns: int = 1,
             list_digest: Optional[str] = None, image_dir: Optional[str] = None) -> np.ndarray:
    """Load and check a neighbour file (the format: the module docstring).

    A file that records its image list (``image_list_sha1``: :func:`image_list_digest` of the
    sorted relative image list) is refused for another image list even when the image count
    matches. A file with only ``nns`` (the released ones) is checked by its row count and the
    image itself in column 0 of at least 90% of the rows (duplicate images may swap), with a
    logged warning.

    Args:
        nns_file (str): The ``.npz``.
        num_images (int): Expected N (the dataset length).
        min_columns (int): Columns needed.
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
        if 'nns' not in npz.files:
            raise KeyError(f'KNNPairDataset: {nns_file!r} has no array \'nns\' (found '
                           f'{npz.files}); expected the STEGO format written by `{make}`.')
        nns = np.asarray(npz['nns'])
        meta = {k: npz[k].item() for k in META_KEYS if k in npz.files}
    if list_digest is not None and 'image_list_sha1' in meta:
        if (meta['image_list_sha1'] != list_digest
                or meta.get('num_images', num_images) != num_images):
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
        raise ValueError(f'KNNPairDataset: {nns_file!r}[\'nns\'] must be a 2-D integer array '
                         f'(N, k), got shape {nns.shape} dtype {nns.dtype}.')
    if nns.shape[1] < min_columns:
        raise ValueError(f'KNNPairDataset: {nns_file!r} has {nns.shape[1]} neighbour columns '
                         f'but {min_columns} are needed (num_neighbors / nn_column_range); '
                         f'regenerate with `{make} --k {max(min_columns, 30)}`.')
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
    if ratio < 0.9:
        raise ValueError(
            f'KNNPairDataset: in {nns_file!r} only {ratio:.1%} of the rows have the image '
            'itself in column 0 (expected almost all): the rows are not in the order of '
            'the dataset (list_images: sorted relative paths). Regenerate it with '
            f'`{make}`.')
    return nns.astype(np.int64, copy=False)


def write_knn_file(path: str, nns: np.ndarray, paths: Sequence[str], image_dir: str) -> None:
    """Write ``nns`` (N, k) and what it was computed on (the image list of ``image_dir``)
    atomically: an interrupted run leaves neither a partial ``path`` nor a temporary file (an
    old ``path`` is kept)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path) as f:
        np.savez(f, nns=np.asarray(nns, dtype=np.int64), num_images=np.int64(len(paths)),
                 image_list_sha1=np.str_(image_list_digest(paths, image_dir)),
                 image_dir=np.str_(osp.abspath(image_dir)))


NN_COLUMN_RANGES = ('exclude_self', 'with_self')


@DATASETS.register_module()
class KNNPairDataset:
    """Pairs each image u of ``dataset`` with one of its k nearest neighbours v (docs/method.md §5.1).

    For each access one column is drawn uniformly (``np.random``) among the neighbour columns;
    ``nn_column_range`` chooses them:

    - ``'exclude_self'`` (default, STEGO-style, corrected): columns ``1..k``, so v != u
      (except for exact duplicates);
    - ``'with_self'`` (the released CoTAP code): columns ``0..k-1``; column 0 being the image
      itself, v is u (with independent crops) with probability 1/k.

    Args:
        dataset (dict | ImageList): The image dataset (whose ``prepare_data(i)`` loads image i
            and returns ``None`` for a skipped unreadable image).
        nns_file (str): STEGO npz, see :func:`load_nns`.
        num_neighbors (int): k. Defaults to 7.
        nn_column_range (str): See above. Defaults to ``'exclude_self'``.
        max_refetch (int): Retries when images are unreadable. Defaults to 100.
    """

    def __init__(self,
                 dataset: Union[dict, object],
                 nns_file: str,
                 num_neighbors: int = 7,
                 nn_column_range: str = 'exclude_self',
                 max_refetch: int = 100):
        check_choice('KNNPairDataset', 'nn_column_range', nn_column_range, NN_COLUMN_RANGES)
        check_positive_int('KNNPairDataset', 'num_neighbors', num_neighbors)
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.num_neighbors = num_neighbors
        self.nn_column_range = nn_column_range
        self.max_refetch = max_refetch
        first = 1 if nn_column_range == 'exclude_self' else 0
        self.columns = np.arange(first, first + num_neighbors)
        self.nns_file = nns_file
        digest = getattr(self.dataset, 'list_digest', None)
        nns = load_nns(nns_file, len(self.dataset), min_columns=first + num_neighbors,
                       list_digest=digest() if callable(digest) else None,
                       image_dir=getattr(self.dataset, 'img_dir', None))
        # Keep only the columns we draw from (the released files have 30: ~300 MB for ImageNet).
        self.nns = np.ascontiguousarray(nns[:, :first + num_neighbors])

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(getattr(self.dataset, 'metainfo', {}))

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_neighbor(self, idx: int) -> int:
        """Index of a random neighbour of image ``idx``."""
        return int(self.nns[idx, self.columns[np.random.randint(len(self.columns))]])

    def get_pair(self, idx: int):
        """Load image ``idx`` and a random neighbour.

        Returns:
            tuple[dict, dict]: the two pipeline results (``u``, ``v``). An unreadable u is
            replaced by a random other image, an unreadable v by another neighbour.
        """
        for _ in range(self.max_refetch + 1):
            u = self.dataset.prepare_data(idx)
            if u is None:
                idx = np.random.randint(len(self))
                continue
            for _ in range(len(self.columns)):
                v = self.dataset.prepare_data(self.sample_neighbor(idx))
                if v is not None:
                    return u, v
            idx = np.random.randint(len(self))
        raise RuntimeError(f'KNNPairDataset: no readable (image, neighbour) pair after '
                           f'{self.max_refetch} retries; too many unreadable images under '
                           f'the dataset of {self.nns_file!r}?')

    def __getitem__(self, key) -> dict:
        """``key``: an index, or ``(index, item_seed)`` from :class:`ItemSeedSampler` (the
        neighbour draw then runs on generators seeded with ``item_seed``)."""
        idx, seed = split_item_key(key)
        with seeded_generators(seed) if seed is not None else contextlib.nullcontext():
            u, v = self.get_pair(idx)
        return dict(u=u, v=v)


@DATASETS.register_module()
class CoTAPDualDataset:
    """One CoTAP item: a COCO kNN pair and an ImageNet kNN pair (docs/method.md §0, §5.1).

    Item ``i`` uses ``coco[i % len(coco)]`` and ``imagenet[i % len(imagenet)]``; the length is
    the larger of the two. ``view_pipeline`` (default :class:`CoTAPMultiCrop`) runs on each of
    the four images independently and must turn ``img`` into a list of G + L crops and add
    ``bbox_gc`` (G, G + L, 4) / ``bbox_all`` (G + L, G, 4). The item then holds

    - ``img``: 4 (G + L) crops, ordered ``for subset in (coco, imagenet): for image in (u, v):
      [global 0..G-1, local 0..L-1]``, i.e. index ``subset * 2 (G + L) + half * (G + L) + crop``;
    - ``bbox_gc`` float32 (2, 2, G, G + L, 4) ``[subset, half, g, k]`` and ``bbox_all`` float32
      (2, 2, G + L, G, 4) ``[subset, half, k, g]`` (output pixels);
    - ``img_path`` (4 paths, same order), ``sample_idx``;

    and ``pipeline`` (default ``PackInputs(algorithm_keys=('bbox_gc', 'bbox_all'))``) packs it.

    Args:
        coco (dict | KNNPairDataset): The patch subset.
        imagenet (dict | KNNPairDataset): The cls subset.
        view_pipeline (Sequence[dict | callable]): Per-image transforms.
        pipeline (Sequence[dict | callable]): Transforms of the merged item.
    """

    BOX_KEYS = ('bbox_gc', 'bbox_all')

    def __init__(self,
                 coco: Union[dict, KNNPairDataset],
                 imagenet: Union[dict, KNNPairDataset],
                 view_pipeline: Optional[Sequence] = None,
                 pipeline: Optional[Sequence] = None):
        self.subsets = [DATASETS.build(d) if isinstance(d, dict) else d for d in (coco, imagenet)]
        if view_pipeline is None:
            view_pipeline = [dict(type='CoTAPMultiCrop')]
        if pipeline is None:
            pipeline = [dict(type='PackInputs', algorithm_keys=self.BOX_KEYS)]
        build = lambda ts: Compose([TRANSFORMS.build(t) if isinstance(t, dict) else t  # noqa
                                    for t in ts])
        self.view_pipeline = build(view_pipeline)
        self.pipeline = build(pipeline)
        for name, d in zip(('coco', 'imagenet'), self.subsets):
            if len(d) == 0:
                raise ValueError(f'CoTAPDualDataset: the {name} dataset is empty')

    @property
    def metainfo(self) -> dict:
        return dict(subsets=('coco', 'imagenet'))

    def __len__(self) -> int:
        return max(len(d) for d in self.subsets)

    def prepare_item(self, idx: int) -> dict:
        """The merged, unpacked item (see the class docstring)."""
        imgs, paths = [], []
        boxes = {k: [] for k in self.BOX_KEYS}
        for subset in self.subsets:
            pair = subset.get_pair(idx % len(subset))
            for res in pair:
                out = self.view_pipeline(dict(res))
                if out is None or not isinstance(out.get('img'), list) or any(
                        k not in out for k in self.BOX_KEYS):
                    raise RuntimeError('CoTAPDualDataset: view_pipeline must output a list '
                                       f'of crops in "img" and the keys {self.BOX_KEYS} '
                                       '(use CoTAPMultiCrop)')
                imgs.extend(out['img'])
                paths.append(res.get('img_path'))
                for k in self.BOX_KEYS:
                    boxes[k].append(out[k])
        item = dict(img=imgs, img_path=paths, sample_idx=idx)
        for k, v in boxes.items():
            item[k] = np.stack(v).reshape(2, 2, *v[0].shape).astype(np.float32)
        return item

    def __getitem__(self, key) -> dict:
        """``key``: an index, or ``(index, item_seed)`` from :class:`ItemSeedSampler`: the
        neighbour draws, crops and jitter then run on generators seeded with ``item_seed``, so
        they depend on the item's place in the run only, not on the loader worker."""
        idx, seed = split_item_key(key)
        with seeded_generators(seed) if seed is not None else contextlib.nullcontext():
            return self.pipeline(self.prepare_item(idx))
