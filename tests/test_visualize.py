"""tools/visualize.py, cotap_mm.evaluation.backbone_maps and cotap_mm.visualization on a tiny
backbone and generated images."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from conftest import load_tool
import torch

from cotap_mm.evaluation import backbone_maps
from cotap_mm.models import CoTAP, CoTAPVisionTransformer
from cotap_mm.models.utils import attention_foreground_mask, load_backbone_weights
from cotap_mm.utils.images import load_squashed
from cotap_mm.visualization import (colorize_labels, fit_pca, image_grid, label_palette,
                                    mask_overlay, pca_to_rgb, save_png, upsample)

visualize = load_tool('visualize')

M = 8  # prototypes of the tiny backbone
S = 96  # --size: a 6x6 patch grid
BACKBONE = dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16, img_size=64,
                num_prototypes=M)


def _image(seed, size=80):
    """Left half: smooth red ramp; right half: blue/green noise texture (two distinct regions)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:, :size // 2, 0] = np.linspace(150, 255, size // 2, dtype=np.uint8)[None]
    img[:, size // 2:] = rng.integers(0, 256, (size, size - size // 2, 3), dtype=np.uint8)
    img[:, size // 2:, 0] //= 4
    return img


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('vis')
    img_dir = root / 'images'
    img_dir.mkdir()
    for i in range(2):
        cv2.imwrite(str(img_dir / f'img{i}.png'), cv2.cvtColor(_image(i), cv2.COLOR_RGB2BGR))
    single = root / 'extra.jpg'
    cv2.imwrite(str(single), cv2.cvtColor(_image(5, 70), cv2.COLOR_RGB2BGR))

    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(**{k: v for k, v in BACKBONE.items() if k != 'type'})
    backbone_ckpt = root / 'backbone.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in vit.state_dict().items()},
                    meta=dict()), backbone_ckpt)
    (root / 'backbone_cfg.py').write_text(f'model = {BACKBONE!r}\n')

    # a real CoTAP algorithm state dict (student + EMA teacher + heads + queues)
    algo = CoTAP(
        backbone=BACKBONE,
        patch_head=dict(type='CoTAPProjectionHead', in_channels=128, num_prototypes=16,
                        hidden_channels=32, bottleneck_channels=8),
        cls_head=dict(type='CoTAPProjectionHead', in_channels=128, num_prototypes=24,
                      hidden_channels=32, bottleneck_channels=8),
        correspondence_head=dict(type='CorrespondenceHead', pool_sizes=(2, 4), topk=3,
                                 num_neg_draws=1),
        bank=dict(capacity=8, num_insert=2, kmeans_iters=20),
        queue_sizes=(64, 32), queue_inserts=(16, 4),
        data_preprocessor=dict(type='SelfSupDataPreprocessor'))
    with torch.no_grad():  # make the teacher differ from the student
        for p in algo.teacher.module.backbone.parameters():
            p.add_(0.5 * torch.randn_like(p))
    cotap_ckpt = root / 'cotap.pth'
    torch.save(dict(state_dict=algo.state_dict(), meta=dict(iter=1)), cotap_ckpt)
    (root / 'cotap_cfg.py').write_text(
        f"model = dict(type='CoTAP', backbone={BACKBONE!r}, fg_mass=0.5)\n")
    return dict(root=root, img_dir=str(img_dir), single=str(single),
                backbone_ckpt=str(backbone_ckpt), backbone_cfg=str(root / 'backbone_cfg.py'),
                cotap_ckpt=str(cotap_ckpt), cotap_cfg=str(root / 'cotap_cfg.py'),
                algo=algo, vit=vit)


