"""DenseProbeHook: linear-probe mIoU during pretraining, logged and used for best checkpoints."""
import glob
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader

import cotap_mm  # noqa: F401  (registers cotap_mm components)
from cotap_mm.engine.hooks.dense_probe_hook import DenseProbeHook
from cotap_mm.evaluation.functional import (confusion_matrix, fit_dense_linear_probe,
                                            segmentation_metrics)


def segmentation_scores(pred, label, num_classes):
    """(mIoU, aAcc, per-class IoU) in % from the functional metric the hook uses."""
    m = segmentation_metrics(confusion_matrix(pred, label, num_classes, num_classes))
    return m['mIoU'], m['aAcc'], torch.tensor(m['IoU'])
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.registry import HOOKS

CLASSES = ('background', 'square', 'disc')
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]


def _make_dataset(root, n=8, size=64):
    """mmseg on-disk layout: img_dir/train/*.jpg + ann_dir/train/*.png, 3 classes."""
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'img_dir/train'))
    os.makedirs(osp.join(root, 'ann_dir/train'))
    for i in range(n):
        img = np.full((size, size, 3), (40, 160, 40), np.uint8)  # green background (BGR)
        seg = np.zeros((size, size), np.uint8)
        x, y = (int(v) for v in rng.integers(4, 24, 2))
        img[y:y + 20, x:x + 20] = (0, 0, 255)  # red square (BGR)
        seg[y:y + 20, x:x + 20] = 1
        cx, cy = (int(v) for v in rng.integers(44, 54, 2))
        cv2.circle(img, (cx, cy), 9, (255, 0, 0), -1)  # blue disc
        cv2.circle(seg, (cx, cy), 9, 2, -1)
        cv2.imwrite(osp.join(root, f'img_dir/train/{i:03d}.jpg'), img)
        cv2.imwrite(osp.join(root, f'ann_dir/train/{i:03d}.png'), seg)


def _dataset_cfg(root):
    return dict(type='BaseSegDataset', data_root=str(root),
                data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                img_suffix='.jpg', seg_map_suffix='.png',
                metainfo=dict(classes=CLASSES, palette=PALETTE), pipeline=[])


class _TinyAlgo(BaseModel):
    """Stand-in for cotap_mm.models.CoTAP: a ``.backbone`` and a cheap train step."""

    def __init__(self):
        super().__init__()
        self.backbone = CoTAPVisionTransformer(arch='tiny', patch_size=16, img_size=64,
                                               out_type='oaf_raw', num_prototypes=8)

    def forward(self, inputs=None, data_samples=None, mode='loss'):
        return dict(loss=self.backbone.cls_token.sum() * 0)

    def train_step(self, data, optim_wrapper):
        losses = self(mode='loss')
        loss, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(loss)
        return log_vars


def test_scores_and_separable_probe():
    label = torch.tensor([[0, 1], [2, 255]])
    miou, aacc, iou = segmentation_scores(label.clone(), label, 3)
    assert miou == pytest.approx(100.) and aacc == pytest.approx(100.)
    pred = torch.tensor([[0, 1], [1, 0]])
    miou, aacc, iou = segmentation_scores(pred, label, 3)
    assert iou.tolist()[:2] == [100., 50.] and iou[2] == 0
    assert miou == pytest.approx(50.) and aacc == pytest.approx(200 / 3)

    # features: a one-hot code of the class on an 8x8 grid, labels at 32x32
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (6, 8, 8), generator=g)
    feats = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    feats = torch.cat([feats, 0.1 * torch.randn(6, 4, 8, 8, generator=g)], 1)
    big = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    big[:, :2] = 255
    rng_state = torch.get_rng_state()
    predict = fit_dense_linear_probe(feats[:4], big[:4], 4, iters=100, lr=0.05, batch_size=2)
    assert torch.equal(rng_state, torch.get_rng_state())  # global RNG untouched
    pred = predict(feats[4:]).argmax(1)
    assert pred.shape == (2, 32, 32)
    # bilinear upsampling blurs cell borders: interior pixels decide
    interior = big[4:].clone()
    for off in (0, 3):
        interior[:, off::4] = 255
        interior[:, :, off::4] = 255
    miou, _, _ = segmentation_scores(pred, interior, 4)
    assert miou > 95


