"""Suite-wide fixtures and helpers (test modules import the helpers: ``from conftest import ...``).

- Isolation: a test that makes a DefaultScope current (e.g. 'mmseg') must not leak it into later
  tests, whose plain-name builds resolve in the current scope.
- :func:`load_tool`: the module of a command line under ``tools/`` (the checkout's root is on
  ``sys.path``, so ``tools`` and ``benchmarks`` import as packages); ``analysis_tool`` is the
  fixture form for ``tools/analysis/<name>.py``.
- :data:`TINY_COTAP` / :func:`tiny_cotap_config` and :func:`write_scene_image`: the tiny CoTAP
  pretraining config (``configs/cotap_vit-s16_coco.py`` shrunk) and the generated images the
  training, resume and bad-input tests run it on.
- The probe tools' generated data, tiny checkpoint and configs (``probe_assets``).
"""
import importlib
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the applications beside the package: tools/, benchmarks/


def load_tool(relpath: str):
    """The module of ``tools/<relpath>.py`` (e.g. ``'precompute_knn'``,
    ``'model_converters/extract_backbone'``)."""
    return importlib.import_module('tools.' + relpath.replace('/', '.'))


def tiny_cotap_config(max_iters: int = 3, checkpoint_interval: int = 2) -> str:
    """Text of the tiny CoTAP pretraining config (ViT-tiny at 64 px, 2 + 4 crops, small heads,
    queues and bank) over the data layout of docs/data.md."""
    return f"""
_base_ = '{ROOT}/configs/cotap_vit-s16_coco.py'
model = dict(
    backbone=dict(arch='tiny', img_size=64, num_prototypes=8, init_cfg=None),
    patch_head=dict(in_channels=128, num_prototypes=32, hidden_channels=64,
                    bottleneck_channels=16),
    cls_head=dict(in_channels=128, num_prototypes=48, hidden_channels=64,
                  bottleneck_channels=16),
    correspondence_head=dict(pool_sizes=(2, 4), topk=3, num_neg_draws=2),
    bank=dict(capacity=16, num_insert=4, kmeans_iters=20),
    queue_sizes=(1024, 256),
    queue_inserts=(64, 8),
    teacher_momentum_steps=100)  # the same EMA schedule whatever max_iters a run stops at
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        coco=dict(num_neighbors=3), imagenet=dict(num_neighbors=3),
        view_pipeline=[dict(type='CoTAPMultiCrop', size_crops=(64, 32), nmb_crops=(2, 4))]))
train_cfg = dict(max_iters={max_iters})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval={checkpoint_interval}))
"""


TINY_COTAP = tiny_cotap_config()


