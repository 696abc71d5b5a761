"""The raw-pixel floor: PixelPatches (cotap_mm/models/backbones/pixel_patches.py) and
configs/demo/linear-probe-pixels_synthetic.py."""
import itertools
import os.path as osp

import pytest
import torch
from mmengine import Config
from mmengine.registry import DefaultScope

import cotap_mm.segmentation  # noqa: F401
from cotap_mm.models.backbones import PixelPatches

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(REPO, 'configs', 'demo', 'linear-probe-pixels_synthetic.py')
_SCOPE_IDS = itertools.count()


@pytest.fixture
def mmseg_scope():
    return DefaultScope.get_instance(f'test_pixel_patches_{next(_SCOPE_IDS)}', scope_name='mmseg')


@pytest.mark.parametrize('p', [1, 4, 8])
def test_patch_vectors_are_the_pixels(p):
    x = torch.randn(2, 3, 4 * p, 3 * p)
    (out, ) = PixelPatches(patch_size=p)(x)
    assert out.shape == (2, 3 * p * p, 4, 3)
    for b, y, xx in [(0, 0, 0), (1, 3, 2), (0, 2, 1)]:
        patch = x[b, :, y * p:(y + 1) * p, xx * p:(xx + 1) * p]  # (3, p, p)
        torch.testing.assert_close(out[b, :, y, xx], patch.reshape(-1), rtol=0, atol=0)
    # channel c * p * p + i * p + j is input channel c at pixel (i, j) of the patch
    c, i, j = 2, p - 1, 0
    torch.testing.assert_close(out[:, c * p * p + i * p + j], x[:, c, i::p, j::p])


def test_no_parameters_and_gradient_flows():
    m = PixelPatches(patch_size=8)
    assert list(m.parameters()) == []
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    m(x)[0].sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r'divisible by patch_size=8'):
        PixelPatches(8)(torch.zeros(1, 3, 96, 92))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        PixelPatches(8)(torch.zeros(3, 96, 96))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match='patch_size'):
            PixelPatches(patch_size=bad)


def test_registered_in_both_registries():
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    assert PRETRAIN_MODELS.get('PixelPatches') is PixelPatches
    assert SEG_MODELS.get('PixelPatches') is PixelPatches


def test_config_replaces_only_the_backbone(mmseg_scope):
    from mmseg.registry import MODELS
    cfg = Config.fromfile(CFG)
    base = Config.fromfile(osp.join(REPO, 'configs', 'demo', 'linear-probe_synthetic.py'))
    assert cfg.model.backbone == dict(type='PixelPatches', patch_size=8)  # nothing left over
    assert cfg.model.decode_head.in_channels == cfg.model.decode_head.channels == 192
    # the probe protocol is the demo's: same head, data, schedule, optimiser, metric, seed
    for key in ('train_dataloader', 'val_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler', 'val_evaluator', 'randomness', 'data_root'):
        assert cfg[key] == base[key], key
    assert cfg.model.data_preprocessor == base.model.data_preprocessor
    head, base_head = dict(cfg.model.decode_head), dict(base.model.decode_head)
    for k in ('in_channels', 'channels'):
        head.pop(k), base_head.pop(k)
    assert head == base_head
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, PixelPatches)
    assert {n for n, _ in model.named_parameters()} == {'decode_head.conv_seg.weight',
                                                         'decode_head.conv_seg.bias'}
    (feat, ) = model.extract_feat(torch.zeros(2, 3, 96, 96))
    assert feat.shape == (2, 192, 12, 12)


def test_train_and_val_iterations(tmp_path):
    """Two training iterations and a validation with mmengine's Runner on a few scenes: the
    head learns, mIoU is reported."""
    from mmengine.runner import Runner

    from cotap_mm.datasets.synthetic import write_synthetic_dataset
    data = tmp_path / 'data'
    write_synthetic_dataset(str(data), seed=0, size=96, num_coco=0, num_imagenet=0,
                            num_seg_train=4, num_seg_val=2)
    cfg = Config.fromfile(CFG)
    cfg.work_dir = str(tmp_path / 'work')
    for split in ('train', 'val', 'test'):
        cfg[f'{split}_dataloader'].dataset.data_root = str(data / 'seg')
    cfg.train_dataloader.batch_size = 2
    cfg.val_dataloader.batch_size = 2
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.logger.interval = 1
    runner = Runner.from_cfg(cfg)
    before = runner.model.decode_head.conv_seg.weight.detach().clone()
    runner.train()
    after = runner.model.decode_head.conv_seg.weight.detach()
    assert not torch.equal(before, after)
    metrics = runner.val_loop.run()
    assert 0. <= metrics['mIoU'] <= 100.
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_2.pth'))
