"""mmseg downstream evaluation: CoTAP's label protocol transforms, the FCN head, the benchmark
configs, and an end-to-end run on a mini COCO-Stuff-27 (mim train mmseg -> mim test mmseg and
tools/test.py give the same mIoU)."""
import glob
import itertools
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import load_tool
import torch
from mmengine import Config
from mmengine.registry import DefaultScope
from PIL import Image

import cotap_mm.segmentation  # noqa: F401
from cotap_mm.datasets.transforms.seg_label_resize import SegLabelResize, SegRandomResizedCrop
from cotap_mm.models.backbones import CoTAPVisionTransformer
from cotap_mm.models.heads.upsample_fcn_head import UpsampleFCNHead

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG_DIR = osp.join(REPO, 'configs', 'benchmarks', 'mmseg')
BASE = osp.join(CFG_DIR, '_base_')
VENV_BIN = osp.dirname(sys.executable)


_SCOPE_IDS = itertools.count()


@pytest.fixture
def mmseg_scope():
    return DefaultScope.get_instance(f'test_mmseg_downstream_{next(_SCOPE_IDS)}',
                                     scope_name='mmseg')


# ---------------------------------------------------------------- transforms


def _results(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 5, size=(h, w)).astype(np.uint8)
    seg[:3] = 255
    img = np.repeat(seg[..., None], 3, axis=2).astype(np.uint8) * 40  # image encodes the label
    return dict(img=img, gt_seg_map=seg.copy(), seg_fields=['gt_seg_map'], img_shape=(h, w),
                ori_shape=(h, w))


