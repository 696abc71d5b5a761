"""tools/smoke_demo.py runs its one training step from the smoke config."""
import os.path as osp

import torch

from conftest import load_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load_demo():
    return load_tool('smoke_demo')


def test_make_views_shapes_and_bad_crop():
    demo = _load_demo()
    gen = torch.Generator().manual_seed(0)
    v1, v2 = demo.make_views(3, 48, 32, gen)
    assert v1.shape == v2.shape == (3, 3, 32, 32)
    try:
        demo.make_views(1, 32, 48, gen)
    except ValueError as e:
        assert 'crop_size' in str(e)
    else:
        raise AssertionError('crop_size > img_size accepted')


def test_smoke_demo_runs_one_step():
    demo = _load_demo()
    assert demo.main([osp.join(ROOT, 'configs', 'smoke', 'smoke_tiny.py')]) == 0
