"""The inner patch loss pools with ``torchvision.ops.roi_align``; the released code uses
``mmcv.ops.roi_align``. With the loss's settings (aligned, adaptive sampling, scale 1) both
compute the same values and gradients, so pretraining does not need mmcv's compiled ops."""
import pytest
import torch

from cotap_mm.models.losses.inner_patch_loss import _roi_align


def _random_rois(gen, num_maps, num_rois, h, w):
    """Boxes in token-grid units: fractional corners, some touching or crossing the border,
    some thinner than a bin (adaptive sampling then uses one point)."""
    x0 = torch.rand(num_rois, generator=gen, dtype=torch.float64) * (w + 1) - 1
    y0 = torch.rand(num_rois, generator=gen, dtype=torch.float64) * (h + 1) - 1
    bw = torch.rand(num_rois, generator=gen, dtype=torch.float64) * w + 0.05
    bh = torch.rand(num_rois, generator=gen, dtype=torch.float64) * h + 0.05
    index = torch.randint(num_maps, (num_rois, ), generator=gen).to(torch.float64)
    return torch.stack([index, x0, y0, x0 + bw, y0 + bh], dim=1)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_torchvision_roi_align_equals_mmcv(dtype):
    mmcv_ops = pytest.importorskip('mmcv.ops', reason='needs full mmcv (compiled ops)')
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 7, 12, 10, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 5, 64, 12, 10)
    grad_out = torch.randn(64, 7, 6, 6, generator=gen, dtype=torch.float64)
    results = []
    for pool in (lambda x, r: _roi_align(x, r, 6),
                 lambda x, r: mmcv_ops.roi_align(x, r, (6, 6), 1.0, 0, 'avg', True)):
        x = maps.to(dtype).requires_grad_()
        out = pool(x, rois.to(dtype))
        (out * grad_out.to(dtype)).sum().backward()
        results.append((out.detach(), x.grad))
    (tv_out, tv_grad), (mm_out, mm_grad) = results
    assert tv_out.shape == (64, 7, 6, 6)
    tol = dict(rtol=0, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tv_out, mm_out, **tol)
    torch.testing.assert_close(tv_grad, mm_grad, **tol)
    # the comparison is not vacuous: most rois see non-zero values and gradients
    assert (tv_out.abs().sum(dim=(1, 2, 3)) > 0).float().mean() > 0.9
    assert tv_grad.abs().sum() > 0


def test_all_ones_region_pools_to_one_or_just_below():
    """The keep test ``>= 1`` of the loss sees what the released code sees: an all-ones map
    pools to 1 up to fp32 rounding, never above."""
    maps = torch.ones(1, 1, 8, 8)
    rois = torch.tensor([[0, 0.5, 0.5, 7.5, 7.5], [0, 1.3, 2.1, 6.9, 5.7]])
    out = _roi_align(maps, rois, 6)
    assert torch.all(out <= 1) and torch.all(out > 1 - 1e-6)
