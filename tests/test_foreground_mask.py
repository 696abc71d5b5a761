import pytest
import torch

from cotap_mm.models.utils import attention_foreground_mask
from cotap_mm.models.utils.foreground_mask import gaussian_blur


def test_blur_matches_torchvision():
    tv = pytest.importorskip('torchvision.transforms')
    x = torch.rand(3, 14, 10)
    torch.testing.assert_close(gaussian_blur(x, 7, 0.6), tv.GaussianBlur(7, 0.6)(x))


def test_peak_is_kept_and_mass():
    torch.manual_seed(0)
    attn = torch.rand(2, 6, 14, 14) * 0.01
    attn[0, :, 3, 4] = 1.0
    attn[1, :, 10, 12] = 1.0
    mask = attention_foreground_mask(attn.flatten(2), grid=(14, 14))
    assert mask.shape == (2, 1, 14, 14) and mask.dtype == attn.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert mask[0, 0, 3, 4] == 1 and mask[1, 0, 10, 12] == 1
    blurred = gaussian_blur(attn.mean(1), 7, 0.6)
    kept = (blurred * mask[:, 0]).sum((1, 2)) / blurred.sum((1, 2))
    assert torch.all(kept >= 0.6 - 1e-6)
    # minimal: dropping the smallest kept entry would fall below the mass
    smallest = torch.where(mask[:, 0] > 0, blurred, torch.full_like(blurred, float('inf')))
    smallest = smallest.flatten(1).min(1).values
    assert torch.all(kept - smallest / blurred.sum((1, 2)) < 0.6)


def test_non_square_grid_and_reference():
    torch.manual_seed(1)
    attn = torch.rand(3, 4, 8 * 12, requires_grad=True)
    mask = attention_foreground_mask(attn, grid=(8, 12), mass=0.5)
    assert mask.shape == (3, 1, 8, 12) and not mask.requires_grad
    # literal reference: DINO-style sort / cumsum / unsort
    a = gaussian_blur(attn.detach().view(3, 4, 8, 12).mean(1), 7, 0.6).flatten(1)
    val, idx = torch.sort(a)
    val = val / val.sum(1, keepdim=True)
    th = torch.cumsum(val, 1) > 0.5
    ref = torch.gather(th, 1, torch.argsort(idx)).float().view(3, 1, 8, 12)
    torch.testing.assert_close(mask, ref)


def test_errors():
    with pytest.raises(ValueError, match='grid'):
        attention_foreground_mask(torch.rand(1, 2, 10))
    with pytest.raises(ValueError, match='grid'):
        attention_foreground_mask(torch.rand(1, 2, 10), grid=(3, 4))
    with pytest.raises(ValueError, match='mass'):
        attention_foreground_mask(torch.rand(1, 2, 16), grid=(4, 4), mass=0)
    with pytest.raises(ValueError, match='cls_attn'):
        attention_foreground_mask(torch.rand(2, 16))
