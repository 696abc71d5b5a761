"""COCO-Stuff-27: the STEGO fine->coarse table, tools/dataset_converters/coco_stuff27.py on a
tiny fake COCO-Stuff tree (raw stuffthingmaps + curated lists), its refusal of mmseg's
*_labelTrainIds.png maps, and COCOStuff27Dataset reading the converted labels."""
import itertools
import os.path as osp

import numpy as np
import pytest

from conftest import load_tool
from mmengine.registry import DefaultScope
from PIL import Image

import cotap_mm.segmentation  # noqa: F401  (registers the mmseg components)
from cotap_mm.datasets.coco_stuff27 import (COCOSTUFF27_CLASSES, FINE_TO_COARSE,
                                            UNUSED_RAW_IDS, COCOStuff27Dataset,
                                            fine_to_coarse_lut)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
converter = load_tool('dataset_converters/coco_stuff27')

# raw value -> expected coarse class, a few from each group (STEGO's src/data.py table)
SPOT_CHECKS = {0: 9, 1: 11, 8: 11, 9: 8, 24: 7, 43: 5, 51: 2, 71: 0, 77: 1, 83: 4, 91: 17,
               93: 22, 101: 12, 105: 23, 120: 14, 147: 26, 170: 18, 176: 18, 179: 19, 181: 24}
# raw values used by the fake maps, and the coarse classes they become
RAW_VALUES = (0, 1, 100, 105, 156, 255)  # person, bicycle, carpet, clouds, sky-other, unlabeled
COARSE = {0: 9, 1: 11, 100: 13, 105: 23, 156: 23, 255: 255}


_SCOPE_IDS = itertools.count()


@pytest.fixture
def mmseg_scope():
    # pipelines are built through the default scope's TRANSFORMS (as under a Runner)
    return DefaultScope.get_instance(f'test_coco_stuff27_{next(_SCOPE_IDS)}',
                                     scope_name='mmseg')


def make_raw_cocostuff(root, ids_per_split=None, size=32, seed=0):
    """A fake COCO-Stuff tree; returns {split: [listed ids]}. Each split has one extra image
    outside the curated list."""
    ids_per_split = ids_per_split or {'train2017': 6, 'val2017': 3}
    rng = np.random.default_rng(seed)
    listed = {}
    for split, n in ids_per_split.items():
        (root / 'images' / split).mkdir(parents=True)
        (root / 'annotations' / split).mkdir(parents=True)
        (root / 'curated' / split).mkdir(parents=True, exist_ok=True)
        ids = [f'{split[:3]}{i:09d}' for i in range(n + 1)]
        for image_id in ids:
            raw = rng.choice(RAW_VALUES, size=(size // 8, size // 8)).astype(np.uint8)
            raw = np.kron(raw, np.ones((8, 8), np.uint8))  # 8x8 blocks
            Image.fromarray(raw, mode='L').save(root / 'annotations' / split / f'{image_id}.png')
            img = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(img).save(root / 'images' / split / f'{image_id}.jpg')
        listed[split] = ids[:n]
        list_file = root / converter.DEFAULT_LISTS[split]
        list_file.write_text(''.join(f'{i}\n' for i in listed[split]))
    return listed


def test_fine_to_coarse_table():
    assert len(COCOSTUFF27_CLASSES) == 27 and len(set(COCOSTUFF27_CLASSES)) == 27
    assert COCOSTUFF27_CLASSES[9] == 'person' and COCOSTUFF27_CLASSES[23] == 'sky'
    assert sorted(FINE_TO_COARSE) == list(range(182))
    assert set(FINE_TO_COARSE.values()) == set(range(27))
    for fine, coarse in SPOT_CHECKS.items():
        assert FINE_TO_COARSE[fine] == coarse, fine
    # things (raw 0..90) map to 0..11, stuff (91..181) to 12..26
    assert all((fine <= 90) == (coarse <= 11) for fine, coarse in FINE_TO_COARSE.items())
    lut = fine_to_coarse_lut()
    assert lut.shape == (256, ) and lut.dtype == np.uint8
    assert lut[255] == 255 and (lut[182:] == 255).all()
    assert [lut[f] for f in SPOT_CHECKS] == list(SPOT_CHECKS.values())


def test_converter_and_dataset(tmp_path, mmseg_scope):
    root = tmp_path / 'cocostuff'
    listed = make_raw_cocostuff(root)
    totals = converter.main([str(root), '--nproc', '2'])
    assert totals == {'train2017': 6, 'val2017': 3}
    out = root / 'annotations27'
    for split, ids in listed.items():
        written = sorted(p.name for p in (out / split).iterdir())
        assert written == sorted(f'{i}.png' for i in ids)  # only the curated ids, no tmp files
        for image_id in ids:
            raw = np.array(Image.open(root / 'annotations' / split / f'{image_id}.png'))
            coarse = np.array(Image.open(out / split / f'{image_id}.png'))
            assert coarse.dtype == np.uint8 and coarse.shape == raw.shape
            expected = np.vectorize(COARSE.get)(raw)
            np.testing.assert_array_equal(coarse, expected)

    ds = COCOStuff27Dataset(
        data_root=str(root),
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations27/val2017'),
        ann_file='curated/val2017/Coco164kFull_Stuff_Coarse_7.txt',
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='SegLabelResize', size=16), dict(type='PackSegInputs')])
    assert len(ds) == 3  # the extra, unlisted image is not used
    assert ds.metainfo['classes'] == COCOSTUFF27_CLASSES and len(ds.metainfo['palette']) == 27
    info = ds.get_data_info(0)
    assert info['img_path'].endswith(f'images/val2017/{listed["val2017"][0]}.jpg')
    assert info['seg_map_path'].endswith(f'annotations27/val2017/{listed["val2017"][0]}.png')
    item = ds[0]
    labels = item['data_samples'].gt_sem_seg.data
    assert tuple(labels.shape) == (1, 16, 16)
    assert set(labels.unique().tolist()) <= {9, 11, 13, 23, 255}
    assert item['data_samples'].ori_shape == (16, 16)


