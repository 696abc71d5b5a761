import pytest
import torch
import torch.nn.functional as F

from cotap_mm.models.losses import InnerPatchLoss, inner_patch_loss
from cotap_mm.models.utils.crop_layout import as_coded_inner_masks
from cotap_mm.registry import MODELS

G, L, B, K = 2, 4, 2, 10
M, V = 2 * B, G + L


def _boxes(*lead, size):
    xy = torch.rand(*lead, 2, 2) * size  # two corners
    lo, hi = xy.min(-2).values, xy.max(-2).values
    hi = torch.maximum(hi, (lo + 0.2 * size).clamp(max=size))
    return torch.cat([lo, hi], -1)  # (..., 4) x1, y1, x2, y2


def _inputs(seed=0, fg=0.5):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    codes = torch.softmax(torch.randn(G, M, K, 14, 14, generator=g) * 2, dim=2)
    s_glob = (torch.rand(G, M, K, 14, 14, generator=g) * 2 - 1).requires_grad_()
    s_loc = (torch.rand(L, M, K, 6, 6, generator=g) * 2 - 1).requires_grad_()
    bbox_gc = _boxes(M, G, V, size=224)
    sizes = torch.tensor([224.] * G + [96.] * L).view(1, V, 1, 1)
    bbox_all = _boxes(M, V, G, size=1) * sizes
    mask = (F.avg_pool2d(torch.rand(G * M, 1, 16, 16, generator=g), 3, 1) < fg).float()
    return codes, s_glob, s_loc, bbox_gc, bbox_all, mask.view(G, M, 1, 14, 14)


def _loop_reference(codes, s_glob, s_loc, bbox_gc, bbox_all, mask, T=0.1):
    """Literal per-(g, v) transcription of docs/method.md §3.4 with torchvision's roi_align."""
    from torchvision.ops import roi_align
    idx = torch.arange(M, dtype=torch.float).unsqueeze(1)
    students = [s_glob[i] for i in range(G)] + [s_loc[i] for i in range(L)]
    total = 0.
    for g in range(G):
        rois = torch.cat([idx.repeat_interleave(V, 0), bbox_gc[:, g].reshape(-1, 4) / 16], 1)
        q = roi_align(codes[g], rois, 6, 1.0, -1, True).view(M, V, K, 6, 6)
        keep = roi_align(mask[g], rois, 6, 1.0, -1, True).view(M, V, 6, 6) >= 1.0
        lg = 0.
        for v in range(V):
            if v == g:
                continue
            r = torch.cat([idx, bbox_all[:, v, g] / 16], 1)
            p = F.log_softmax(roi_align(students[v], r, 6, 1.0, -1, True) / T, dim=1)
            ce = -(q[:, v] * p).sum(1)
            k = keep[:, v].float()
            lg = lg + (ce * k).sum() / k.sum().clamp(min=1)
        total = total + lg / (V - 1)
    return total / G


def test_matches_loop_reference_and_grads():
    pytest.importorskip('torchvision')
    inputs = _inputs()
    loss = inner_patch_loss(*inputs)
    ref = _loop_reference(*inputs)
    assert loss.shape == () and loss > 0
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    loss.backward()
    codes, s_glob, s_loc = inputs[:3]
    assert s_glob.grad.abs().sum() > 0 and s_loc.grad.abs().sum() > 0
    assert codes.grad is None
    g1, g2 = s_glob.grad.clone(), s_loc.grad.clone()
    s_glob.grad = s_loc.grad = None
    ref.backward()
    torch.testing.assert_close(s_glob.grad, g1)
    torch.testing.assert_close(s_loc.grad, g2)


