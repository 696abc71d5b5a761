"""Synthetic scenes (cotap_mm/datasets/synthetic.py) and tools/make_synthetic_scenes.py."""
import colorsys
import hashlib
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from conftest import load_tool

from cotap_mm.datasets import ImageList, synthetic as syn
from cotap_mm.datasets.image_list import list_images

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
tool = load_tool('make_synthetic_scenes')

COUNTS = dict(num_coco=7, num_imagenet=12, num_seg_train=5, num_seg_val=3)
SIZE = 40


def _tree_hashes(root):
    """{relative path: sha1 of the bytes} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = osp.join(dirpath, f)
            with open(p, 'rb') as fh:
                out[osp.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def out_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('syn') / 'data')
    ticks = []
    meta = syn.write_synthetic_dataset(out, seed=3, size=SIZE, progress=lambda: ticks.append(1),
                                       **COUNTS)
    assert len(ticks) == sum(COUNTS.values())
    assert meta['counts'] == dict(coco=7, imagenet=12, seg_train=5, seg_val=3)
    return out


def test_class_table():
    assert len(syn.CLASSES) == len(syn.PALETTE) == len(set(syn.CLASSES)) == 12
    assert syn.CLASSES == syn.THING_CLASSES + syn.STUFF_CLASSES
    assert all(len(c) == 3 and all(0 <= x <= 255 for x in c) for c in syn.PALETTE)
    assert len({tuple(c) for c in syn.PALETTE}) == 12  # distinguishable in label pictures


def test_generate_scene_deterministic_and_valid():
    img, label, info = syn.generate_scene(np.random.default_rng(5), 64)
    img2, label2, info2 = syn.generate_scene(np.random.default_rng(5), 64)
    img3, _, _ = syn.generate_scene(np.random.default_rng(6), 64)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert label.dtype == np.uint8 and label.shape == (64, 64)
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(label, label2)
    assert info == info2
    assert not np.array_equal(img, img3)
    assert label.max() < len(syn.CLASSES)  # every pixel labelled, no 255
    json.dumps(info)  # serialisable
    assert 1 <= len(info['objects']) <= 4
    things = np.bincount(label.ravel(), minlength=12)[:8]
    assert info['dominant'] == int(things.argmax())
    assert info['dominant_name'] == syn.CLASSES[info['dominant']]
    assert info['stuff'] == [int(c) for c in np.unique(label) if c >= 8]
    # The last-painted object is on top: it owns pixels.
    assert things[info['objects'][-1]['cls']] > 0


def test_every_class_appears_and_varies():
    present = np.zeros(12, dtype=int)
    n_objects = []
    thing_colours = {c: [] for c in range(8)}
    for i in range(100):
        img, label, info = syn.generate_scene(np.random.default_rng([9, i]), 48)
        present += np.bincount(label.ravel(), minlength=12) > 0
        n_objects.append(len(info['objects']))
        for c in np.unique(label[label < 8]):
            thing_colours[int(c)].append(img[label == c].reshape(-1, 3).mean(0))
    assert (present >= 10).all(), present  # every class recurs across scenes
    assert set(n_objects) == {1, 2, 3, 4}
    # Intra-class colour variation: the mean colour of a class is not constant.
    for c, cols in thing_colours.items():
        assert np.std(np.array(cols), axis=0).max() > 5, syn.CLASSES[c]


def _instance_mean_colours(colour_mode, n=120, size=48):
    """{class: [mean RGB of the class's pixels in one scene]} over n scenes, for each class with
    exactly one instance in the scene (stuff: always one region) and at least 20 pixels."""
    out = {c: [] for c in range(12)}
    for i in range(n):
        img, label, info = syn.generate_scene(np.random.default_rng([11, i]), size,
                                              colour_mode=colour_mode)
        assert info['colour_mode'] == colour_mode
        instances = np.bincount([o['cls'] for o in info['objects']], minlength=12)
        for c in np.unique(label):
            m = label == c
            if (c < 8 and instances[c] != 1) or m.sum() < 20:
                continue
            out[int(c)].append(img[m].reshape(-1, 3).mean(0))
    return out


def _hue_deg(rgb):
    return 360. * colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255.))[0]


def _circular_stats(hues_deg, centre_deg):
    """(resultant length in [0, 1], largest |angle to centre_deg| in degrees) of hue angles."""
    h = np.deg2rad(np.asarray(hues_deg))
    resultant = float(np.abs(np.exp(1j * h).mean()))
    dev = np.angle(np.exp(1j * (h - np.deg2rad(centre_deg))))
    return resultant, float(np.rad2deg(np.abs(dev)).max())


# The class's nominal hue (display colour, and the centre of its 'per_class' hue range).
NOMINAL_HUE = [t[3] for t in syn.scenes._THINGS] + [s[2] for s in syn.scenes._STUFF]


def test_default_colour_is_per_instance_not_per_class():
    cols = _instance_mean_colours('per_instance')
    for c, rgbs in cols.items():
        assert len(rgbs) >= 10, syn.CLASSES[c]
        hues = [_hue_deg(x) for x in rgbs]
        resultant, worst = _circular_stats(hues, NOMINAL_HUE[c])
        # Hues spread around the whole circle: uniform hues give a resultant ~ 1/sqrt(n).
        assert resultant < 0.5, (syn.CLASSES[c], resultant)
        assert worst > 120, (syn.CLASSES[c], worst)


def test_per_class_colour_mode_keeps_class_hue_ranges():
    cols = _instance_mean_colours('per_class')
    for c, rgbs in cols.items():
        assert len(rgbs) >= 10, syn.CLASSES[c]
        resultant, worst = _circular_stats([_hue_deg(x) for x in rgbs], NOMINAL_HUE[c])
        # Main hue within +-18 deg (things) / +-12 deg (stuff) of the class hue; the texture's
        # second colour (hue offset up to 30 deg) pulls the mean a little further.
        assert resultant > 0.9, (syn.CLASSES[c], resultant)
        assert worst < 40, (syn.CLASSES[c], worst)


def _nearest_mean_colour_accuracy(cols):
    """Accuracy of a nearest-class-mean classifier on an instance's mean colour (even instances
    fit the class means, odd ones are classified)."""
    x = np.concatenate([np.array(cols[c]) for c in range(12)])
    y = np.concatenate([np.full(len(cols[c]), c) for c in range(12)])
    fit = np.arange(len(y)) % 2 == 0
    means = np.stack([x[fit & (y == c)].mean(0) for c in range(12)])
    pred = ((x[~fit, None] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y[~fit]).mean())


def test_colour_alone_gives_the_class_only_in_per_class_mode():
    # chance is 1/12 ~ 0.08
    assert _nearest_mean_colour_accuracy(_instance_mean_colours('per_class')) > 0.5
    assert _nearest_mean_colour_accuracy(_instance_mean_colours('per_instance')) < 0.2


def test_colour_mode_changes_colour_only():
    """Same rng state: the same layout, objects and labels in both modes, other colours."""
    for i in range(10):
        for mode in ('scene', 'object_centric'):
            rng = np.random.default_rng([12, i])
            a, la, ia = syn.generate_scene(rng, 48, mode)
            after_a = rng.random()
            rng = np.random.default_rng([12, i])
            b, lb, ib = syn.generate_scene(rng, 48, mode, colour_mode='per_class')
            assert rng.random() == after_a  # both modes use as many draws
            np.testing.assert_array_equal(la, lb)
            assert dict(ia, colour_mode='') == dict(ib, colour_mode='')
            assert ia['colour_mode'] == 'per_instance' and ib['colour_mode'] == 'per_class'
            assert np.abs(a.astype(int) - b).mean() > 10


def test_object_centric_main_class():
    hits = 0
    for i in range(40):
        _, label, info = syn.generate_scene(np.random.default_rng(i), 48, 'object_centric',
                                            main_class=i % 8)
        hits += info['dominant'] == i % 8
        assert info['objects'][-1]['cls'] == i % 8  # painted last: fully visible
    assert hits >= 36


def test_generate_scene_bad_args():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='size'):
        syn.generate_scene(rng, 8)
    with pytest.raises(ValueError, match='main_class'):
        syn.generate_scene(rng, 32, 'object_centric', main_class=8)
    with pytest.raises(ValueError, match='mode'):
        syn.generate_scene(rng, 32, 'panorama')
    with pytest.raises(ValueError, match='colour_mode'):
        syn.generate_scene(rng, 32, colour_mode='per_pixel')
    with pytest.raises(ValueError, match='colour_mode'):
        syn.write_synthetic_dataset('unused', num_coco=1, colour_mode='grey')


def test_layout_and_counts(out_dir):
    coco = list_images(osp.join(out_dir, 'coco', 'train2017'))
    assert [osp.basename(p) for p in coco] == [f'{i:012d}.jpg' for i in range(7)]
    inet = list_images(osp.join(out_dir, 'imagenet', 'train'))
    assert len(inet) == 12
    for p in inet:  # <class>/<class>_<idx>.jpg
        cls = osp.basename(osp.dirname(p))
        assert cls in syn.THING_CLASSES and osp.basename(p).startswith(cls + '_')
    for split, n in (('train', 5), ('val', 3)):
        imgs = sorted(os.listdir(osp.join(out_dir, 'seg', 'img_dir', split)))
        anns = sorted(os.listdir(osp.join(out_dir, 'seg', 'ann_dir', split)))
        assert len(imgs) == len(anns) == n
        assert [osp.splitext(f)[0] for f in imgs] == [osp.splitext(f)[0] for f in anns]
        for fi, fa in zip(imgs, anns):
            img = cv2.imread(osp.join(out_dir, 'seg', 'img_dir', split, fi))
            ann = cv2.imread(osp.join(out_dir, 'seg', 'ann_dir', split, fa), cv2.IMREAD_UNCHANGED)
            assert img.shape == (SIZE, SIZE, 3) and ann.shape == (SIZE, SIZE)
            assert ann.dtype == np.uint8 and ann.max() < 12
    classes = json.load(open(osp.join(out_dir, 'seg', 'classes.json')))
    assert classes['classes'] == list(syn.CLASSES) and classes['palette'] == syn.PALETTE
    meta = json.load(open(osp.join(out_dir, 'meta.json')))
    assert meta['seed'] == 3 and meta['size'] == SIZE
    assert meta['generator'] == syn.GENERATOR_VERSION
    assert meta['colour_mode'] == 'per_instance'  # the default
    assert sum(meta['imagenet_per_class'].values()) == 12
    assert not osp.exists(out_dir + '.tmp')


def test_splits_disjoint(out_dir):
    h = _tree_hashes(out_dir)
    by_split = {}
    for rel, d in h.items():
        if rel.endswith('.jpg'):
            key = rel.split(os.sep)[0] + ('/' + rel.split(os.sep)[2] if rel.startswith('seg')
                                          else '')
            by_split.setdefault(key, set()).add(d)
    assert set(by_split) == {'coco', 'imagenet', 'seg/train', 'seg/val'}
    keys = list(by_split)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            assert not by_split[keys[i]] & by_split[keys[j]], (keys[i], keys[j])


def test_byte_identical_and_seed_dependent(out_dir, tmp_path):
    again = str(tmp_path / 'again')
    syn.write_synthetic_dataset(again, seed=3, size=SIZE, **COUNTS)
    assert _tree_hashes(again) == _tree_hashes(out_dir)
    other = str(tmp_path / 'other')
    syn.write_synthetic_dataset(other, seed=4, size=SIZE, **COUNTS)
    ho, h = _tree_hashes(other), _tree_hashes(out_dir)
    assert ho['coco/train2017/000000000000.jpg'] != h['coco/train2017/000000000000.jpg']
    # A split's files do not depend on the size of the other splits.
    fewer = str(tmp_path / 'fewer')
    syn.write_synthetic_dataset(fewer, seed=3, size=SIZE, num_coco=2, num_imagenet=0,
                                num_seg_train=5, num_seg_val=0)
    hf = _tree_hashes(fewer)
    for rel in hf:
        if rel.endswith(('.jpg', '.png')):
            assert hf[rel] == h[rel], rel


def test_mmseg_dataset_loads(out_dir):
    import mmseg.datasets  # noqa: F401
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations
    classes = json.load(open(osp.join(out_dir, 'seg', 'classes.json')))
    for split, n in (('train', 5), ('val', 3)):
        ds = BaseSegDataset(
            data_root=osp.join(out_dir, 'seg'),
            data_prefix=dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
            metainfo=dict(classes=tuple(classes['classes']), palette=classes['palette']),
            img_suffix='.jpg', seg_map_suffix='.png',
            pipeline=[LoadImageFromFile(), LoadAnnotations()])
        assert len(ds) == n
        assert ds.metainfo['classes'] == syn.CLASSES
        item = ds[0]
        assert item['img'].shape == (SIZE, SIZE, 3)
        seg = item['gt_seg_map']
        assert seg.shape == (SIZE, SIZE) and seg.max() < 12
        assert len(np.unique(seg)) >= 2  # stuff + at least one thing


def test_image_list_sees_folders(out_dir):
    coco = ImageList(data_root=osp.join(out_dir, 'coco'), data_prefix='train2017')
    inet = ImageList(data_root=osp.join(out_dir, 'imagenet'), data_prefix='train')
    assert len(coco) == 7 and len(inet) == 12
    assert coco.get_img_path(0).endswith('000000000000.jpg')
    assert coco[0]['img'].shape == (SIZE, SIZE, 3)
    assert [inet.get_img_path(i) for i in range(12)] == \
        list_images(osp.join(out_dir, 'imagenet', 'train'))


def test_overwrite_rules(tmp_path):
    out = str(tmp_path / 'o')
    small = dict(size=24, num_coco=1, num_imagenet=0, num_seg_train=0, num_seg_val=0)
    syn.write_synthetic_dataset(out, seed=0, **small)
    with pytest.raises(FileExistsError, match='--force'):
        syn.write_synthetic_dataset(out, seed=1, **small)
    syn.write_synthetic_dataset(out, seed=1, force=True, **dict(small, num_coco=2))
    assert json.load(open(osp.join(out, 'meta.json')))['seed'] == 1
    assert len(os.listdir(osp.join(out, 'coco', 'train2017'))) == 2
    assert not osp.exists(out + '.old') and not osp.exists(out + '.tmp')
    # A folder that this generator did not write is never replaced, even with force.
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'precious.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='no meta.json'):
        syn.write_synthetic_dataset(str(foreign), force=True, **small)
    assert (foreign / 'precious.txt').read_text() == 'keep me'
    # An existing empty folder is fine.
    empty = tmp_path / 'empty'
    empty.mkdir()
    syn.write_synthetic_dataset(str(empty), **small)
    assert osp.isfile(empty / 'meta.json')
    with pytest.raises(ValueError, match='num_coco'):
        syn.write_synthetic_dataset(str(tmp_path / 'x'), num_coco=-1)


def test_tool_cli(tmp_path, capsys):
    out = str(tmp_path / 'cli')
    png = str(tmp_path / 'prev.png')
    meta = tool.main([out, '--seed', '2', '--size', '32', '--num-coco', '3', '--num-imagenet',
                      '8', '--num-seg-train', '2', '--num-seg-val', '1', '--preview', png,
                      '--preview-num', '2'])
    assert meta['counts'] == dict(coco=3, imagenet=8, seg_train=2, seg_val=1)
    assert len(list_images(osp.join(out, 'imagenet', 'train'))) == 8
    prev = cv2.imread(png)
    assert prev.shape == (2 * 32 * 2, 2 * 32 * 2, 3)
    with pytest.raises(FileExistsError):
        tool.main([out, '--size', '32', '--num-coco', '1'])
    tool.main([out, '--size', '32', '--num-coco', '1', '--num-imagenet', '0',
               '--num-seg-train', '0', '--num-seg-val', '0', '--force'])
    assert len(os.listdir(osp.join(out, 'coco', 'train2017'))) == 1
    per_class = str(tmp_path / 'per_class')
    meta = tool.main([per_class, '--seed', '2', '--size', '32', '--num-coco', '3',
                      '--num-imagenet', '0', '--num-seg-train', '0', '--num-seg-val', '0',
                      '--colour-mode', 'per_class'])
    assert meta['colour_mode'] == 'per_class'
    assert json.load(open(osp.join(per_class, 'meta.json')))['colour_mode'] == 'per_class'
    written = cv2.cvtColor(cv2.imread(osp.join(per_class, 'coco', 'train2017',
                                               '000000000000.jpg')), cv2.COLOR_BGR2RGB)
    err = {mode: np.abs(written.astype(int) - syn.generate_scene(
        syn.files._rng(2, 'coco', 0), 32, colour_mode=mode)[0]).mean() for mode in syn.COLOUR_MODES}
    assert err['per_class'] * 3 < err['per_instance'], err  # JPEG error vs other colours
    with pytest.raises(SystemExit):
        tool.parse_args([out, '--colour-mode', 'grey'])
    with pytest.raises(SystemExit):
        tool.parse_args([])  # neither OUT nor --preview
    with pytest.raises(SystemExit):
        tool.parse_args([out, '--num-seg-val', '-1'])


def test_pretraining_scene_classes_follow_the_written_files(out_dir):
    for subset, folder in (('coco', 'coco/train2017'), ('imagenet', 'imagenet/train')):
        root = osp.join(out_dir, folder)
        classes = syn.pretraining_scene_classes(out_dir, subset)
        assert sorted(classes) == sorted(osp.relpath(p, root) for p in list_images(root))
        assert all(c and list(c) == sorted(set(c)) for c in classes.values())
        assert len(set(classes.values())) > 1  # the scenes differ
    for rel, c in syn.pretraining_scene_classes(out_dir, 'imagenet').items():
        assert syn.CLASSES.index(rel.split(os.sep)[0]) in c  # the folder's class is visible
    with pytest.raises(ValueError, match='subset'):
        syn.pretraining_scene_classes(out_dir, 'seg')
