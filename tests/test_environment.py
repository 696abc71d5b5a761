"""The installed stack is what the set-up promises: full mmcv with working compiled ops, mim."""
import os.path as osp
import subprocess
import sys

import pytest
import torch


def test_full_mmcv_ops_run_on_cpu():
    from mmcv.ops import nms, roi_align

    feats = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]])
    out = roi_align(feats, rois, (2, 2), 1.0, 2, 'avg', True)
    assert out.shape == (1, 2, 2, 2)
    # the pooled cells of an affine ramp are ordered like the ramp
    assert out[0, 0, 0, 0] < out[0, 0, 0, 1] < out[0, 0, 1, 1]
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_host_toolboxes_import_with_pinned_versions():
    import mmcv
    import mmengine
    import mmpretrain
    import mmseg
    import mmseg.models  # noqa: F401  (needs mmcv.ops)
    assert (mmcv.__version__, mmengine.__version__) == ('2.1.0', '0.10.7')
    assert (mmpretrain.__version__, mmseg.__version__) == ('1.2.0', '1.2.2')


def test_mim_lists_the_toolboxes():
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    if not osp.exists(mim):
        pytest.skip('mim is not installed next to this interpreter (not the .venv of setup)')
    out = subprocess.run([mim, 'list'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'mmpretrain' in out.stdout and 'mmsegmentation' in out.stdout


def test_setup_refuses_an_unknown_mode_argument():
    out = subprocess.run(['bash', osp.join(osp.dirname(osp.dirname(__file__)), 'tools',
                                          'setup_env.sh'), '--pretraining'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert 'unknown argument "--pretraining"' in out.stderr and '--pretrain-only' in out.stderr
