"""End-to-end checks of tools/train.py, tools/test.py and tools/dist_train.sh on CPU.

A tiny mmpretrain classification config (the cotap_mm ViT backbone, arch='tiny', 32-px images)
trains for 2 iterations on 8 random JPEGs in an ImageNet-style folder layout; the tools run as
subprocesses with the repository's interpreter (sys.executable).
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')

CONFIG = """
custom_imports = dict(imports=['cotap_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=2, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], to_rgb=True),
    backbone=dict(type='CoTAPVisionTransformer', arch='tiny', img_size=32, patch_size=16,
                  out_type='cls_token'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=128,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]
dataset = dict(type='CustomDataset', data_prefix={data_dir!r}, pipeline=pipeline)
train_dataloader = dict(batch_size=2, num_workers=0, dataset=dataset,
                        sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(batch_size=4, num_workers=0, dataset=dataset,
                      sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
# the OAF's patch branch does not feed the CLS output: DDP must look for unused parameters
find_unused_parameters = True
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=1000)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
"""


def _env():
    env = dict(os.environ)
    env['CUDA_VISIBLE_DEVICES'] = ''  # CPU paths, also on a machine with a GPU
    env['OMP_NUM_THREADS'] = '1'
    env['MKL_NUM_THREADS'] = '1'
    env['PYTHON'] = sys.executable
    env.pop('WORLD_SIZE', None)
    env.pop('LOCAL_RANK', None)
    return env


def _run(cmd, cwd, env=None, timeout=180):
    proc = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc, proc.stdout + proc.stderr


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('tools')
    data_dir = root / 'imagenet' / 'train'
    rng = np.random.default_rng(0)
    for cls in ('n01', 'n02'):
        (data_dir / cls).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(img).save(data_dir / cls / f'img_{i}.JPEG', format='JPEG')
    cfg = root / 'tiny_cls.py'
    cfg.write_text(CONFIG.format(data_dir=str(data_dir)))
    # (a) the single-process run, shared by the tests below; without --work-dir, the work dir
    # is ./work_dirs/<config name>
    work = root / 'work_dirs' / 'tiny_cls'
    proc, out = _run([sys.executable, osp.join(TOOLS, 'train.py'), str(cfg)], cwd=root)
    return dict(root=root, cfg=cfg, work=work, proc=proc, out=out)


def test_train_single_process(setup):
    assert setup['proc'].returncode == 0, setup['out'][-4000:]
    ckpt = setup['work'] / 'iter_2.pth'
    assert ckpt.is_file(), setup['out'][-4000:]
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 2
    assert any(k.startswith('backbone.') for k in state['state_dict'])


def test_dist_train_two_cpu_processes(setup, tmp_path):
    env = _env()
    env['PORT'] = str(_free_port())
    work = tmp_path / 'work_dist'
    proc, out = _run(['bash', osp.join(TOOLS, 'dist_train.sh'), str(setup['cfg']), '2',
                      '--work-dir', str(work), '--cfg-options', 'randomness.seed=1'],
                     cwd=tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, out[-6000:]
    assert (work / 'iter_2.pth').is_file(), out[-6000:]
    assert 'Distributed launcher: pytorch' in out or 'launcher: pytorch' in out, out[-3000:]
    assert 'Distributed training: True' in out, out[-3000:]


def test_resume_to_four_iters(setup, tmp_path):
    ckpt = setup['work'] / 'iter_2.pth'
    assert ckpt.is_file(), 'the single-process run did not produce iter_2.pth'
    work = tmp_path / 'work_resume'
    proc, out = _run([sys.executable, osp.join(TOOLS, 'train.py'), str(setup['cfg']),
                      '--work-dir', str(work), '--resume', str(ckpt),
                      '--cfg-options', 'train_cfg.max_iters=4'], cwd=tmp_path)
    assert proc.returncode == 0, out[-4000:]
    assert 'resumed' in out.lower(), out[-4000:]
    assert (work / 'iter_4.pth').is_file(), out[-4000:]
    assert not (work / 'iter_2.pth').exists()  # started at iteration 2, not from scratch
    state = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 4


def test_test_prints_accuracy(setup, tmp_path):
    ckpt = setup['work'] / 'iter_2.pth'
    assert ckpt.is_file(), 'the single-process run did not produce iter_2.pth'
    out_pkl = tmp_path / 'preds.pkl'
    proc, out = _run([sys.executable, osp.join(TOOLS, 'test.py'), str(setup['cfg']), str(ckpt),
                      '--work-dir', str(tmp_path / 'work_test'), '--out', str(out_pkl)],
                     cwd=tmp_path)
    assert proc.returncode == 0, out[-4000:]
    assert 'accuracy/top1' in out, out[-4000:]
    assert 'Load checkpoint from' in out, out[-4000:]
    assert out_pkl.is_file()


def test_amp_without_cuda_fails_clearly(setup, tmp_path):
    proc, out = _run([sys.executable, osp.join(TOOLS, 'train.py'), str(setup['cfg']), '--amp',
                      '--work-dir', str(tmp_path / 'w')], cwd=tmp_path)
    assert proc.returncode != 0
    assert '--amp needs a CUDA GPU' in proc.stderr, out[-3000:]
    assert 'Traceback' not in out


def test_test_missing_checkpoint_fails_clearly(setup, tmp_path):
    missing = tmp_path / 'missing.pth'
    proc, out = _run([sys.executable, osp.join(TOOLS, 'test.py'), str(setup['cfg']),
                      str(missing)], cwd=tmp_path)
    assert proc.returncode != 0
    assert 'checkpoint file not found' in proc.stderr and str(missing) in proc.stderr, out
    assert 'Traceback' not in out