def write_scene_image(path: str, seed: int, size=(120, 160)) -> None:
    """A JPEG/PNG of a random background with three random discs (cv2, BGR), seeded."""
    import cv2
    rng = np.random.default_rng(seed)
    img = np.full((*size, 3), rng.integers(0, 255, 3), np.uint8)
    for _ in range(3):
        center = tuple(int(v) for v in rng.integers(10, min(size) - 10, 2))
        color = [int(c) for c in rng.integers(0, 255, 3)]
        cv2.circle(img, center, int(rng.integers(5, min(size) // 3)), color, -1)
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, img)


def make_cotap_workspace(root, config_text: str = TINY_COTAP, image_size=(120, 160),
                         knn_image_size: int = 64):
    """Under ``root``: 6 COCO-layout and 2 x 3 ImageNet-layout images (docs/data.md), their kNN
    files written by tools/precompute_knn.py (random ViT-tiny features; only the count of the
    two folders is the same, so only their recorded image lists tell the files apart) and
    ``tiny.py`` holding ``config_text``. Returns ``root``."""
    given, root = root, str(root)
    for i in range(6):
        write_scene_image(osp.join(root, 'data/coco/train2017', f'{i:012d}.jpg'), i, image_size)
    for c in range(2):
        for i in range(3):
            write_scene_image(osp.join(root, f'data/imagenet/train/n0000000{c}/im{i}.JPEG'),
                              100 + 3 * c + i, image_size)
    knn = load_tool('precompute_knn')
    torch.manual_seed(0)
    for subset, folder in (('coco', 'coco/train2017'), ('imagenet1k', 'imagenet/train')):
        knn.main([osp.join(root, 'data', folder),
                  osp.join(root, f'data/nns/nns_vit_base_{subset}_train_None_224.npz'),
                  '--arch', 'tiny', '--k', '5', '--image-size', str(knn_image_size),
                  '--num-workers', '0', '--device', 'cpu'])
    with open(osp.join(root, 'tiny.py'), 'w') as f:
        f.write(config_text)
    return given


@pytest.fixture(autouse=True)
def _restore_default_scope():
    before = list(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]


@pytest.fixture(scope='session')
def analysis_tool():
    """``load(name)``: the module of ``tools/analysis/<name>.py`` (tools/ is not a package)."""

    return lambda name: load_tool(f'analysis/{name}')


COLORS = [(220, 30, 30), (30, 200, 40), (40, 50, 230)]


@pytest.fixture(scope='session')
def probe_assets(tmp_path_factory):
    """Generated probe data under one folder: ``cls/{train,val}/<class>/`` (3 solid-colour
    classes), ``seg/{img_dir,ann_dir}/{train,val}/`` (4 images of three 16-px vertical colour
    bands = classes 0, 1, 2 in random order, the top two rows 255), the checkpoints
    ``tiny.pth`` (``CoTAPVisionTransformer(arch='tiny', patch_size=16)``, seeded) and
    ``tiny_no_oaf.pth``, and the configs ``tiny.py`` (bare backbone) and ``seg_cfg.py`` (mmseg
    ``EncoderDecoder``)."""
    from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
    root = tmp_path_factory.mktemp('probes')
    rng = np.random.default_rng(0)
    # ImageNet-style folder: 3 classes x (6 train + 3 val), solid colours with noise
    for split, n in (('train', 6), ('val', 3)):
        for c, col in enumerate(COLORS):
            d = root / 'cls' / split / f'n0{c}'
            d.mkdir(parents=True)
            for i in range(n):
                hw = rng.integers(40, 64, 2)
                img = np.clip(np.array(col) + rng.normal(0, 12, (*hw, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(d / f'img{i}.png')
    # mmseg layout: three vertical colour bands = classes 0, 1, 2; a 255 border row
    for split in ('train', 'val'):
        (root / 'seg' / 'img_dir' / split).mkdir(parents=True)
        (root / 'seg' / 'ann_dir' / split).mkdir(parents=True)
        for i in range(4):
            lab = np.zeros((48, 48), np.uint8)
            order = rng.permutation(3)
            img = np.zeros((48, 48, 3))
            for j, c in enumerate(order):
                lab[:, 16 * j:16 * (j + 1)] = c
                img[:, 16 * j:16 * (j + 1)] = COLORS[c]
            lab[:2] = 255
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / 'seg' / 'img_dir' / split / f'{i}.jpg', quality=95)
            Image.fromarray(lab).save(root / 'seg' / 'ann_dir' / split / f'{i}.png')
    # tiny backbone checkpoint (extract_backbone.py format) and a model config
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=16)
    sd = {'backbone.' + k: v for k, v in vit.state_dict().items()}
    torch.save({'meta': {'note': 'test'}, 'state_dict': sd}, root / 'tiny.pth')
    no_oaf = {k: v for k, v in sd.items() if not k.startswith('backbone.oaf.')}
    torch.save({'state_dict': no_oaf}, root / 'tiny_no_oaf.pth')
    (root / 'tiny.py').write_text(
        "model = dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16)\n")
    (root / 'seg_cfg.py').write_text(
        "default_scope = 'mmseg'\n"
        "data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])\n"
        "model = dict(type='EncoderDecoder', data_preprocessor=data_preprocessor,\n"
        "             backbone=dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16,\n"
        "                           img_size=(48, 48)))\n")
    return root