def test_to_feature_map():
    tokens = torch.randn(2, 1 + 16, 8)
    fmap = DenseProbeHook.to_feature_map((tokens, ), (64, 64))
    assert fmap.shape == (2, 8, 4, 4)
    assert torch.equal(fmap[:, :, 0, 1], tokens[:, 2])
    # a non-square grid, with and without a CLS token
    tokens = torch.randn(2, 1 + 4 * 6, 8)
    fmap = DenseProbeHook.to_feature_map((tokens, ), (64, 96))
    assert fmap.shape == (2, 8, 4, 6) and torch.equal(fmap[:, :, 1, 0], tokens[:, 7])
    assert torch.equal(DenseProbeHook.to_feature_map(tokens[:, 1:], (64, 96)), fmap)
    assert DenseProbeHook.to_feature_map(torch.randn(2, 8, 3, 3), (48, 48)).shape == (2, 8, 3, 3)
    assert DenseProbeHook.to_feature_map([[torch.randn(2, 8, 3, 3), torch.randn(2, 8)]],
                                         (48, 48)).shape == (2, 8, 3, 3)


def test_which_backbone():
    from types import SimpleNamespace
    student, teacher = torch.nn.Identity(), torch.nn.Identity()
    model = SimpleNamespace(backbone=student,
                            teacher=SimpleNamespace(module=SimpleNamespace(backbone=teacher)))
    runner = SimpleNamespace(model=model)
    assert DenseProbeHook(which='student')._backbone(runner) is student
    assert DenseProbeHook(which='teacher')._backbone(runner) is teacher
    with pytest.raises(ValueError):
        DenseProbeHook(which='ema')


def test_off_without_dataset():
    hook = HOOKS.build(dict(type='DenseProbeHook'))
    assert not hook.enabled and hook.evaluate(object()) is None


def test_images_use_the_config_normalisation(tmp_path):
    """The probe reads images as the evaluation tools do and normalises them with the config's
    model.data_preprocessor mean/std (ImageNet's when it has none)."""
    from types import SimpleNamespace

    from mmengine.logging import MMLogger

    from cotap_mm.utils.images import load_squashed
    _make_dataset(str(tmp_path), n=3)
    mean, std = (10., 20., 30.), (2., 4., 8.)
    hook = DenseProbeHook(dataset=_dataset_cfg(tmp_path), img_size=(32, 48), num_images=3)
    cfg = dict(model=dict(data_preprocessor=dict(type='CoTAPDataPreprocessor', mean=mean,
                                                 std=std)))
    hook._prepare(SimpleNamespace(cfg=cfg), MMLogger.get_current_instance())
    fit_imgs, fit_labels = hook._data[:2]
    path = sorted(glob.glob(str(tmp_path / 'img_dir/train/*.jpg')))[0]
    torch.testing.assert_close(fit_imgs[0], load_squashed(path, (32, 48), mean, std)[1])
    assert fit_imgs.shape == (2, 3, 32, 48) and fit_labels.shape == (2, 32, 48)
    hook = DenseProbeHook(dataset=_dataset_cfg(tmp_path), img_size=32, num_images=3)
    hook._prepare(SimpleNamespace(cfg=dict()), MMLogger.get_current_instance())
    torch.testing.assert_close(hook._data[0][0], load_squashed(path, 32)[1])


def test_runner_logs_probe_and_saves_best(tmp_path):
    data_root = tmp_path / 'data'
    _make_dataset(str(data_root))
    work_dir = tmp_path / 'work'
    runner = Runner(
        model=_TinyAlgo(),
        work_dir=str(work_dir),
        train_dataloader=DataLoader(list(range(4)), batch_size=1),
        train_cfg=dict(by_epoch=False, max_iters=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        default_scope='mmpretrain',
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False,
                            save_best='probe/mIoU', rule='greater')),
        custom_hooks=[dict(type='DenseProbeHook', dataset=_dataset_cfg(data_root), interval=1,
                           img_size=64, num_images=8, probe_iters=60, probe_lr=0.05,
                           probe_batch_size=None)],
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
    )
    backbone = runner.model.backbone
    runner.train()
    assert backbone.training  # train mode restored after the probe

    hook = next(h for h in runner.hooks if isinstance(h, DenseProbeHook))
    assert hook.num_classes == 3
    assert len(hook._data[0]) == 6 and len(hook._data[2]) == 2  # 80% fit / 20% eval

    scalars = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    assert len(scalars) == 1
    with open(scalars[0]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    probes = [r for r in records if 'probe/mIoU' in r]
    assert [r['step'] for r in probes] == [1, 2]  # after iteration 1 and the last one
    assert all(0.0 <= r['probe/mIoU'] <= 1.0 for r in probes)
    assert runner.message_hub.get_scalar('probe/mIoU').current() == probes[-1]['probe/mIoU']

    best = glob.glob(str(work_dir / 'best_probe_mIoU_iter_*.pth'))
    assert len(best) == 1
    ckpt = torch.load(best[0], map_location='cpu', weights_only=False)
    step = int(best[0].rsplit('_', 1)[1][:-4])
    assert ckpt['meta']['iter'] == step
    assert runner.message_hub.get_info('best_score') == max(r['probe/mIoU'] for r in probes)