def test_seg_label_resize_sets_eval_shape():
    res = _results()
    src = res['gt_seg_map'].copy()
    out = SegLabelResize(size=(12, 16))(res)
    assert out['gt_seg_map'].shape == (12, 16) and out['ori_shape'] == (12, 16)
    assert out['img'].shape == (30, 40, 3)  # the image is untouched
    # nearest: only existing values, no 255/label blending
    assert set(np.unique(out['gt_seg_map'])) <= set(np.unique(src))
    # exact nearest sampling on an integer downscale factor (x0.5)
    out2 = SegLabelResize(size=(15, 20))(_results())
    np.testing.assert_array_equal(out2['gt_seg_map'], src[::2, ::2])
    # set_ori_shape=False keeps ori_shape; upscaling works too
    out3 = SegLabelResize(size=60, set_ori_shape=False)(_results())
    assert out3['gt_seg_map'].shape == (60, 60) and out3['ori_shape'] == (30, 40)
    with pytest.raises(KeyError, match='LoadAnnotations'):
        SegLabelResize(size=8)(dict(img=np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(ValueError, match='size'):
        SegLabelResize(size=0)


def test_seg_random_resized_crop_aligned():
    np.random.seed(0)
    # nearest for the image too, so that image and label must agree pixel for pixel
    t = SegRandomResizedCrop(size=24, scale=(0.36, 1.0), interpolation='nearest')
    areas = []
    for seed in range(20):
        res = t(_results(seed=seed))
        assert res['img'].shape == (24, 24, 3) and res['gt_seg_map'].shape == (24, 24)
        assert res['img_shape'] == (24, 24)
        # same box for image and label: the image still encodes the label
        lab = res['gt_seg_map']
        valid = lab != 255
        np.testing.assert_array_equal(res['img'][..., 0][valid], lab[valid] * 40)
        x1, y1, x2, y2 = res['crop_bbox']
        areas.append((x2 - x1) * (y2 - y1) / (30 * 40))
        ratio = (x2 - x1) / (y2 - y1)
        assert 3 / 4 - 0.1 <= ratio <= 4 / 3 + 0.1
    assert min(areas) >= 0.36 - 0.05 and max(areas) <= 1.0
    assert len(set(areas)) > 5  # random
    # fallback (no draw fits): central crop clamped to the ratio range
    y, x, h, w = SegRandomResizedCrop(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                      max_attempts=1).get_crop_bbox(10, 30)
    assert (h, w) == (10, 10) and x == 10 and y == 0


def test_cotap_val_pipeline_eval_shape(tmp_path, mmseg_scope):
    """Image squashed to val_res, label to target_res, ori_shape = target_res: the segmentor's
    prediction (resized to ori_shape) and the label then match for IoUMetric."""
    from mmcv.transforms import Compose
    img = (np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / 'a.jpg')
    Image.fromarray(np.full((30, 50), 3, np.uint8), mode='L').save(tmp_path / 'a.png')
    cfg = Config.fromfile(osp.join(BASE, 'datasets', 'coco-stuff27_cotap.py'))
    pipeline = Compose(cfg.test_pipeline)
    out = pipeline(dict(img_path=str(tmp_path / 'a.jpg'), seg_map_path=str(tmp_path / 'a.png'),
                        reduce_zero_label=False, seg_fields=[]))
    sample = out['data_samples']
    assert tuple(out['inputs'].shape) == (3, 448, 448)
    assert tuple(sample.gt_sem_seg.shape) == (448, 448)
    assert sample.ori_shape == (448, 448) and sample.img_shape == (448, 448)


# ---------------------------------------------------------------- FCN head


def test_upsample_fcn_head_shapes():
    torch.manual_seed(0)
    head = UpsampleFCNHead(in_channels=128, num_classes=5, norm_cfg=dict(type='BN'))
    assert head.channels == 256 and head.conv_seg.in_channels == 256
    assert [b.proj.out_channels for b in head.blocks] == [512, 384, 256]
    assert [b.reduce.conv.out_channels for b in head.blocks] == [64, 256, 192]  # in/2
    assert isinstance(head.blocks[0].reduce.bn, torch.nn.BatchNorm2d)
    assert isinstance(head.dropout, torch.nn.Dropout) and head.dropout.p == 0.1
    feats = (torch.rand(2, 128, 4, 6), )
    out = head(feats)
    assert out.shape == (2, 5, 32, 48)  # x8
    out.mean().backward()
    assert head.blocks[0].reduce.conv.weight.grad is not None
    # widths as an argument; channels must agree
    head2 = UpsampleFCNHead(in_channels=16, widths=(8, ), num_classes=3, norm_cfg=None,
                            dropout_ratio=0.)
    assert head2((torch.rand(1, 16, 3, 3), )).shape == (1, 3, 6, 6) and head2.dropout is None
    with pytest.raises(ValueError, match='channels'):
        UpsampleFCNHead(in_channels=16, channels=32, num_classes=3, norm_cfg=None)
    # SyncBN (the GPU default) builds; mmengine reverts it to BN when not distributed
    head3 = UpsampleFCNHead(in_channels=16, widths=(8, 8), num_classes=3)
    assert isinstance(head3.blocks[0].reduce.bn, torch.nn.SyncBatchNorm)


# ---------------------------------------------------------------- configs

TOP_CONFIGS = sorted(p for p in glob.glob(osp.join(CFG_DIR, 'cotap_vit-s16_*.py'))
                     if '-depth_' not in p)  # segmentation configs (depth: test_depth_probe.py)
EXPECTED = {  # name: (head, classes, max_iters, per-GPU batch, train crop, label side)
    'linear_coco-stuff27-448': ('FCNHead', 27, 390, 32, 336, 448),
    'fcn_coco-stuff27-448': ('UpsampleFCNHead', 27, 3125, 16, 336, 448),
    'linear_voc12aug-448': ('FCNHead', 21, 781, 16, 336, 448),
    'fcn_voc12aug-336': ('UpsampleFCNHead', 21, 3125, 16, 336, 336),
    'linear_ade20k-448': ('FCNHead', 150, 781, 16, 336, 448),
    'fcn_ade20k-448': ('UpsampleFCNHead', 150, 3125, 16, 336, 448),
    'linear_cityscapes-1024': ('FCNHead', 19, 1562, 8, 896, None),
    'fcn_cityscapes-1024': ('UpsampleFCNHead', 19, 6250, 8, 896, None),
}


def test_all_configs_present():
    names = sorted(osp.basename(p)[len('cotap_vit-s16_'):-3] for p in TOP_CONFIGS)
    assert names == sorted(EXPECTED)


@pytest.mark.parametrize('path', TOP_CONFIGS, ids=lambda p: osp.basename(p)[14:-3])
def test_config_builds(path, mmseg_scope):
    from mmseg.registry import MODELS
    name = osp.basename(path)[len('cotap_vit-s16_'):-3]
    head_type, num_classes, max_iters, batch, crop, label = EXPECTED[name]
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports.imports == ['cotap_mm', 'cotap_mm.segmentation']
    assert cfg.model.backbone.init_cfg.type == 'CoTAPPretrained'
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    assert cfg.train_cfg.max_iters == max_iters == cfg.train_cfg.val_interval
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.optim_wrapper.optimizer.type == 'Adam' and cfg.optim_wrapper.optimizer.lr == 3e-3
    if head_type == 'FCNHead':
        assert cfg.param_scheduler == []
    else:
        (sched, ) = cfg.param_scheduler
        assert (sched.T_max, sched.eta_min, sched.end) == (max_iters + 5, 1e-4, max_iters)
    # the dataset pipelines of docs/method.md §6.1
    steps = {t.type: t for t in (cfg.train_dataloader.dataset.get('datasets') or
                                 [cfg.train_dataloader.dataset])[0].pipeline}
    assert steps['SegRandomResizedCrop'].size == crop
    if label is None:
        assert 'SegLabelResize' not in steps
    else:
        assert steps['SegLabelResize'].size == label
    cfg.model.backbone.init_cfg = None  # no weights here
    model = MODELS.build(cfg.model)
    assert type(model.decode_head).__name__ == head_type
    assert model.decode_head.num_classes == num_classes
    assert not any(p.requires_grad for p in model.backbone.parameters())  # frozen
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if head_type == 'FCNHead':
        assert trainable == {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}
        assert model.decode_head.conv_seg.in_channels == 768


@pytest.mark.parametrize('std', ['coco-stuff27_mmseg', 'voc12aug_mmseg', 'ade20k_mmseg',
                                 'cityscapes_mmseg'])
def test_standard_protocol_bases(std):
    cfg = Config.fromfile(osp.join(BASE, 'datasets', f'{std}.py'))
    types = [t.type for t in cfg.test_pipeline]
    assert 'SegLabelResize' not in types and types.index('Resize') < types.index('LoadAnnotations')
    train = [t.type for t in cfg.train_pipeline]
    assert 'RandomCrop' in train and 'SegRandomResizedCrop' not in train
    assert cfg.val_dataloader.batch_size == 1


# ---------------------------------------------------------------- end to end

RAW_VALUES = (0, 1, 100, 156, 255)  # person, bicycle, carpet, sky-other, unlabeled


def _make_mini_cocostuff(root, size=64):
    """Raw COCO-Stuff tree (8 train / 4 val listed images), converted to 27 classes by the
    converter. The image colour encodes the class, so a probe can learn something."""
    rng = np.random.default_rng(0)
    colours = {0: (200, 30, 30), 1: (30, 200, 30), 100: (30, 30, 200), 156: (200, 200, 30),
               255: (0, 0, 0)}
    for split, n in (('train2017', 8), ('val2017', 4)):
        for sub in ('images', 'annotations', 'curated'):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
        ids = [f'{split[:3]}{i:09d}' for i in range(n)]
        for image_id in ids:
            raw = rng.choice(RAW_VALUES, size=(4, 4)).astype(np.uint8)
            raw = np.kron(raw, np.ones((size // 4, size // 4), np.uint8))
            Image.fromarray(raw, mode='L').save(root / 'annotations' / split / f'{image_id}.png')
            img = np.array([colours[v] for v in raw.ravel()], np.float64).reshape(size, size, 3)
            img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / 'images' / split / f'{image_id}.jpg')
        name = ('Coco164kFull_Stuff_Coarse.txt' if split == 'train2017' else
                'Coco164kFull_Stuff_Coarse_7.txt')
        (root / 'curated' / split / name).write_text(''.join(f'{i}\n' for i in ids))


E2E_CONFIG = """
_base_ = [
    {base!r} + '/models/cotap_vit-s16_linear.py',
    {base!r} + '/datasets/coco-stuff27_cotap.py',
    {base!r} + '/schedules/adam_constant.py',
    {base!r} + '/default_runtime.py',
]
# the real CoTAP base pieces, shrunk: tiny ViT (2 layers, 2D = 128), 32-px crops, 48-px labels
data_root = {data_root!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SegRandomResizedCrop', size=32, scale=(0.64, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='SegLabelResize', size=48),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(48, 48), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='SegLabelResize', size=48),
    dict(type='PackSegInputs'),
]
model = dict(
    backbone=dict(arch='tiny', frozen_stages=2,
                  init_cfg=dict(checkpoint={ckpt!r})),
    decode_head=dict(in_channels=128, channels=128, num_classes=27))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    env['PATH'] = VENV_BIN + os.pathsep + env.get('PATH', '')
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['OMP_NUM_THREADS'] = '1'
    for key in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        env.pop(key, None)
    return env


def _run(*cmds):
    """Run the commands concurrently from the repository root; their outputs, in order."""
    procs = [(cmd, subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)) for cmd in cmds]
    outs = []
    for cmd, proc in procs:
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert proc.returncode == 0, f'{cmd} failed ({proc.returncode}):\n{out[-4000:]}'
        outs.append(out)
    return outs


def _miou(out, what):
    """The mIoU of the Runner's 'Iter(test)' / 'Iter(val)' metrics line."""
    found = re.findall(r'Iter\(' + what + r'\).*?mIoU: ([0-9.]+)', out)
    assert found, f'no Iter({what}) mIoU line in the output:\n{out[-3000:]}'
    return float(found[-1])


@pytest.mark.skipif(shutil.which('mim', path=VENV_BIN) is None, reason='openmim not installed')
def test_mim_train_test_end_to_end(tmp_path):
    root = tmp_path / 'cocostuff'
    _make_mini_cocostuff(root)
    load_tool('dataset_converters/coco_stuff27').main([str(root)])

    # pretrained backbone: a checkpoint with backbone.* keys (as the pretraining checkpoint)
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=16)
    backbone_sd = {f'backbone.{k}': v.clone() for k, v in vit.state_dict().items()}
    ckpt = tmp_path / 'backbone.pth'
    torch.save(dict(state_dict=dict(backbone_sd, **{'head.w': torch.zeros(1)})), ckpt)

    cfg_file = tmp_path / 'cotap_vit-tiny16_linear_mini-coco-stuff27.py'
    cfg_file.write_text(E2E_CONFIG.format(base=BASE, data_root=str(root), ckpt=str(ckpt)))

    work = tmp_path / 'train'
    (out, ) = _run(['mim', 'train', 'mmseg', str(cfg_file), '--work-dir', str(work),
                '--cfg-options', 'randomness.seed=1'])
    assert f'CoTAPPretrained: load backbone. of {ckpt}' in out
    val_miou = _miou(out, 'val')
    seg_ckpt = work / 'iter_4.pth'
    assert seg_ckpt.is_file(), sorted(os.listdir(work))
    state = torch.load(seg_ckpt, map_location='cpu', weights_only=False)['state_dict']
    # the frozen backbone is exactly the pretrained one; the head was trained
    for key, value in backbone_sd.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
    assert set(k for k in state if k.startswith('decode_head.')) == {
        'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}

    # the two test entry points, concurrently (each spends most of its time importing)
    out_mim, out_tool = _run(
        ['mim', 'test', 'mmseg', str(cfg_file), '--checkpoint', str(seg_ckpt), '--work-dir',
         str(tmp_path / 'test_mim')],
        [sys.executable, 'tools/test.py', str(cfg_file), str(seg_ckpt), '--work-dir',
         str(tmp_path / 'test_tool')])
    miou_mim, miou_tool = _miou(out_mim, 'test'), _miou(out_tool, 'test')
    assert 0. <= miou_mim <= 100.
    assert miou_mim == miou_tool == val_miou, (miou_mim, miou_tool, val_miou)
    # tools/test.py also prints the returned metrics (float32 values, unrounded in the text)
    printed = re.findall(r'^metrics:.*mIoU: ([0-9.]+)', out_tool, flags=re.M)
    assert printed and abs(float(printed[-1]) - miou_tool) < 1e-3
    # the per-class table lists the COCO-Stuff-27 names, evaluated at 48x48
    assert 'person' in out_mim and 'sky' in out_mim
