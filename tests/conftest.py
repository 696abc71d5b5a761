"""Suite-wide fixtures.

- Isolation: a test that makes a DefaultScope current (e.g. 'mmseg') must not leak it into later
  tests, whose plain-name builds resolve in the current scope.
- The probe tools' generated data, tiny checkpoint and configs (``probe_assets``) and a loader
  of ``tools/analysis/<name>.py`` (``analysis_tool``), shared by the probe test files.
"""
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


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

    def load(name):
        spec = importlib.util.spec_from_file_location(
            name, osp.join(ROOT, 'tools', 'analysis', f'{name}.py'))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


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
