"""tools/analysis/compare_pca.py: PCA pictures of several backbones side by side. Data, the
OAF checkpoint ``tiny.pth`` and the configs come from the ``probe_assets`` fixture (conftest.py);
a plain ViT checkpoint (no ``oaf.*`` keys, other weights) is made here."""
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest
import torch

from cotap_mm.datasets.folder_datasets import load_label_map
from cotap_mm.models.utils.loading import build_backbone, get_normalization, load_backbone_weights
from cotap_mm.utils.images import load_squashed
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.utils.fileio import atomic_save
from cotap_mm.visualization import (colorize_labels, fit_pca, label_palette, pca_to_rgb,
                                    upsample)

S = 48  # --size: the 3x3 patch grid of the generated 48 px images
PAD, HEADER = 4, 22  # image_grid's padding and column-title strip


@pytest.fixture(scope='module')
def tool(analysis_tool):
    return analysis_tool('compare_pca')


@pytest.fixture(scope='module')
def assets(probe_assets, tmp_path_factory):
    """Paths: the mmseg-layout val images, the seg config, an OAF checkpoint (``oaf``) and a
    plain one (``plain``, with_oaf=False, another seed)."""
    root = tmp_path_factory.mktemp('compare_pca')
    torch.manual_seed(1)
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=16, with_oaf=False)
    plain = atomic_save({'meta': {'note': 'plain'},
                         'state_dict': {'backbone.' + k: v for k, v in vit.state_dict().items()}},
                        str(root / 'plain.pth'))
    return dict(images=str(probe_assets / 'seg' / 'img_dir' / 'val'),
                labels=str(probe_assets / 'seg' / 'ann_dir' / 'val'),
                config=str(probe_assets / 'seg_cfg.py'), oaf=str(probe_assets / 'tiny.pth'),
                plain=plain, root=root)


def _read_png(path):
    return cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _tile(grid, row, col):
    y, x = HEADER + PAD + row * (S + PAD), PAD + col * (S + PAD)
    return grid[y:y + S, x:x + S]


def _reference_pca(config, ckpt, images, with_oaf):
    """The PCA column from scratch: backbone, features of every image, one joint fit."""
    bb, cfg = build_backbone(config, {'model.backbone.with_oaf': with_oaf}, out_type='featmap')
    load_backbone_weights(bb, ckpt)
    mean, std = get_normalization(cfg)
    with torch.no_grad():
        feats = [bb(load_squashed(p, S, mean, std)[1][None])[-1][0].permute(1, 2, 0).numpy()
                 for p in images]  # (3, 3, C) each
    pca = fit_pca(feats)
    return [upsample(pca_to_rgb(f, pca), (S, S)) for f in feats]


def test_picture_columns_match_direct_computation(tool, assets, tmp_path):
    out = str(tmp_path / 'cmp.png')
    path = tool.main([assets['config'], assets['oaf'], assets['plain'], '--images',
                      assets['images'], '--out', out, '--size', str(S), '--num-images', '3',
                      '--titles', 'CoTAP', 'init', '--device', 'cpu'])
    assert path == out and osp.isfile(out)
    grid = _read_png(out)
    # 3 rows; columns: image | labels (mmseg layout found) | CoTAP | init
    assert grid.shape == (HEADER + 3 * (S + PAD) + PAD, 4 * (S + PAD) + PAD, 3)
    images = [osp.join(assets['images'], f'{i}.jpg') for i in range(3)]
    mean, std = get_normalization(build_backbone(assets['config'], out_type='featmap')[1])
    palette = label_palette(64)
    oaf_ref = _reference_pca(assets['config'], assets['oaf'], images, True)
    plain_ref = _reference_pca(assets['config'], assets['plain'], images, False)
    for r, img in enumerate(images):
        np.testing.assert_array_equal(_tile(grid, r, 0), load_squashed(img, S, mean, std)[0])
        label = load_label_map(osp.join(assets['labels'], f'{r}.png'), S)
        np.testing.assert_array_equal(
            _tile(grid, r, 1), colorize_labels(label, palette, ignore_index=255))
        np.testing.assert_array_equal(_tile(grid, r, 2), oaf_ref[r])
        np.testing.assert_array_equal(_tile(grid, r, 3), plain_ref[r])
        assert not np.array_equal(_tile(grid, r, 2), _tile(grid, r, 3))
    assert (_tile(grid, 0, 1)[:2] == 0).all()  # the ignored top rows (255) are black