def test_identical_targets_give_entropy():
    """Spatially constant maps: every aligned region carries the image's code, and a student
    equal to T * log q reaches the minimum, the entropy of the codes."""
    torch.manual_seed(2)
    q = torch.softmax(torch.randn(M, K) * 2, -1)
    codes = q[None, :, :, None, None].expand(G, M, K, 14, 14).contiguous()
    logits = 0.1 * q.log()
    s_glob = logits[None, :, :, None, None].expand(G, M, K, 14, 14).clone().requires_grad_()
    s_loc = logits[None, :, :, None, None].expand(L, M, K, 6, 6).clone().requires_grad_()
    full_g = torch.tensor([0., 0., 224., 224.]).expand(M, G, V, 4)
    sizes = torch.tensor([224.] * G + [96.] * L).view(1, V, 1, 1)
    full_all = torch.tensor([0., 0., 1., 1.]).expand(M, V, G, 4) * sizes
    mask = torch.ones(G, M, 14, 14)
    loss = inner_patch_loss(codes, s_glob, s_loc, full_g, full_all, mask)
    entropy = -(q * q.log()).sum(-1).mean()
    torch.testing.assert_close(loss, entropy)
    loss.backward()  # a minimum: zero gradient
    assert s_glob.grad.abs().max() < 1e-5 and s_loc.grad.abs().max() < 1e-5
    other = inner_patch_loss(codes, s_glob.detach() + 0.05 * torch.randn_like(s_glob), s_loc,
                             full_g, full_all, mask)
    assert other > loss
    # random boxes give the same value on constant maps, once fp-rounded bins are kept too
    _, _, _, bbox_gc, bbox_all, _ = _inputs(3)
    torch.testing.assert_close(
        inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, mask, keep_threshold=1 - 1e-4),
        entropy)


def test_keep_threshold_rounding():
    """Pooling an all-ones mask gives 0.99999988 in some bins: 1.0 (as released) drops them."""
    codes, s_glob, s_loc, bbox_gc, bbox_all, _ = _inputs(4)
    ones = torch.ones(G, M, 14, 14)
    strict = inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, ones)
    loose = inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, ones, keep_threshold=0.999)
    assert torch.isfinite(strict) and torch.isfinite(loose)
    with pytest.raises(ValueError, match='keep_threshold'):
        inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, ones, keep_threshold=0)


def test_background_mask_gives_zero():
    codes, s_glob, s_loc, bbox_gc, bbox_all, mask = _inputs()
    loss = inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, torch.zeros_like(mask))
    assert loss == 0
    loss.backward()
    assert s_glob.grad.abs().max() == 0


def test_no_local_crops_and_module():
    codes, s_glob, s_loc, bbox_gc, bbox_all, mask = _inputs()
    loss = inner_patch_loss(codes, s_glob, None, bbox_gc[:, :, :G], bbox_all[:, :G], mask)
    assert torch.isfinite(loss)
    mod = MODELS.build(dict(type='InnerPatchLoss', patch_size=16, loss_weight=0.5))
    full = inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, mask[:, :, 0])
    torch.testing.assert_close(mod(codes, s_glob, s_loc, bbox_gc, bbox_all, mask), 0.5 * full)


def test_as_coded_mask_order():
    # value = 100 * half + 10 * crop + image, aligned layout (G, [u's; v's])
    half = torch.arange(2).view(1, 2, 1)
    crop = torch.arange(G).view(G, 1, 1)
    img = torch.arange(B).view(1, 1, B)
    aligned = (100 * half + 10 * crop + img).reshape(G, M).float()
    coded = as_coded_inner_masks(aligned)
    b = 1
    assert coded[0, b] == aligned[0, b]            # crop 0 of u_b: correct
    assert coded[0, B + b] == 10 + b               # crop 0 of v_b gets u_b's crop-1 mask
    assert coded[1, b] == 100 + b                  # crop 1 of u_b gets v_b's crop-0 mask
    assert coded[1, B + b] == aligned[1, B + b]    # crop 1 of v_b: correct
    inputs = _inputs()
    a = inner_patch_loss(*inputs)
    c = InnerPatchLoss(mask_alignment='as_coded', patch_size=16)(*inputs)
    assert torch.isfinite(c) and not torch.isclose(a, c)


def test_errors():
    codes, s_glob, s_loc, bbox_gc, bbox_all, mask = _inputs()
    with pytest.raises(ValueError, match='teacher_codes'):
        inner_patch_loss(codes.requires_grad_(), s_glob, s_loc, bbox_gc, bbox_all, mask)
    codes = codes.detach()
    with pytest.raises(ValueError, match='bbox_gc'):
        inner_patch_loss(codes, s_glob, s_loc, bbox_gc[:, :, :3], bbox_all, mask)
    with pytest.raises(ValueError, match='fg_mask'):
        inner_patch_loss(codes, s_glob, s_loc, bbox_gc, bbox_all, mask[:, :, :, :7])
    with pytest.raises(ValueError, match='mask_alignment'):
        InnerPatchLoss(mask_alignment='intended')
    with pytest.raises(TypeError, match='student_local'):
        inner_patch_loss(codes, s_glob, s_loc.long(), bbox_gc, bbox_all, mask)
    with pytest.raises(ValueError, match='patch_size.*not set'):
        InnerPatchLoss()(codes, s_glob, s_loc, bbox_gc, bbox_all, mask)
