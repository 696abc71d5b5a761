"""The evaluation protocols by name (docs/probes.md, "Evaluation protocols by name"): each
protocol config loads with the settings of its paper's released code, builds with mmseg's
registry on a tiny backbone and computes its loss at the protocol's label size; the NeCo
pipelines produce 448-px images and 100 x 100 masks; the COCO-Stuff-15 table and conversion;
the Hummingbird tool's defaults are the reference's."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine import Config
from PIL import Image

from conftest import load_tool
from test_mmseg_downstream import CFG_DIR, _make_mini_cocostuff, mmseg_scope  # noqa: F401

import cotap_mm.segmentation  # noqa: F401
from cotap_mm.datasets.coco_stuff27 import (COCOSTUFF15_CLASSES, COCOSTUFF27_CLASSES,
                                            FINE_TO_COARSE, COCOStuff15Dataset,
                                            fine_to_coarse_lut)

PROTOCOLS = sorted(glob.glob(osp.join(CFG_DIR, 'protocol-*.py')))
# name: (classes, train loop length, train image side, label side (None: original), optimizer,
#        lr, per-GPU batch, loss over labelled pixels only, test mode)
EXPECTED = {
    'dinov2_vit-s16_linear_ade20k-512': (150, ('max_iters', 40000), 512, None, 'AdamW', 1e-3, 2,
                                         False, 'slide'),
    'dinov2_vit-s16_linear_voc12-512': (21, ('max_iters', 40000), 512, None, 'AdamW', 1e-3, 2,
                                        False, 'slide'),
    'neco_vit-s16_linear_voc12aug-100': (21, ('max_epochs', 20), 448, 100, 'SGD', 1e-2, 128,
                                         True, 'whole'),
    'neco_vit-s16_linear_coco-stuff15-100': (15, ('max_epochs', 20), 448, 100, 'SGD', 1e-2, 128,
                                             True, 'whole'),
}


def _name(path):
    return osp.basename(path)[len('protocol-'):-3]


def _train_steps(cfg):
    dataset = cfg.train_dataloader.dataset
    return {t.type: t for t in (dataset.get('datasets') or [dataset])[0].pipeline}


def test_protocol_configs_present():
    assert sorted(map(_name, PROTOCOLS)) == sorted(EXPECTED)


@pytest.mark.parametrize('path', PROTOCOLS, ids=_name)
def test_protocol_config(path, mmseg_scope):  # noqa: F811
    from mmseg.registry import MODELS
    (num_classes, (loop_key, loop_len), crop, label, optim, lr, batch, non_ignore,
     mode) = EXPECTED[_name(path)]
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmseg'
    assert getattr(cfg.train_cfg, loop_key) == loop_len == cfg.train_cfg.val_interval
    assert cfg.optim_wrapper.optimizer.type == optim and cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.model.test_cfg.mode == mode
    head = cfg.model.decode_head
    if optim == 'AdamW':  # DINOv2's head: BatchNorm of the features, then the 1x1 conv
        assert head.type == 'BNLinearHead' and head.norm_cfg.type == 'SyncBN'
        assert head.dropout_ratio == 0.
    else:
        assert head.type == 'FCNHead' and head.num_convs == 0 and head.norm_cfg is None
    assert head.loss_decode.avg_non_ignore is non_ignore
    steps = _train_steps(cfg)
    test_steps = [t for t in cfg.test_dataloader.dataset.pipeline]
    if optim == 'AdamW':  # DINOv2: random rescale + 512 crop, keep-ratio test, original labels
        assert tuple(steps['RandomCrop'].crop_size) == (crop, crop)
        assert steps['RandomResize'].ratio_range == (0.5, 2.0)
        assert 'PhotoMetricDistortion' in steps
        assert tuple(cfg.model.test_cfg.crop_size) == (crop, crop)
        assert [t.type for t in test_steps][:2] == ['LoadImageFromFile', 'Resize']
        assert test_steps[1].keep_ratio and 'SegLabelResize' not in [t.type for t in test_steps]
        warm, poly = cfg.param_scheduler
        assert (warm.type, warm.start_factor, warm.end) == ('LinearLR', 1e-6, 1500)
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 1.0, 0., loop_len)
        assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
    else:  # NeCo: 448 crops (scale 0.8-1), 100 x 100 masks, squashed val images
        assert steps['SegRandomResizedCrop'].size == crop
        assert steps['SegRandomResizedCrop'].scale == (0.8, 1.0)
        assert steps['SegLabelResize'].size == label
        resize = next(t for t in test_steps if t.type == 'Resize')
        assert tuple(resize.scale) == (crop, crop) and not resize.keep_ratio
        assert [t.size for t in test_steps if t.type == 'SegLabelResize'] == [crop, label]
        assert cfg.param_scheduler == []
        assert cfg.optim_wrapper.optimizer.momentum == 0.9
        assert cfg.optim_wrapper.optimizer.weight_decay == 1e-4
        assert cfg.train_dataloader.drop_last is True

    # the real model, then a tiny backbone computing the protocol's loss at its label size
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert model.decode_head.num_classes == num_classes
    assert model.decode_head.conv_seg.in_channels == 768
    cfg.model.backbone.update(arch='tiny', frozen_stages=2)
    cfg.model.decode_head.update(in_channels=128, channels=128)
    if head.type == 'BNLinearHead':  # one CPU process: plain BN
        cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    model = MODELS.build(cfg.model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    bn = {'decode_head.bn.weight', 'decode_head.bn.bias'} if head.type == 'BNLinearHead' else set()
    assert trainable == {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'} | bn
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    side = 64  # a crop of the protocol's shape, shrunk
    lab = label if label is not None else side
    samples = []
    for i in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(side, side), pad_shape=(side, side)))
        seg = torch.full((1, lab, lab), 255, dtype=torch.long)
        seg[:, :lab // 2] = i % num_classes
        sample.gt_sem_seg = PixelData(data=seg)
        samples.append(sample)
    torch.manual_seed(0)
    losses = model.loss(torch.rand(2, 3, side, side), samples)
    assert torch.isfinite(losses['decode.loss_ce'])


def test_neco_pipelines(tmp_path, mmseg_scope):  # noqa: F811
    from mmcv.transforms import Compose
    cfg = Config.fromfile(osp.join(CFG_DIR, 'protocol-neco_vit-s16_linear_voc12aug-100.py'))
    img = (np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)
    seg = np.zeros((300, 500), np.uint8)
    seg[:, 250:] = 7
    Image.fromarray(img).save(tmp_path / 'a.jpg')
    Image.fromarray(seg, mode='L').save(tmp_path / 'a.png')
    item = dict(img_path=str(tmp_path / 'a.jpg'), seg_map_path=str(tmp_path / 'a.png'),
                reduce_zero_label=False, seg_fields=[])
    test = Compose(cfg.test_pipeline)(dict(item))
    assert tuple(test['inputs'].shape) == (3, 448, 448)
    assert tuple(test['data_samples'].gt_sem_seg.shape) == (100, 100)
    assert test['data_samples'].ori_shape == (100, 100)  # the evaluation shape
    labels = test['data_samples'].gt_sem_seg.data[0]
    assert (labels[:, :49] == 0).all() and (labels[:, 51:] == 7).all()
    train = Compose(cfg.train_pipeline)(dict(item))
    assert tuple(train['inputs'].shape) == (3, 448, 448)
    assert tuple(train['data_samples'].gt_sem_seg.shape) == (100, 100)


def test_coco_stuff15_table():
    assert len(COCOSTUFF15_CLASSES) == 15 and list(COCOSTUFF15_CLASSES) == sorted(
        COCOSTUFF15_CLASSES)
    assert COCOSTUFF15_CLASSES[:3] == ('building', 'ceiling', 'floor')
    lut15, lut27 = fine_to_coarse_lut(15), fine_to_coarse_lut(27)
    for fine, coarse in FINE_TO_COARSE.items():
        if coarse < 12:  # a thing: ignored
            assert lut15[fine] == 255, fine
        else:  # the same stuff super-class, renumbered
            assert COCOSTUFF15_CLASSES[lut15[fine]] == COCOSTUFF27_CLASSES[lut27[fine]]
    assert lut15[255] == 255 and sorted(set(lut15[:182].tolist())) == [*range(15), 255]
    with pytest.raises(ValueError, match='27 or 15'):
        fine_to_coarse_lut(21)


def test_coco_stuff15_conversion(tmp_path, mmseg_scope):  # noqa: F811
    converter = load_tool('dataset_converters/coco_stuff27')
    root = tmp_path / 'cocostuff'
    _make_mini_cocostuff(root)  # 8 train / 4 val; raw 0, 1 (things), 100 (floor), 156 (sky)
    totals = converter.main([str(root), '--classes', '15', '--all-images', '--sample',
                             'train2017=0.5', '--seed', '3'])
    assert totals == {'train2017': 4, 'val2017': 4}
    listed = (root / 'annotations15' / 'train2017.txt').read_text().split()
    assert len(listed) == 4 and listed == sorted(listed)
    assert sorted(p.stem for p in (root / 'annotations15' / 'train2017').iterdir()) == listed
    assert not (root / 'annotations15' / 'val2017.txt').exists()  # val: every image
    floor, sky = COCOSTUFF15_CLASSES.index('floor'), COCOSTUFF15_CLASSES.index('sky')
    for path in (root / 'annotations15' / 'val2017').iterdir():
        raw = np.array(Image.open(root / 'annotations' / 'val2017' / path.name))
        out = np.array(Image.open(path))
        expected = np.select([raw == 100, raw == 156], [floor, sky], 255)
        np.testing.assert_array_equal(out, expected)
    # the same seed draws the same list; the dataset reads it as the config does
    converter.main([str(root), '--classes', '15', '--all-images', '--splits', 'train2017',
                    '--sample', 'train2017=0.5', '--seed', '3', '-o', str(tmp_path / 'again')])
    assert (tmp_path / 'again' / 'train2017.txt').read_text().split() == listed
    cfg = Config.fromfile(osp.join(CFG_DIR, 'protocol-neco_vit-s16_linear_coco-stuff15-100.py'))
    ds_cfg = dict(cfg.train_dataloader.dataset, data_root=str(root), pipeline=[])
    ds_cfg.pop('type')
    dataset = COCOStuff15Dataset(**ds_cfg)
    assert len(dataset) == 4 and dataset.metainfo['classes'] == COCOSTUFF15_CLASSES
    with pytest.raises(SystemExit):
        converter.main([str(root), '--classes', '15', '--all-images', '--sample',
                        'train2017=1.5'])
    with pytest.raises(SystemExit):
        converter.main([str(root), '--classes', '15', '--all-images', '--splits', 'val2017',
                        '--sample', 'train2017=0.1'])


def test_hummingbird_protocol_defaults():
    tool = load_tool('analysis/hummingbird')
    args = tool.parse_args(['cfg.py', 'ckpt.pth', '--data-root', 'data/voc', '--num-classes',
                            '21'])
    # open-hummingbird-eval's README VOC setting: 512 px, k = 30, T = 0.02, 2 augmentation
    # epochs, a memory of 1024 x 10^4 patches, RandomResizedCrop scale (0.5, 2.0), jitter 0.1
    assert (args.size, args.num_neighbors, args.temperature) == (512, 30, 0.02)
    assert (args.augmentation_epochs, args.memory_size) == (2, 1024 * 10 ** 4)
    assert tuple(args.scale) == (0.5, 2.0) and args.jitter == 0.1


def test_bn_linear_head(mmseg_scope):  # noqa: F811
    """DINOv2's head: the 1x1 classifier of the batch-normalised features, nothing else."""
    from mmseg.registry import MODELS
    head = MODELS.build(dict(type='BNLinearHead', in_channels=8, channels=8, num_classes=3,
                             dropout_ratio=0., norm_cfg=dict(type='BN', requires_grad=True)))
    x = torch.randn(2, 8, 5, 7)
    head.train()
    out = head([x])
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    ref = torch.nn.functional.conv2d((x - mean) / (var + 1e-5).sqrt(), head.conv_seg.weight,
                                     head.conv_seg.bias)
    assert out.shape == (2, 3, 5, 7) and torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match='channels .4. must equal in_channels .8.'):
        MODELS.build(dict(type='BNLinearHead', in_channels=8, channels=4, num_classes=3,
                          norm_cfg=dict(type='BN')))