def test_same_checkpoint_twice_gives_the_same_column(tool, assets, tmp_path):
    # outside an mmseg layout: no label column, unless --ann-dir is given
    folder = tmp_path / 'flat'
    folder.mkdir()
    for i in range(2):
        shutil.copy(osp.join(assets['images'], f'{i}.jpg'), folder / f'{i}.jpg')
    base = [assets['config'], assets['oaf'], assets['oaf'], '--images', str(folder),
            '--size', str(S), '--device', 'cpu']
    grid = _read_png(tool.main(base + ['--out', str(tmp_path / 'a.png')]))
    assert grid.shape == (HEADER + 2 * (S + PAD) + PAD, 3 * (S + PAD) + PAD, 3)
    for r in range(2):
        np.testing.assert_array_equal(_tile(grid, r, 1), _tile(grid, r, 2))
    grid = _read_png(tool.main(base + ['--out', str(tmp_path / 'b.png'), '--ann-dir',
                                       assets['labels']]))
    assert grid.shape[1] == 4 * (S + PAD) + PAD


def test_with_oaf_follows_the_checkpoint(assets, probe_assets):
    from mmengine.logging import MMLogger

    from cotap_mm.models.utils.loading import load_checkpoint_backbone
    from mmengine.config import Config
    logger = MMLogger.get_instance('test_compare_pca')
    cfg = Config.fromfile(assets['config'])
    assert load_checkpoint_backbone(cfg, assets['oaf'], 'backbone.', logger).with_oaf
    for ckpt in (assets['plain'], str(probe_assets / 'tiny_no_oaf.pth')):
        assert not load_checkpoint_backbone(cfg, ckpt, 'backbone.', logger).with_oaf
    # strict: a config of another width refuses the checkpoint, listing the keys
    cfg.merge_from_dict({'model.backbone.arch': 'small'})
    with pytest.raises(KeyError, match='shape mismatch'):
        load_checkpoint_backbone(cfg, assets['plain'], 'backbone.', logger)


def test_errors_name_the_argument(tool, assets, tmp_path):
    def run(*extra, config=assets['config'], ckpts=(assets['oaf'], )):
        return tool.main([config, *ckpts, '--images', assets['images'], '--out',
                          str(tmp_path / 'x.png'), '--size', str(S), '--device', 'cpu', *extra])

    with pytest.raises(FileNotFoundError, match='CKPT .*missing.pth'):
        run(ckpts=(assets['oaf'], str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match='--titles: 2 titles for 1'):
        run('--titles', 'a', 'b')
    empty = tmp_path / 'empty'
    empty.mkdir()
    for images, error in ((empty, ValueError), (tmp_path / 'missing.jpg', FileNotFoundError)):
        with pytest.raises(error, match='--images: (no images|image path not found)'):
            tool.main([assets['config'], assets['oaf'], '--images', str(images), '--out',
                       str(tmp_path / 'x.png')])
    vit_cfg = tmp_path / 'vit.py'
    vit_cfg.write_text("model = dict(type='ImageClassifier', backbone=dict("
                       "type='VisionTransformer', arch='tiny'))\n")
    with pytest.raises(ValueError, match='CONFIG .*not a CoTAPVisionTransformer'):
        run(config=str(vit_cfg))
    with pytest.raises(FileNotFoundError, match='--ann-dir: no label map'):
        run('--ann-dir', str(empty))
    with pytest.raises(ValueError, match='--size 40 is not a multiple'):
        run('--size', '40')
    assert not osp.exists(tmp_path / 'x.png')


def test_colorize_labels_ignore_index():
    labels = np.array([[0, 255], [70, 1]])
    palette = label_palette(71)
    out = colorize_labels(labels, palette, ignore_index=255, ignore_colour=(9, 9, 9))
    np.testing.assert_array_equal(out[0, 1], [9, 9, 9])
    np.testing.assert_array_equal(out[1, 0], palette[70])
    with pytest.raises(ValueError, match='palette'):
        colorize_labels(labels, palette)  # 255 is a label without ignore_index
