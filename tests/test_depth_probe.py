"""The linear depth probe: the synthetic scenes' depth maps, LinearDepthHead, the NYU config and
an end-to-end tools/train.py -> tools/test.py run on generated scenes in NYU's layout."""
import itertools
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from conftest import ROOT, load_tool
from cotap_mm.datasets.synthetic import DEPTH_RANGE, generate_scene, scene_depth
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer

CONFIG = osp.join(ROOT, 'configs/benchmarks/mmseg/cotap_vit-s16_linear-depth_nyu.py')
_IDS = itertools.count()


def test_scene_depth_is_a_function_of_the_scene():
    rng = np.random.default_rng(3)
    img, label, info = generate_scene(rng, 64, 'scene')
    depth = scene_depth(info, 64)
    assert depth.shape == (64, 64) and depth.dtype == np.float32
    np.testing.assert_array_equal(depth, scene_depth(info, 64))
    assert 0.5 <= depth.min() and depth.max() <= DEPTH_RANGE[1]
    # the ground recedes upwards; objects stand in front of it
    ground = DEPTH_RANGE[1] - (DEPTH_RANGE[1] - DEPTH_RANGE[0]) * (np.arange(64) + 0.5) / 64
    things = label < 8
    assert things.any()
    assert (depth[things] < np.broadcast_to(ground[:, None], (64, 64))[things]).all()
    np.testing.assert_allclose(depth[~things], np.broadcast_to(ground[:, None],
                                                               (64, 64))[~things], rtol=1e-6)


def test_bins_to_depth():
    pytest.importorskip('mmseg')
    from cotap_mm.models.heads.linear_depth_head import bins_to_depth
    logits = torch.randn(2, 5, 3, 4)
    w = logits.clamp(min=0) + 0.1
    p = w / w.sum(1, keepdim=True)
    bins = torch.linspace(1., 9., 5)
    expected = (p * bins.view(1, 5, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(bins_to_depth(logits, 1., 9.), expected)
    assert torch.allclose(bins_to_depth(torch.zeros(1, 5, 1, 1), 1., 9.), torch.tensor(5.))


def test_depth_config_builds():
    pytest.importorskip('mmseg')
    import cotap_mm.segmentation  # noqa: F401  (registers LinearDepthHead in mmseg)
    from mmseg.registry import MODELS
    cfg = Config.fromfile(CONFIG)
    assert cfg.model.type == 'DepthEstimator' and cfg.train_cfg.max_iters == 38400
    assert cfg.val_evaluator.crop_type == 'nyu_crop'
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    assert type(model.decode_head).__name__ == 'LinearDepthHead'
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {'decode_head.conv_depth.weight', 'decode_head.conv_depth.bias'}
    assert model.decode_head.conv_depth.in_channels == 768
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.decode_head(model.extract_feat(x))
    assert out.shape == (1, 1, 16, 16) and (out > 0).all() and (out <= 10).all()


E2E = """
_base_ = {base!r}
data_root = {data_root!r}
crop_size = (48, 48)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys={{{{_base_.meta_keys}}}}),
]
model = dict(
    backbone=dict(arch='tiny', frozen_stages=2, init_cfg=dict(checkpoint={ckpt!r})),
    decode_head=dict(in_channels=128))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
param_scheduler = []
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
"""


def _abs_rel(out, what):
    found = re.findall(r'Iter\(' + what + r'\).*?abs_rel: ([0-9.]+)', out)
    assert found, f'no Iter({what}) abs_rel in the output:\n{out[-3000:]}'
    return float(found[-1])


def test_depth_probe_end_to_end(tmp_path):
    pytest.importorskip('mmseg')
    data = tmp_path / 'scenes'
    load_tool('make_synthetic_scenes').main(
        [str(data), '--size', '64', '--num-coco', '0', '--num-imagenet', '0', '--num-seg-train',
         '0', '--num-seg-val', '0', '--num-depth-train', '6', '--num-depth-test', '3'])
    depth = cv2.imread(str(data / 'nyu/annotations/train/depth_train_000000.png'), -1)
    assert depth.dtype == np.uint16 and 500 <= depth.min() and depth.max() <= 8000
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=16)
    ckpt = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in vit.state_dict().items()}}, ckpt)
    cfg = tmp_path / 'tiny_depth.py'
    cfg.write_text(E2E.format(base=CONFIG, data_root=str(data / 'nyu'), ckpt=str(ckpt)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    for key in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        env.pop(key, None)

    def run(*args):
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return out

    out = run('tools/train.py', str(cfg), '--work-dir', str(tmp_path / 'train'))
    val = _abs_rel(out, 'val')
    state = torch.load(tmp_path / 'train/iter_4.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    # the frozen backbone is the given one; only the 1x1 depth conv was trained
    torch.testing.assert_close(state['backbone.cls_token'], vit.cls_token, rtol=0, atol=0)
    assert {k for k in state if k.startswith('decode_head.')} == {
        'decode_head.conv_depth.weight', 'decode_head.conv_depth.bias'}
    out = run('tools/test.py', str(cfg), str(tmp_path / 'train/iter_4.pth'), '--work-dir',
              str(tmp_path / 'test'))
    assert _abs_rel(out, 'test') == val and 0 < val < 10
    assert re.search(r'rmse: [0-9.]+', out) and re.search(r'd1: [0-9.]+', out)