def test_converter_all_images_and_single_process(tmp_path):
    root = tmp_path / 'cocostuff'
    make_raw_cocostuff(root, {'val2017': 2})
    out = tmp_path / 'out'
    assert converter.main([str(root), '--splits', 'val2017', '--all-images', '-o',
                           str(out)]) == {'val2017': 3}
    assert len(list((out / 'val2017').iterdir())) == 3


def test_converter_refuses_label_train_ids(tmp_path):
    # (1) mmseg's converter output: <id>_labelTrainIds.png and no raw <id>.png
    root = tmp_path / 'cocostuff'
    listed = make_raw_cocostuff(root, {'val2017': 2})
    ann = root / 'annotations' / 'val2017'
    for image_id in listed['val2017'] + ['val000000002']:
        (ann / f'{image_id}.png').rename(ann / f'{image_id}_labelTrainIds.png')
    with pytest.raises(ValueError, match='labelTrainIds.*RAW stuffthingmaps'):
        converter.main([str(root), '--splits', 'val2017'])
    with pytest.raises(ValueError, match='labelTrainIds'):
        converter.main([str(root), '--splits', 'val2017', '--all-images'])

    # (2) train-id content under raw names: values 0..170 that include unused raw ids
    root2 = tmp_path / 'cocostuff2'
    listed = make_raw_cocostuff(root2, {'val2017': 1})
    path = root2 / 'annotations' / 'val2017' / f'{listed["val2017"][0]}.png'
    train_ids = np.full((16, 16), 255, np.uint8)
    train_ids[:8] = UNUSED_RAW_IDS[0]  # e.g. 11: 'stop sign' in train ids, never a raw value
    Image.fromarray(train_ids, mode='L').save(path)
    with pytest.raises(ValueError, match=f'{path.name}.*never uses'):
        converter.main([str(root2), '--splits', 'val2017'])

    # (3) values no COCO-Stuff map has
    Image.fromarray(np.full((16, 16), 200, np.uint8), mode='L').save(path)
    with pytest.raises(ValueError, match=r'outside 0\.\.181'):
        converter.main([str(root2), '--splits', 'val2017'])


def test_converter_usage_errors(tmp_path):
    root = tmp_path / 'cocostuff'
    make_raw_cocostuff(root, {'val2017': 1})
    (root / 'curated' / 'val2017' / 'Coco164kFull_Stuff_Coarse_7.txt').unlink()
    with pytest.raises(SystemExit):
        converter.main([str(root), '--splits', 'val2017'])  # list missing
    with pytest.raises(SystemExit):
        converter.main([str(root), '--splits', 'val2017', '--all-images', '-o',
                        str(root / 'annotations')])  # would overwrite the raw maps


def test_dataset_rejects_train_id_suffix_and_reduce_zero_label(tmp_path):
    with pytest.raises(ValueError, match='labelTrainIds'):
        COCOStuff27Dataset(data_root=str(tmp_path), seg_map_suffix='_labelTrainIds.png',
                           lazy_init=True)
    with pytest.raises(ValueError, match='reduce_zero_label'):
        COCOStuff27Dataset(data_root=str(tmp_path), reduce_zero_label=True, lazy_init=True)
