"""tools/precompute_knn.py on ~20 generated JPEGs (tiny random ViT)."""
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from conftest import load_tool
import torch

from cotap_mm.datasets.image_list import list_images
from cotap_mm.evaluation.knn_builder import force_self_first

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
pk = load_tool('precompute_knn')

ARGS = ['--arch', 'tiny', '--image-size', '32', '--batch-size', '8', '--num-workers', '0',
        '--device', 'cpu']


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    for c in range(3):
        os.makedirs(root / f'n0{c}')
        for i in range(6):
            h, w = rng.integers(36, 60, 2)
            img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), np.uint8), (5, 5), 2)
            cv2.imwrite(str(root / f'n0{c}' / f'im{i}.JPEG'), img)
    # Two exact duplicates in different classes.
    shutil.copy(root / 'n00' / 'im0.JPEG', root / 'n02' / 'dup_a.JPEG')
    shutil.copy(root / 'n01' / 'im3.JPEG', root / 'n02' / 'dup_b.JPEG')
    return root


def test_precompute_knn(image_dir, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / 'sub' / 'nns.npz'
    nns = pk.main([str(image_dir), str(out), '--k', '5'] + ARGS)
    with np.load(out) as f:
        saved = f['nns']
    assert saved.dtype == np.int64 and saved.shape == (20, 5)
    np.testing.assert_array_equal(saved, nns)
    np.testing.assert_array_equal(saved[:, 0], np.arange(20))
    assert not [p for p in os.listdir(out.parent) if '.tmp' in p]
    paths = list_images(str(image_dir), ('.jpeg',))
    idx = {osp.relpath(p, image_dir): i for i, p in enumerate(paths)}
    for a, b in [('n00/im0.JPEG', 'n02/dup_a.JPEG'), ('n01/im3.JPEG', 'n02/dup_b.JPEG')]:
        assert saved[idx[a], 1] == idx[b] and saved[idx[b], 1] == idx[a]
    # k larger than N is clipped.
    assert pk.main([str(image_dir), str(tmp_path / 'big.npz'), '--k', '30'] + ARGS).shape == (20, 20)


def test_force_self_first():
    nns = np.array([[0, 1, 2], [0, 1, 2], [0, 1, 3], [0, 1, 2]])
    out = force_self_first(nns)
    np.testing.assert_array_equal(out, [[0, 1, 2], [1, 0, 2], [2, 0, 1], [3, 0, 1]])


def test_knn_search_without_faiss_equals_faiss(monkeypatch):
    """The torch fallback (no faiss installed) finds the same exact neighbours as faiss."""
    import sys

    from cotap_mm.evaluation.knn_builder import knn_search
    gen = np.random.default_rng(0)
    feats = gen.standard_normal((300, 24)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    with_faiss = knn_search(feats, 7)
    monkeypatch.setitem(sys.modules, 'faiss', None)  # import faiss now fails
    without = knn_search(feats, 7, chunk=64)  # several chunks
    np.testing.assert_array_equal(without, with_faiss)
    assert (without[:, 0] == np.arange(300)).all()
    # the neighbours are the top inner products, in order
    sims = feats @ feats.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(without[:, 1:], np.argsort(-sims, axis=1)[:, :6])
