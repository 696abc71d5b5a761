"""CoTAPDataPreprocessor: teacher/student views, torchvision-equivalent ops, jitter granularity."""
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from cotap_mm.models.utils import gaussian_blur
from cotap_mm.models.utils.data_preprocessor import BatchPhotometricAug, CoTAPDataPreprocessor
from cotap_mm.registry import MODELS

MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def batch(b=4, sizes=(16, 8), n_views=24, same=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = []
    for v in range(n_views):
        s = sizes[0] if v % 6 < 2 else sizes[1]
        x = torch.randint(0, 256, (1 if same else b, 3, s, s), generator=g, dtype=torch.uint8)
        views.append(x.expand(b, -1, -1, -1).contiguous())
    return dict(inputs=views, data_samples=[None] * b)


def is_gray(x):  # (N, 3, H, W) -> (N,)
    return ((x[:, 0] - x[:, 1]).abs().amax((1, 2)) < 1e-5) & \
           ((x[:, 1] - x[:, 2]).abs().amax((1, 2)) < 1e-5)


def test_teacher_is_normalised_rgb():
    pre = MODELS.build(dict(type='CoTAPDataPreprocessor'))
    data = batch()
    out = pre(data, training=True)
    assert set(out['inputs']) == {'student', 'teacher'}
    for x, t, s in zip(data['inputs'], out['inputs']['teacher'], out['inputs']['student']):
        ref = (x[:, [2, 1, 0]].float() - MEAN) / STD
        torch.testing.assert_close(t, ref)
        assert s.shape == t.shape and s.dtype == torch.float32
    assert out['data_samples'] == data['data_samples']


def test_errors():
    with pytest.raises(ValueError, match='jitter_granularity'):
        CoTAPDataPreprocessor(jitter_granularity='per_batch')


def test_ops_match_torchvision():
    torch.manual_seed(0)
    aug = BatchPhotometricAug()
    x = torch.rand(6, 3, 12, 12)
    p = aug.sample_params(6)
    p['jitter'][:] = True
    p['gray'][:] = torch.tensor([True, False, False, True, False, False])
    p['blur'][:] = torch.tensor([True, True, False, False, True, False])
    y = aug.apply(x, p)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(6):
        r = x[i]
        for op in p['order'][i].tolist():
            r = fns[op](r, float(p['factors'][i, op]))
        if p['gray'][i]:
            r = TF.rgb_to_grayscale(r, num_output_channels=3)
        if p['blur'][i]:
            s = float(p['sigma'][i])
            r = TF.gaussian_blur(r, [7, 7], [s, s])
        torch.testing.assert_close(y[i], r, atol=2e-5, rtol=1e-4)


def test_blur_matches_torchvision_on_small_crops():
    x = torch.rand(3, 3, 8, 8)
    sig = torch.tensor([0.1, 1.0, 2.0])
    y = gaussian_blur(x, 7, sig)
    for i in range(3):
        s = float(sig[i])
        torch.testing.assert_close(y[i], TF.gaussian_blur(x[i], [7, 7], [s, s]), atol=1e-5,
                                   rtol=1e-4)


@pytest.mark.parametrize('mode', ['per_image', 'per_slot_batch'])
def test_granularity_statistics(mode):
    torch.manual_seed(0)
    b = 64
    pre = CoTAPDataPreprocessor(jitter_granularity=mode, to_rgb=False)
    data = batch(b=b, sizes=(8, 8), same=True)  # every image in a slot is the same image
    student = pre(data)['inputs']['student']
    slot_identical = [bool((s == s[:1]).all()) for s in student]
    grays = torch.stack([is_gray(s * STD + MEAN) for s in student])  # (24, B)
    if mode == 'per_slot_batch':
        # One parameter draw per slot: identical inputs stay identical within the slot...
        assert all(slot_identical)
        assert (grays == grays[:, :1]).all()
        # ...but slots differ from each other (independent draws).
        assert len({round(float(s[0].mean()), 4) for s in student}) > 12
    else:
        assert not any(slot_identical)
        frac = grays.float().mean().item()  # RandomGrayscale(0.2) over 24 * 64 images
        assert 0.15 < frac < 0.25
        # Within a slot the grayscale coin differs between images.
        assert ((grays != grays[:, :1]).any(dim=1)).sum() > 12


def test_apply_probabilities_per_image():
    torch.manual_seed(1)
    p = BatchPhotometricAug().sample_params(20000)
    assert abs(p['jitter'].float().mean() - 0.8) < 0.02
    assert abs(p['gray'].float().mean() - 0.2) < 0.02
    assert abs(p['blur'].float().mean() - 0.5) < 0.02
    assert p['factors'][:, :3].min() >= 0.2 and p['factors'][:, :3].max() <= 1.8
    assert p['factors'][:, 3].abs().max() <= 0.2
    assert p['sigma'].min() >= 0.1 and p['sigma'].max() <= 2.0
    # Every op order occurs.
    assert len({tuple(o) for o in p['order'][:2000].tolist()}) == 24
