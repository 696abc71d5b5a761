"""cotap_mm.utils.compat: mmengine checkpoints load under torch's weights-only default, and
untrusted pickles are still refused."""
import os
import os.path as osp
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint

import cotap_mm  # noqa: F401  (applies the patch)
from cotap_mm.utils.compat import allow_mmengine_checkpoints


class TinyModel(BaseModel):
    """A linear regressor: inputs (B, 4) -> (B, 2); loss = mean squared output."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class RandomVectors(torch.utils.data.Dataset):
    """32 fixed random vectors (B, 4); metainfo ends up in the checkpoint's meta."""
    metainfo = dict(classes=('a', 'b'), palette=[[0, 0, 0], [255, 255, 255]])

    def __init__(self):
        self.data = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        return dict(inputs=self.data[idx])


class RecordHook(Hook):
    """Records the iteration and weights the loop starts from; stores numpy values in the
    message hub's runtime info as real toolboxes do."""

    def before_train(self, runner):
        self.start_iter = runner.iter
        self.start_state = {k: v.clone() for k, v in runner.model.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        runner.message_hub.update_info('np_scalar', np.float32(batch_idx))
        runner.message_hub.update_info('np_array', np.arange(3, dtype=np.int64))


def make_runner(work_dir, max_iters, name, resume=False, **overrides):
    hook = RecordHook()
    kwargs = dict(
        model=TinyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=dict(
            dataset=RandomVectors(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=4, num_workers=0, collate_fn=dict(type='default_collate')),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        param_scheduler=dict(type='CosineAnnealingLR', T_max=8, by_epoch=False),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[hook],
        randomness=dict(seed=0),
        resume=resume,
    )
    kwargs.update(overrides)
    return Runner(**kwargs), hook


def test_runner_checkpoint_needs_the_patch(tmp_path):
    """Sanity check of the premise: without the allow-list, torch 2.6+ refuses the file."""
    runner, _ = make_runner(tmp_path, 2, f'premise_{tmp_path.name}')
    runner.train()
    ckpt = osp.join(tmp_path, 'iter_2.pth')
    # a fresh interpreter without cotap_mm cannot load it ...
    proc = subprocess.run([sys.executable, '-c', f'import torch; torch.load({ckpt!r})'],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and 'Weights only load failed' in proc.stderr
    # ... and this one, with cotap_mm imported, can
    assert torch.load(ckpt)['meta']['iter'] == 2


def test_runner_resume_from_own_checkpoint(tmp_path):
    assert allow_mmengine_checkpoints()
    first, _ = make_runner(tmp_path, 4, f'first_{tmp_path.name}')
    first.train()
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth')) == \
        ['iter_2.pth', 'iter_4.pth']
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}

    # plain torch.load with the default weights_only=True and mmengine's load_checkpoint
    ckpt = torch.load(osp.join(tmp_path, 'iter_4.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 4
    assert len(ckpt['message_hub']['log_scalars']['train/loss'].data[0]) == 4
    model = TinyModel()
    load_checkpoint(model, osp.join(tmp_path, 'iter_4.pth'), map_location='cpu')
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0)

    # a new Runner with resume=True continues from iteration 4 with the same weights
    second, hook = make_runner(tmp_path, 6, f'second_{tmp_path.name}', resume=True)
    second.train()
    assert hook.start_iter == 4
    for k, v in hook.start_state.items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0)
    assert second.iter == 6
    assert osp.isfile(osp.join(tmp_path, 'iter_6.pth'))
    # the message hub came back too: loss history of all 6 iterations
    assert len(second.message_hub.get_scalar('train/loss').data[0]) == 6
    # and the optimizer state (AdamW step count) was restored, not restarted
    state = second.optim_wrapper.optimizer.state_dict()['state']
    assert int(next(iter(state.values()))['step']) == 6


@pytest.mark.parametrize('case', ['multistep_linear', 'mmpretrain_wd_ema'])
def test_checkpoints_of_other_schedulers_and_hooks_load(tmp_path, case):
    """Schedulers / hooks whose state ends up in the checkpoint, incl. mmpretrain's weight-decay
    schedule + EMA."""
    overrides = dict(
        multistep_linear=dict(param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
            dict(type='MultiStepLR', milestones=[3], by_epoch=False, begin=2, end=4)]),
        mmpretrain_wd_ema=dict(
            default_scope='mmpretrain',
            param_scheduler=dict(type='CosineAnnealingWeightDecay', eta_min=0.24, T_max=4,
                                 by_epoch=False),
            custom_hooks=[dict(type='EMAHook', momentum=0.01)]),
    )[case]
    runner, _ = make_runner(tmp_path, 2, f'{case}_{tmp_path.name}', **overrides)
    runner.train()
    ckpt = torch.load(osp.join(tmp_path, 'iter_2.pth'))  # default weights_only=True
    assert ckpt['meta']['iter'] == 2 and ckpt['param_schedulers']
    resumed, _ = make_runner(tmp_path, 3, f'{case}_resumed_{tmp_path.name}', resume=True,
                             **overrides)
    resumed.train()
    assert resumed.iter == 3


def test_onecycle_checkpoints_are_refused_not_unpickled(tmp_path):
    """OneCycle keeps a bound method in its state (module docstring): the weights-only load
    refuses its checkpoint instead of unpickling the scheduler, optimizer and model behind it."""
    runner, _ = make_runner(tmp_path, 2, f'onecycle_{tmp_path.name}', param_scheduler=dict(
        type='OneCycleLR', eta_max=0.01, total_steps=4, by_epoch=False))
    runner.train()
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(osp.join(tmp_path, 'iter_2.pth'))


class _Exploit:
    """Pickles to ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _Custom:
    """An arbitrary user class (not allow-listed)."""

    def __init__(self):
        self.x = 1


class _GetattrEscape:
    """Uses the allow-listed name ``builtins.getattr`` to reach a function's internals."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


@pytest.mark.parametrize('payload', ['exploit', 'custom', 'getattr'])
def test_untrusted_pickles_still_refused(tmp_path, payload):
    marker = tmp_path / 'pwned'
    obj = dict(exploit=lambda: _Exploit(marker), custom=_Custom,
               getattr=_GetattrEscape)[payload]()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': obj}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # default arguments
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(TinyModel(), str(path), map_location='cpu')
    assert not marker.exists()
