"""The classes shared by the kNN pairs of the synthetic pretraining scenes: their kNN file
against the scenes' classes, regenerated from the folder's ``meta.json`` (the demo's ``knn``
stage and ``tools/analysis/knn_agreement.py``)."""
import os.path as osp
from typing import Dict

import numpy as np

from cotap_mm.datasets.image_list import list_images
from cotap_mm.datasets.synthetic import THING_CLASSES, pretraining_scene_classes
from cotap_mm.datasets.knn_file import write_knn_file
from .functional import neighbour_class_agreement, oracle_neighbours

__all__ = ['SUBSET_FOLDERS', 'synthetic_knn_agreement', 'write_oracle_knn_file']

SUBSET_FOLDERS = dict(coco='coco/train2017', imagenet='imagenet/train')


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
    with np.load(nns_file) as f:
        nns = f['nns']
    return dict(all=neighbour_class_agreement(nns, sets, seed=seed),
                things=neighbour_class_agreement(nns, sets, range(len(THING_CLASSES)), seed=seed))
