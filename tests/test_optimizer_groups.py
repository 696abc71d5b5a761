"""Parameter groups of the optimisers the configs build: no decay on biases and 1-D parameters.

The released CoTAP optimiser excludes every bias and 1-D parameter (LayerNorms included) from
weight decay, heads included, and gives the heads 10x the backbone's learning rate. Every config
under configs/ that trains something is built here and its optimiser's groups are read.
"""
import glob
import os.path as osp

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.utils import import_modules_from_strings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def _trainable(cfg):
    """The module the config's optimiser trains: the model, or for the smoke config the bare
    backbone it defines as ``model``."""
    import cotap_mm  # noqa: F401
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    scope = cfg.get('default_scope', 'mmpretrain')
    from mmengine.registry import MODELS
    model_cfg = cfg.model.copy()
    model_cfg.pop('init_cfg', None)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(model_cfg), scope


def _groups(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    if 'optim_wrapper' not in cfg:
        pytest.skip(f'{config} trains nothing')
    model, scope = _trainable(cfg)
    wrapper_cfg = cfg.optim_wrapper.copy()
    wrapper_cfg['type'] = 'OptimWrapper'  # AmpOptimWrapper needs CUDA; the groups are the same
    wrapper_cfg.pop('loss_scale', None)
    with DefaultScope.overwrite_default_scope(scope):
        optimizer = build_optim_wrapper(model, wrapper_cfg).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    rows = []
    for group in optimizer.param_groups:
        for p in group['params']:
            rows.append((names[id(p)], p, group['lr'], group.get('weight_decay', 0.)))
    return cfg, rows


@pytest.mark.parametrize('config', CONFIGS)
def test_no_weight_decay_on_biases_and_one_dim_parameters(config):
    cfg, rows = _groups(config)
    if osp.basename(config).startswith('protocol-'):
        # another paper's evaluation protocol (docs/probes.md): its optimiser decays every
        # trained parameter, biases and norms included, as the paper's code does
        base_wd = cfg.optim_wrapper.optimizer.weight_decay
        assert base_wd > 0 and all(wd == base_wd for n, p, _, wd in rows if p.requires_grad)
        return
    decayed = [name for name, p, _, wd in rows if p.ndim <= 1 and wd != 0]
    assert not decayed, f'{config}: weight decay on 1-D parameters {decayed[:8]}'
    base_wd = cfg.optim_wrapper.optimizer.get('weight_decay', 0.)
    if base_wd:
        # the rule must not switch decay off for the matrices
        assert any(p.ndim >= 2 and wd == base_wd for _, p, _, wd in rows), config


@pytest.mark.parametrize('config', [c for c in CONFIGS if osp.basename(c).startswith('cotap_vit')
                                    and 'benchmarks' not in c])
def test_cotap_heads_lr_and_decay(config):
    cfg, rows = _groups(config)
    base_lr = cfg.optim_wrapper.optimizer.lr
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    heads = [(n, p, lr, wd) for n, p, lr, wd in rows if n.startswith(('patch_head', 'cls_head'))]
    assert heads, config
    for name, p, lr, wd in heads:
        assert lr == pytest.approx(10 * base_lr), name
        assert wd == (0. if p.ndim <= 1 else base_wd), name
    biases = [n for n, _, _, _ in heads if n.endswith('.bias')]
    assert biases, 'the heads have biases; the check above must have seen them'
    for name, p, lr, wd in rows:
        if not name.startswith(('patch_head', 'cls_head', 'teacher')):
            assert lr == pytest.approx(base_lr), name
    # the teacher is an EMA copy: never in the optimiser
    assert not any(n.startswith('teacher') for n, *_ in rows)


def test_explicit_custom_decay_mult_still_wins():
    """A custom key's own ``decay_mult`` keeps precedence over the 1-D rules."""
    import cotap_mm  # noqa: F401
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    cfg = dict(type='OptimWrapper', constructor='NoDecayOneDimOptimWrapperConstructor',
               optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1),
               paramwise_cfg=dict(flat_decay_mult=0., bias_decay_mult=0., norm_decay_mult=0.,
                                  custom_keys={'0.bias': dict(decay_mult=0.5),
                                               '0': dict(lr_mult=2.)}))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        groups = build_optim_wrapper(model, cfg).optimizer.param_groups
    by_shape = {(tuple(g['params'][0].shape), g['lr']): g['weight_decay'] for g in groups}
    assert by_shape[((4, 4), 2e-3)] == pytest.approx(0.1)  # '0.weight': custom lr, decayed
    assert by_shape[((4, ), 1e-3)] == 0.  # LayerNorm: norm rule ('0' is not in '.1.weight')
    bias = [g for g in groups if g['params'][0] is model[0].bias][0]
    assert bias['weight_decay'] == pytest.approx(0.05)  # explicit decay_mult=0.5 wins
