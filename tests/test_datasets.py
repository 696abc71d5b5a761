"""ImageList, KNNPairDataset and CoTAPDualDataset on small generated JPEGs."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate

from cotap_mm.datasets.image_list import ImageList, list_images
from cotap_mm.datasets.knn_pairs import CoTAPDualDataset, KNNPairDataset
from cotap_mm.datasets.transforms.multicrop import CoTAPMultiCrop  # noqa: F401 (registers)
from cotap_mm.registry import DATASETS

VIEW = [dict(type='CoTAPMultiCrop', size_crops=(32, 16))]


def write_images(root, names, seed=0):
    rng = np.random.default_rng(seed)
    for n in names:
        path = osp.join(root, n)
        __import__('os').makedirs(osp.dirname(path), exist_ok=True)
        cv2.imwrite(path, rng.integers(0, 255, (48 + rng.integers(0, 20), 64, 3), np.uint8))


def write_nns(path, n, k=9, seed=0):
    rng = np.random.default_rng(seed)
    others = np.stack([rng.permutation(np.setdiff1d(np.arange(n), [i]))[:k - 1]
                       for i in range(n)])
    nns = np.concatenate([np.arange(n)[:, None], others], axis=1)
    np.savez(path, nns=nns)
    return nns


@pytest.fixture
def data(tmp_path):
    coco = tmp_path / 'coco' / 'train2017'
    write_images(str(coco), [f'{i:012d}.jpg' for i in range(10, 0, -1)])
    (coco / 'notes.txt').write_text('not an image')
    imnet = tmp_path / 'imagenet' / 'train'
    write_images(str(imnet), [f'n0{c}/img_{i}.JPEG' for c in (2, 1) for i in range(3)], seed=1)
    nns_dir = tmp_path / 'nns'
    nns_dir.mkdir()
    write_nns(str(nns_dir / 'coco.npz'), 10)
    write_nns(str(nns_dir / 'in.npz'), 6)
    return tmp_path


def subset_cfg(root, sub, nns, **kw):
    return dict(type='KNNPairDataset', nns_file=str(root / 'nns' / nns),
                dataset=dict(type='ImageList', data_root=str(root / sub[0]), data_prefix=sub[1]),
                **kw)


def test_list_images_sorted_recursive(data):
    paths = list_images(str(data / 'imagenet' / 'train'), ('.jpeg',))
    rel = [osp.relpath(p, data / 'imagenet' / 'train') for p in paths]
    assert rel == [f'n0{c}/img_{i}.JPEG' for c in (1, 2) for i in range(3)]
    coco = list_images(str(data / 'coco' / 'train2017'))
    assert [osp.basename(p) for p in coco] == [f'{i:012d}.jpg' for i in range(1, 11)]
    with pytest.raises(FileNotFoundError, match='does not exist'):
        list_images(str(data / 'nope'))


def test_image_list_and_bad_images(data):
    ds = DATASETS.build(dict(type='ImageList', data_root=str(data / 'coco'),
                             data_prefix='train2017'))
    assert len(ds) == 10
    assert ds[0]['img'].dtype == np.uint8 and ds[0]['img'].ndim == 3
    # Corrupt one file: 'skip' warns, counts and returns None from prepare_data.
    bad = ds.get_img_path(3)
    with open(bad, 'wb') as f:
        f.write(b'not a jpeg')
    with pytest.warns(UserWarning, match='skipping unreadable image'):
        assert ds.prepare_data(3) is None
    assert ds.num_bad_images == 1
    assert ds.prepare_data(3) is None and ds.num_bad_images == 1  # remembered, counted once
    assert ds[3] is not None  # mmengine __getitem__ draws another index
    err = ImageList(data_root=str(data / 'coco'), data_prefix='train2017', on_bad_image='error')
    with pytest.raises(RuntimeError, match=osp.basename(bad)):
        err.prepare_data(3)
    with pytest.raises(ValueError, match='on_bad_image'):
        ImageList(data_root=str(data / 'coco'), on_bad_image='ignore')


def test_knn_pair_columns(data):
    cfg = subset_cfg(data, ('coco', 'train2017'), 'coco.npz', num_neighbors=3)
    ds = DATASETS.build(cfg)
    np.random.seed(0)
    drawn = {ds.sample_neighbor(4) for _ in range(200)}
    assert drawn == set(ds.nns[4, 1:4].tolist()) and 4 not in drawn
    ds_self = DATASETS.build(dict(cfg, nn_column_range='with_self'))
    drawn = {ds_self.sample_neighbor(4) for _ in range(200)}
    assert drawn == set(ds.nns[4, 0:3].tolist()) and 4 in drawn
    u, v = ds.get_pair(2)
    assert u['img_path'].endswith('000000000003.jpg')
    assert list_images(str(data / 'coco' / 'train2017')).index(v['img_path']) in ds.nns[2, 1:4]
    with pytest.raises(ValueError, match='nn_column_range'):
        DATASETS.build(dict(cfg, nn_column_range='0..6'))


def test_knn_pair_checks(data, tmp_path):
    cfg = subset_cfg(data, ('coco', 'train2017'), 'coco.npz')
    with pytest.raises(FileNotFoundError, match='tools/precompute_knn.py IMAGE_DIR'):
        DATASETS.build(dict(cfg, nns_file=str(tmp_path / 'missing.npz')))
    np.savez(tmp_path / 'nokey.npz', foo=np.zeros((10, 8), int))
    with pytest.raises(KeyError, match="'nns'"):
        DATASETS.build(dict(cfg, nns_file=str(tmp_path / 'nokey.npz')))
    write_nns(str(tmp_path / 'short.npz'), 9)
    with pytest.raises(ValueError, match='9 rows but the dataset has 10'):
        DATASETS.build(dict(cfg, nns_file=str(tmp_path / 'short.npz')))
    nns = write_nns(str(tmp_path / 'perm.npz'), 10)
    np.savez(tmp_path / 'perm.npz', nns=nns[::-1])
    with pytest.raises(ValueError, match='not in the order'):
        DATASETS.build(dict(cfg, nns_file=str(tmp_path / 'perm.npz')))
    with pytest.raises(ValueError, match='neighbour columns'):
        DATASETS.build(dict(cfg, num_neighbors=9))  # exclude_self needs 10 columns, file has 9


def test_dual_dataset_contract(data):
    ds = DATASETS.build(dict(
        type='CoTAPDualDataset',
        coco=subset_cfg(data, ('coco', 'train2017'), 'coco.npz'),
        imagenet=subset_cfg(data, ('imagenet', 'train'), 'in.npz', num_neighbors=3),
        view_pipeline=VIEW))
    assert len(ds) == 10
    raw = ds.prepare_item(7)
    coco_paths = list_images(str(data / 'coco' / 'train2017'))
    in_paths = list_images(str(data / 'imagenet' / 'train'))
    assert raw['img_path'][0] == coco_paths[7] and raw['img_path'][2] == in_paths[7 % 6]
    item = ds[7]
    inputs, sample = item['inputs'], item['data_samples']
    assert len(inputs) == 24
    for idx, x in enumerate(inputs):
        s = 32 if idx % 6 < 2 else 16
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, s, s)
    assert sample.bbox_gc.shape == (2, 2, 2, 6, 4) and sample.bbox_gc.dtype == np.float32
    assert sample.bbox_all.shape == (2, 2, 6, 2, 4) and sample.bbox_all.dtype == np.float32
    np.testing.assert_allclose(sample.bbox_gc[:, :, 0, 0], np.broadcast_to([0, 0, 32, 32],
                                                                           (2, 2, 4)))
    batch = default_collate([ds[i] for i in range(3)])
    assert len(batch['inputs']) == 24 and batch['inputs'][6].shape == (3, 3, 32, 32)
    assert len(batch['data_samples']) == 3


def test_dual_dataset_with_preprocessor(data):
    from cotap_mm.models.utils.data_preprocessor import CoTAPDataPreprocessor
    ds = CoTAPDualDataset(coco=subset_cfg(data, ('coco', 'train2017'), 'coco.npz'),
                          imagenet=subset_cfg(data, ('imagenet', 'train'), 'in.npz', num_neighbors=3),
                          view_pipeline=VIEW)
    out = CoTAPDataPreprocessor()(default_collate([ds[0], ds[1]]), training=True)
    assert len(out['inputs']['student']) == len(out['inputs']['teacher']) == 24
    assert out['inputs']['teacher'][0].dtype == torch.float32
    assert out['inputs']['student'][23].shape == (2, 3, 16, 16)
    assert isinstance(KNNPairDataset, type)
