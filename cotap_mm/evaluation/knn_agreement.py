"""How much an image and its kNN neighbours share their classes: the premise of the CoTAP
ranking loss, whose cross-image positives are the regions of an image's neighbour. Measured as
the mean Jaccard index of the two images' class sets, over the kNN pairs and over random pairs
of the same images (the level without any retrieval); and, as an upper bound of retrieval,
the neighbours an oracle that knows every image's classes would pick. On the synthetic
pretraining scenes, the classes come from the folder's ``meta.json`` (the demo's ``knn`` stage
and ``tools/analysis/knn_agreement.py``)."""
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np

from cotap_mm.datasets.image_list import list_images
from cotap_mm.datasets.knn_pairs import load_nns, write_knn_file
from cotap_mm.datasets.synthetic import THING_CLASSES, pretraining_scene_classes

__all__ = ['neighbour_class_agreement', 'oracle_neighbours', 'SUBSET_FOLDERS',
           'synthetic_knn_agreement', 'write_oracle_knn_file']

SUBSET_FOLDERS = dict(coco='coco/train2017', imagenet='imagenet/train')


def _jaccard(a: frozenset, b: frozenset) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def neighbour_class_agreement(nns: np.ndarray, class_sets: Sequence[Sequence[int]],
                              classes: Optional[Sequence[int]] = None,
                              seed: int = 0) -> Dict[str, float]:
    """Mean Jaccard index of the class sets of (image, neighbour) pairs.

    Args:
        nns (np.ndarray): (N, k) int neighbour indices, the image itself in column 0 (the kNN
            file's layout); columns 1..k-1 are the pairs.
        class_sets (Sequence): N collections of class ids, one per image in ``nns`` order.
        classes (Sequence[int], optional): Count only these classes (e.g. the things).
        seed (int): Seed of the random pairs: each image with as many other images, uniform.

    Returns:
        dict: ``knn`` and ``random`` mean Jaccard indices, their ``ratio``, and ``pairs``.
    """
    nns = np.asarray(nns)
    N = len(class_sets)
    if nns.ndim != 2 or nns.shape[0] != N or nns.shape[1] < 2:
        raise ValueError(f'neighbour_class_agreement: nns must be (N={N}, k >= 2) with the image '
                         f'itself in column 0, got shape {nns.shape}')
    if N < 2:
        raise ValueError('neighbour_class_agreement: needs at least 2 images')
    keep = None if classes is None else frozenset(int(c) for c in classes)
    sets = [frozenset(int(c) for c in s if keep is None or int(c) in keep) for s in class_sets]
    k = nns.shape[1] - 1
    knn = np.mean([_jaccard(sets[i], sets[int(j)]) for i in range(N) for j in nns[i, 1:]])
    rng = np.random.default_rng(seed)
    other = rng.integers(0, N - 1, size=(N, k))
    other += other >= np.arange(N)[:, None]  # never the image itself
    rand = np.mean([_jaccard(sets[i], sets[int(j)]) for i in range(N) for j in other[i]])
    return dict(knn=float(knn), random=float(rand),
                ratio=float(knn / rand) if rand > 0 else float('nan'), pairs=int(N * k))


def oracle_neighbours(class_sets: Sequence[Sequence[int]], k: int, seed: int = 0) -> np.ndarray:
    """(N, k + 1) int64 neighbour indices in the kNN file's layout (each image first): the k
    other images whose class sets have the highest Jaccard index with its own, ties broken at
    random. A diagnostic: kNN pairs as good as the classes allow, not a retrieval method."""
    N = len(class_sets)
    if not 1 <= k < N:
        raise ValueError(f'oracle_neighbours: k={k} must be in [1, N - 1 = {N - 1}]')
    ids = sorted({int(c) for s in class_sets for c in s})
    col = {c: i for i, c in enumerate(ids)}
    member = np.zeros((N, max(1, len(ids))), dtype=np.float64)  # (N, C) class indicator
    for i, s in enumerate(class_sets):
        member[i, [col[int(c)] for c in s]] = 1.0
    inter = member @ member.T  # (N, N)
    size = member.sum(1)
    union = size[:, None] + size[None, :] - inter
    jac = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    jac += np.random.default_rng(seed).uniform(0, 1e-6, size=jac.shape)  # random tie-break
    np.fill_diagonal(jac, -np.inf)
    order = np.argsort(-jac, axis=1, kind='stable')[:, :k]  # (N, k)
    return np.concatenate([np.arange(N)[:, None], order], 1).astype(np.int64)


def _class_sets(data_root: str, subset: str):
    """The image paths of ``subset`` in ``list_images`` order and their class sets."""
    classes = pretraining_scene_classes(data_root, subset)
    root = osp.join(data_root, SUBSET_FOLDERS[subset])
    paths = list_images(root)
    return paths, [classes[osp.relpath(p, root)] for p in paths]


def write_oracle_knn_file(data_root: str, subset: str, dst: str, k: int, seed: int = 0) -> str:
    """A kNN file of the ``subset`` scenes whose neighbours are :func:`oracle_neighbours` of
    their classes (the diagnostic upper bound of kNN pairs); returns ``dst``."""
    paths, sets = _class_sets(data_root, subset)
    write_knn_file(dst, oracle_neighbours(sets, k, seed), paths,
                   osp.join(data_root, SUBSET_FOLDERS[subset]))
    return dst


def synthetic_knn_agreement(data_root: str, subset: str, nns_file: str,
                            seed: int = 0) -> Dict[str, dict]:
    """:func:`neighbour_class_agreement` of ``nns_file`` over the ``subset`` scenes of
    ``data_root`` (a folder of ``tools/make_synthetic_scenes.py``), for all classes and for the
    things only."""
    sets = _class_sets(data_root, subset)[1]
    nns = load_nns(nns_file, len(sets), min_columns=2)
    return dict(all=neighbour_class_agreement(nns, sets, seed=seed),
                things=neighbour_class_agreement(nns, sets, range(len(THING_CLASSES)), seed=seed))
