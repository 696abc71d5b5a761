"""Checks that need a CUDA GPU (skipped without one; tools/gpu_check.py runs them on a GPU
machine): a CoTAP training run under AMP through tools/train.py stays finite and checkpoints."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, make_cotap_workspace

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')


def test_amp_training_on_cuda_is_finite(tmp_path):
    make_cotap_workspace(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    work_dir = tmp_path / 'work_dirs/amp'
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'tiny.py', '--amp',
                          '--work-dir', str(work_dir)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(work_dir / d))
    with open(work_dir / runs[-1] / 'vis_data' / 'scalars.json') as f:
        rows = [json.loads(line) for line in f if '"loss"' in line]
    assert len(rows) == 3
    for row in rows:
        for key, value in row.items():
            if key.startswith('loss'):
                assert value == value and abs(value) < 1e4, (key, value)  # finite
    assert rows[-1]['loss_inner_patch'] > 0
    ckpt = torch.load(work_dir / 'iter_3.pth', map_location='cpu')
    assert 'loss_scaler' in ckpt['optimizer']  # AmpOptimWrapper's state, saved for resume