def _read(path):
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_end_to_end_pngs(files, tmp_path):
    out = tmp_path / 'out'
    written = visualize.main([
        files['backbone_cfg'], files['backbone_ckpt'], files['img_dir'], files['single'],
        '--out-dir', str(out), '--size', str(S), '--tile-size', '48', '--save-arrays',
        '--device', 'cpu'
    ])
    stems = ['img0', 'img1', 'extra']
    expected = {f'{s}_{k}.png' for s in stems for k in ('pca', 'prototypes', 'foreground')}
    expected |= {f'{s}_maps.npz' for s in stems} | {'summary.png'}
    assert {osp.basename(p) for p in written} == expected
    assert set(os.listdir(out)) == expected  # no temporary files left behind
    for s in stems:
        assert _read(str(out / f'{s}_pca.png')).shape == (S, 2 * S, 3)
        assert _read(str(out / f'{s}_prototypes.png')).shape == (S, S, 3)
        assert _read(str(out / f'{s}_foreground.png')).shape == (S, S, 3)
    # 3 rows x 4 columns of 48 px tiles, 4 px padding, 22 px title strip
    assert _read(str(out / 'summary.png')).shape == (22 + 3 * 52 + 4, 4 * 52 + 4, 3)

    # the left half of the PCA picture is the input image itself
    pca_png = _read(str(out / 'img0_pca.png'))[:, :, ::-1]
    from PIL import Image
    ref = np.asarray(Image.fromarray(_image(0)).resize((S, S), Image.BILINEAR))
    np.testing.assert_array_equal(pca_png[:, :S], ref)

    for s in stems:
        arrays = np.load(out / f'{s}_maps.npz')
        ids, pca_rgb, mask = arrays['prototype_ids'], arrays['pca_rgb'], arrays['fg_mask']
        assert ids.shape == (S // 16, S // 16) and pca_rgb.shape == (S // 16, S // 16, 3)
        assert ids.min() >= 0 and ids.max() < M
        assert set(np.unique(mask)) <= {0, 1} and mask.any()
        # the smooth left region and the textured right region get different colours
        left = pca_rgb[:, :2].reshape(-1, 3).astype(float).mean(0)
        right = pca_rgb[:, -2:].reshape(-1, 3).astype(float).mean(0)
        assert np.abs(left - right).max() > 20
        # the PNG is the patch colours upsampled with nearest (the default)
        np.testing.assert_array_equal(
            _read(str(out / f'{s}_pca.png'))[:, S:, ::-1], upsample(pca_rgb, (S, S)))


def test_maps_match_direct_backbone(files):
    from mmengine.config import Config
    backbone = backbone_maps.build_raw_backbone(Config.fromfile(files['backbone_cfg']))
    load_backbone_weights(backbone, files['backbone_ckpt'], which='student')
    backbone.eval()
    rgb, x = load_squashed(files['single'], S)
    assert rgb.shape == (S, S, 3) and x.shape == (3, S, S)
    x = x[None]
    maps = backbone_maps.compute_maps(backbone, x, fg_mass=0.6)

    ref = files['vit'].eval()  # the same weights, stock 'featmap' output
    with torch.no_grad():
        (fmap, ), extras = ref(x, return_attn=True)
    torch.testing.assert_close(maps['features'], fmap.permute(0, 2, 3, 1))
    torch.testing.assert_close(maps['cls_attn'], extras['attn'])
    direct = attention_foreground_mask(extras['attn'], (S // 16, S // 16), mass=0.6)
    torch.testing.assert_close(maps['fg_mask'], direct[:, 0])

    alpha = maps['prototype_attn']
    assert alpha.shape == (1, 2, (S // 16)**2, M)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(alpha.shape[:-1]))
    assert torch.equal(maps['prototype_ids'].flatten(1), alpha.mean(1).argmax(-1))


def test_teacher_and_student_of_cotap_checkpoint(files, tmp_path):
    algo = files['algo']
    state = algo.state_dict()
    assert 'backbone.oaf.kernel' in state and 'teacher.module.backbone.oaf.kernel' in state
    attns = {}
    for which in ('student', 'teacher'):
        out = tmp_path / which
        visualize.main([files['cotap_cfg'], files['cotap_ckpt'], files['single'], '--out-dir',
                        str(out), '--size', str(S), '--which', which, '--save-arrays',
                        '--device', 'cpu'])
        attns[which] = np.load(out / 'extra_maps.npz')['cls_attn']
        mask = np.load(out / 'extra_maps.npz')['fg_mask']
        # the config's fg_mass=0.5 is used, on the chosen network's attention
        net = algo.backbone if which == 'student' else algo.teacher.module.backbone
        _, x = load_squashed(files['single'], S)
        with torch.no_grad():
            _, extras = net.eval()(x[None], return_attn=True)
        np.testing.assert_allclose(attns[which], extras['attn'][0].numpy(), rtol=1e-5,
                                   atol=1e-6)
        direct = attention_foreground_mask(extras['attn'], (S // 16, S // 16), mass=0.5)
        np.testing.assert_array_equal(mask, direct[0, 0].numpy().astype(np.uint8))
    assert not np.allclose(attns['student'], attns['teacher'])


def test_strict_loading_errors(files, tmp_path):
    from mmengine.config import Config
    backbone = backbone_maps.build_raw_backbone(Config.fromfile(files['backbone_cfg']))
    with pytest.raises(KeyError, match='--which student'):
        load_backbone_weights(backbone, files['backbone_ckpt'], which='teacher')
    state = {f'backbone.{k}': v for k, v in files['vit'].state_dict().items()}
    del state['backbone.oaf.kernel']
    state['backbone.extra.weight'] = torch.zeros(1)
    state['backbone.oaf.norm_in.weight'] = torch.zeros(3)
    bad = tmp_path / 'bad.pth'
    torch.save(dict(state_dict=state), bad)
    from mmengine.config import Config
    backbone = backbone_maps.build_raw_backbone(Config.fromfile(files['backbone_cfg']))
    with pytest.raises(KeyError) as err:
        load_backbone_weights(backbone, str(bad), which='student')
    msg = str(err.value)
    assert 'oaf.kernel' in msg and 'extra.weight' in msg and 'oaf.norm_in.weight' in msg
    # wrong number of prototypes in the config: listed as a shape mismatch
    backbone = backbone_maps.build_raw_backbone(
        Config(dict(model=dict(BACKBONE, num_prototypes=M + 1))))
    with pytest.raises(KeyError, match='oaf.kernel: checkpoint'):
        load_backbone_weights(backbone, files['backbone_ckpt'], which='student')


def test_argument_errors(files, tmp_path):
    base = [files['backbone_cfg'], files['backbone_ckpt']]
    with pytest.raises(SystemExit):  # not a multiple of the patch size 16
        visualize.main(base + [files['single'], '--out-dir', str(tmp_path), '--size', '100'])
    with pytest.raises(SystemExit):
        visualize.parse_args(base + [str(tmp_path / 'missing.png'), '--out-dir', 'x'])
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(SystemExit):
        visualize.parse_args(base + [str(empty), '--out-dir', 'x'])
    from mmengine.config import Config
    with pytest.raises(ValueError, match='not a CoTAPVisionTransformer'):
        backbone_maps.build_raw_backbone(Config(dict(model=dict(type='ImageClassifier',
                                                        backbone=dict(type='ResNet')))))
    with pytest.raises(ValueError, match='with_oaf=False'):
        backbone_maps.build_raw_backbone(Config(dict(model=dict(BACKBONE, with_oaf=False))))
    # an mmseg-style config: scoped type, several out_indices, a pretrained init_cfg (ignored)
    seg = backbone_maps.build_raw_backbone(Config(dict(model=dict(
        type='EncoderDecoder',
        backbone=dict(BACKBONE, type='mmseg.CoTAPVisionTransformer', out_indices=[0, 1],
                      init_cfg=dict(type='Pretrained', checkpoint='missing.pth'))))))
    assert seg.out_type == 'raw' and list(seg.out_indices) == [1]
    load_backbone_weights(seg, files['backbone_ckpt'], which='student')
    from cotap_mm.visualization import output_stems
    assert output_stems(['a/x.png', 'b/x.png', 'c/y.jpg']) == ['x', 'x_2', 'y']


# -- pure rendering functions ----------------------------------------------------------------------


def test_pca_joint_fit_and_scaling():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4, 10)) + np.arange(10)
    b = rng.normal(size=(3, 5, 10)) * 3
    pca = fit_pca([a, b])
    assert pca['components'].shape == (3, 10)
    np.testing.assert_allclose(pca['components'] @ pca['components'].T, np.eye(3), atol=1e-8)
    assert np.all(np.diff(pca['explained_variance']) <= 0)
    rgb_a, rgb_b = pca_to_rgb(a, pca), pca_to_rgb(b, pca)
    assert rgb_a.dtype == np.uint8 and rgb_a.shape == (4, 4, 3) and rgb_b.shape == (3, 5, 3)
    # min-max over the joint data: every channel reaches 0 and 255 somewhere in a or b
    both = np.concatenate([rgb_a.reshape(-1, 3), rgb_b.reshape(-1, 3)])
    assert (both.min(0) == 0).all() and (both.max(0) == 255).all()
    # deterministic: a refit gives the same components (signs fixed by the largest loading)
    np.testing.assert_allclose(fit_pca([a, b])['components'], pca['components'])
    with pytest.raises(ValueError, match='channels'):
        pca_to_rgb(np.zeros((2, 2, 9)), pca)


def test_palette_labels_overlays_grid(tmp_path):
    pal = label_palette()
    assert pal.shape == (64, 3) and len({tuple(c) for c in pal}) == 64
    np.testing.assert_array_equal(label_palette(80)[:64], pal)
    ids = np.array([[0, 63], [5, 5]])
    np.testing.assert_array_equal(colorize_labels(ids)[0, 1], pal[63])
    with pytest.raises(ValueError, match='palette'):
        colorize_labels(np.array([[64]]))
    up = upsample(ids, (4, 6))
    assert up.shape == (4, 6) and up.dtype == ids.dtype and (up[:2, :3] == 0).all()

    img = np.full((4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4))
    mask[1:3, 1:3] = 1
    out = mask_overlay(img, mask, background=0.5)
    assert (out[0, 0] == 100).all() and not (out[1, 1] == 100).all()

    grid = image_grid([[img, img], [img, img]], pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    path = save_png(str(tmp_path / 'sub' / 'g.png'), grid)
    assert os.listdir(tmp_path / 'sub') == ['g.png']
    np.testing.assert_array_equal(cv2.imread(path)[:, :, ::-1], grid)
