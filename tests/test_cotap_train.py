"""CoTAP pretraining end to end on generated images in the documented layout (docs/data.md):
kNN files from tools/precompute_knn.py, then tools/train.py and tools/dist_train.sh (2 CPU
processes) with configs/cotap_vit-s16_coco.py shrunk to a tiny model."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import cotap_mm  # noqa: F401  (torch.load allow-list for mmengine checkpoints)
from conftest import ROOT, make_cotap_workspace


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """data/coco/train2017, data/imagenet/train/<wnid>, data/nns/*.npz and a tiny config."""
    return make_cotap_workspace(tmp_path_factory.mktemp('cotap_e2e'))


def _env():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    return env


def _losses(work_dir):
    """Per-iteration logged losses from mmengine's scalars.json."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        rows = [json.loads(line) for line in f]
    return {r['iter']: {k: v for k, v in r.items() if k.startswith('loss')} for r in rows
            if 'loss' in r}


def test_single_process_training_and_kmeans(workspace):
    work_dir = workspace / 'work_dirs/single'
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'tiny.py',
                          '--work-dir', str(work_dir)], cwd=workspace, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    losses = _losses(work_dir)
    assert sorted(losses) == [1, 2, 3]
    for row in losses.values():
        assert all(np.isfinite(v) for v in row.values())
    assert losses[1]['loss_inner_patch'] == 0 and losses[2]['loss_inner_patch'] > 0
    ckpt = torch.load(work_dir / 'iter_3.pth', map_location='cpu')
    state = ckpt['state_dict']
    # the bank filled (2 x 2 x 2 ImageNet globals per step, capacity 16) and k-means fired
    assert bool(state['bank.initialized']) and int(state['bank.num_filled']) == 16
    assert int(state['teacher.steps']) == 4  # the initial copy + one EMA step per iteration
    assert int(state['cls_queue.num_filled']) > 0


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_cpu_processes_with_dist_train(workspace):
    env = dict(_env(), PORT=str(_free_port()))
    out = subprocess.run(['bash', osp.join(ROOT, 'tools/dist_train.sh'), 'tiny.py', '2',
                          '--work-dir', 'work_dirs/dist', '--cfg-options',
                          'train_cfg.max_iters=2'], cwd=workspace, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert (workspace / 'work_dirs/dist/iter_2.pth').is_file()
    assert 'Distributed training: True' in out.stdout + out.stderr


def _train(workspace, work_dir, *extra):
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'tiny.py',
                          '--work-dir', str(work_dir), *extra], cwd=workspace, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.parametrize('split,total', [(2, 4), (3, 5)])
def test_resume_is_bit_exact(workspace, split, total):
    """split + (total - split) iterations with --resume equal total uninterrupted ones: losses,
    weights, teacher, queues, bank and optimizer state. The loader has 3 batches per epoch
    (6 COCO items, batch 2): (2, 4) resumes inside an epoch, (3, 5) at an epoch boundary."""
    full, part = workspace / f'work_dirs/full{total}', workspace / f'work_dirs/split{split}'
    options = [f'default_hooks.checkpoint.interval={split}']
    _train(workspace, full, '--cfg-options', f'train_cfg.max_iters={total}', *options)
    _train(workspace, part, '--cfg-options', f'train_cfg.max_iters={split}', *options)
    out = _train(workspace, part, '--resume', str(part / f'iter_{split}.pth'), '--cfg-options',
                 f'train_cfg.max_iters={total}', *options)
    assert 'resumed' in out.stdout + out.stderr
    assert f'Skipped the {split} trained batches without loading them' in out.stdout + out.stderr
    a = torch.load(full / f'iter_{total}.pth', map_location='cpu')
    b = torch.load(part / f'iter_{total}.pth', map_location='cpu')
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    for key in ('bank.bank', 'patch_queue.queue', 'teacher.steps'):
        assert key in a['state_dict']
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    for idx in state_a:
        assert torch.equal(state_a[idx]['exp_avg'], state_b[idx]['exp_avg'])
    losses_a, losses_b = _losses(full), _losses(part)
    for it in range(split + 1, total + 1):
        assert losses_a[it] == losses_b[it]


# Run tools/train.py as __main__ with mmcv's compiled ops absent, as with mmcv-lite (pure Python)
# instead of full mmcv: a None entry in sys.modules makes every import of the name fail and
# importlib.util.find_spec (mmengine's mmcv_full_available) report it missing.
_WITHOUT_MMCV_OPS = """
import runpy, sys
sys.modules['mmcv.ops'] = sys.modules['mmcv._ext'] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
assert sys.modules['mmcv.ops'] is None and sys.modules['mmcv._ext'] is None
"""


def test_training_needs_no_compiled_mmcv_ops(workspace):
    """Pretraining (the inner patch loss's roi_align included) runs with ``mmcv.ops``
    unimportable: the pretraining-only install (mmcv-lite) is enough for it."""
    work_dir = workspace / 'work_dirs/no_mmcv_ops'
    out = subprocess.run([sys.executable, '-c', _WITHOUT_MMCV_OPS,
                          osp.join(ROOT, 'tools/train.py'), 'tiny.py', '--work-dir',
                          str(work_dir), '--cfg-options', 'train_cfg.max_iters=2'],
                         cwd=workspace, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    losses = _losses(work_dir)
    assert losses[2]['loss_inner_patch'] > 0  # the roi_align path ran
    assert (work_dir / 'iter_2.pth').is_file()


def test_code_entropy_is_logged_and_measured(workspace):
    """The log carries the entropy of the Sinkhorn codes; tools/analysis/code_entropy.py
    measures the same quantity on a checkpoint and on fresh heads."""
    import math

    from conftest import load_tool
    work_dir = workspace / 'work_dirs/code_entropy'
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'tiny.py',
                          '--work-dir', str(work_dir), '--cfg-options', 'train_cfg.max_iters=2',
                          'default_hooks.checkpoint.interval=2'], cwd=workspace, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        rows = {r['iter']: r for r in map(json.loads, f) if 'loss' in r}
    assert 'code_entropy_patch' not in rows[1]  # no codes before the queues fill
    assert 0 < rows[2]['code_entropy_patch'] <= math.log(32) + 1e-6  # K = 32 patch prototypes
    assert 0 < rows[2]['code_entropy_cls'] <= math.log(48) + 1e-6
    tool = load_tool('analysis/code_entropy')
    images = str(workspace / 'data/coco/train2017')
    trained = tool.main([str(workspace / 'tiny.py'), str(work_dir / 'iter_2.pth'), '--images',
                         images, '--num-images', '4', '--temperatures', '0.05', '1.0'])
    fresh = tool.main([str(workspace / 'tiny.py'), '--fresh-heads', '--images', images,
                       '--num-images', '4', '--temperatures', '0.05', '1.0'])
    for result in (trained, fresh):
        for net in ('student', 'teacher'):
            s = result[net]
            assert s['num_prototypes'] == 32 and s['num_patches'] == 4 * 16  # 4 x (64/16)^2
            assert s['std_over_prototypes'] > 0
            # a higher temperature gives flatter codes, never above uniform
            assert s['entropy@0.05'] < s['entropy@1'] <= math.log(32) + 1e-6
    # fresh heads: the teacher is a copy of the student
    assert fresh['student'] == fresh['teacher']
    with pytest.raises(SystemExit):
        tool.main([str(workspace / 'tiny.py'), '--images', images])  # neither given
