"""ContinuousAPLoss: every impl against a float64 transcription of the formulas of docs/method.md."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cotap_mm.models.losses import ContinuousAPLoss, continuous_ap_loss, select_impl
from cotap_mm.models.losses.ap_rank_sums import _SortedRankSums, sorted_rank_sums

IMPLS = ('dense', 'sorted', 'auto')
TAU, THETA, ALPHA = 0.5, -0.2, 0.1


def spec_loss(pred, target, pos_mask, tau=TAU, theta=THETA, alpha=ALPHA):
    """method.md §1.4 written out literally for one list, in float64 (autograd on pred)."""
    p, t = pred.double(), target.double()
    x = p[:, None] - p[None, :]                      # x_ij = p_i - p_j
    xc = torch.clamp(x, max=tau)
    ell = torch.where(xc >= 0, (1 - xc / tau)**2, 1 - 2 * x / tau)
    neg = (torch.clamp(t[:, None] - t[None, :], min=0) * ell).sum(1)
    pos = ((t[None, :] >= t[:, None]) & (p[None, :] >= p[:, None])).double().sum(1)
    w = torch.clamp(t - theta, min=0) * torch.where(pos_mask, 1.0, alpha).double()
    r = neg / (pos + 1e-5)
    g = r / (1 + r)
    return (w * g).sum() / (w.sum() + 1e-5)


def reference(pred, target, pos_mask):
    """Loss and gradient of docs/method.md §1.4, (n,) or the mean over (L, n), in float64."""
    p = pred.detach().double().requires_grad_(True)
    if p.dim() == 1:
        loss = spec_loss(p, target, pos_mask)
    else:
        loss = torch.stack([spec_loss(p[i], target[i], pos_mask[i])
                            for i in range(p.shape[0])]).mean()
    loss.backward()
    return loss.detach(), p.grad


def evaluate(pred, target, pos_mask, impl, **kwargs):
    p = pred.detach().clone().requires_grad_(True)
    loss = continuous_ap_loss(p, target, pos_mask, impl=impl, **kwargs)
    loss.backward()
    return loss.detach(), p.grad


def make_list(shape, levels=None, seed=0, dtype=torch.float64, pos_frac=0.2):
    """Similarities in [-0.4, 1]; quantised to ``levels`` values per unit for heavy ties."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=gen, dtype=torch.float64) * 1.4 - 0.4
    p = torch.rand(shape, generator=gen, dtype=torch.float64) * 1.4 - 0.4
    if levels:
        t, p = (t * levels).round() / levels, (p * levels).round() / levels
    mask = torch.rand(shape, generator=gen) < pos_frac
    return p.to(dtype), t.to(dtype), mask


def assert_close_rel(actual, expected, rel=1e-6):
    # losses lie in [0, 1): below 1e-9 the relative error is measured against 1e-9
    scale = expected.abs().max().clamp(min=1e-9)
    err = (actual.double() - expected.double()).abs().max() / scale
    assert err <= rel, f'relative error {err:.3e} > {rel:.0e}'


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('shape,levels', [
    ((1, ), None), ((2, ), None), ((2, ), 1), ((37, ), None), ((64, ), 4), ((65, ), None),
    ((300, ), 8), ((513, ), 16), ((1000, ), None), ((3, 129), 5), ((4, 200), None)])
def test_matches_spec_float64(impl, shape, levels):
    p, t, mask = make_list(shape, levels, seed=sum(shape))
    ref_loss, ref_grad = reference(p, t, mask)
    loss, grad = evaluate(p, t, mask, impl)
    assert loss.dtype == torch.float64
    assert_close_rel(loss, ref_loss)
    assert_close_rel(grad, ref_grad)


@pytest.mark.parametrize('impl', IMPLS)
def test_all_equal_values_and_duplicates(impl):
    # every entry tied in target and prediction, then pairs of exact duplicates
    p = torch.full((50, ), 0.3, dtype=torch.float64)
    t = torch.full((50, ), 0.6, dtype=torch.float64)
    mask = torch.arange(50) % 3 == 0
    for pred, target in ((p, t), (p.repeat_interleave(2)[:50], (t + torch.arange(50) % 5 *
                                                                0.1).repeat_interleave(2)[:50])):
        ref_loss, ref_grad = reference(pred, target, mask)
        loss, grad = evaluate(pred, target, mask, impl)
        assert_close_rel(loss, ref_loss)
        assert_close_rel(grad, ref_grad)


@pytest.mark.parametrize('impl', IMPLS)
def test_float32_inputs(impl):
    p, t, mask = make_list((2, 700), None, seed=3, dtype=torch.float32)
    ref_loss, ref_grad = reference(p, t, mask)
    loss, grad = evaluate(p, t, mask, impl)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    assert_close_rel(loss, ref_loss)
    assert_close_rel(grad, ref_grad, rel=2e-6)  # fp32 accumulation of up to 700 terms


@pytest.mark.parametrize('impl', IMPLS)
def test_all_negative_list(impl):
    p, t, _ = make_list((120, ), 6, seed=5)
    mask = torch.zeros(120, dtype=torch.bool)
    ref_loss, ref_grad = reference(p, t, mask)
    loss, grad = evaluate(p, t, mask, impl)
    assert ref_loss > 0
    assert_close_rel(loss, ref_loss)
    assert_close_rel(grad, ref_grad)


@pytest.mark.parametrize('impl', IMPLS)
def test_zero_total_weight_gives_zero_loss_and_gradient(impl):
    p, _, mask = make_list((90, ), None, seed=6)
    t = torch.linspace(-1.0, THETA, 90, dtype=torch.float64)  # every target <= threshold
    loss, grad = evaluate(p, t, mask, impl)
    assert loss.item() == 0.0
    assert torch.isfinite(grad).all() and grad.abs().max().item() == 0.0


@pytest.mark.parametrize('impl', IMPLS)
def test_batched_lists_are_independent(impl):
    p, t, mask = make_list((3, 150), 10, seed=7)
    loss, grad = evaluate(p, t, mask, impl)
    singles = [evaluate(p[i], t[i], mask[i], impl) for i in range(3)]
    assert_close_rel(loss, torch.stack([s[0] for s in singles]).mean())
    assert_close_rel(grad, torch.stack([s[1] for s in singles]) / 3)


@pytest.mark.parametrize('n,levels', [(10, None), (70, 3), (300, 20), (1025, 7)])
def test_sorted_pos_count_exact_with_ties(n, levels):
    p, t, _ = make_list((2, n), levels, seed=n)
    dense = ((t[:, None, :] >= t[:, :, None]) & (p[:, None, :] >= p[:, :, None])).sum(-1)
    assert torch.equal(sorted_rank_sums(p, t, TAU)[1], dense.double())


def test_hand_written_backward_gradcheck():
    # distinct values: N is smooth there (P is a count and is checked separately)
    p, t, _ = make_list((2, 90), None, seed=11)
    p.requires_grad_(True)

    def neg_sum(pred):
        return _SortedRankSums.apply(pred, t, TAU)[0]

    assert torch.autograd.gradcheck(neg_sum, (p, ), eps=1e-7, atol=1e-6, rtol=1e-5)


def test_sorted_and_dense_agree_on_a_long_list():
    p, t, mask = make_list((3000, ), 64, seed=13, dtype=torch.float32)
    dense = evaluate(p, t, mask, 'dense')
    sorted_ = evaluate(p, t, mask, 'sorted')
    assert_close_rel(sorted_[0], dense[0], rel=1e-6)
    assert_close_rel(sorted_[1], dense[1], rel=1e-5)  # dense sums in fp32


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('impl', IMPLS)
def test_half_inputs_are_computed_in_float32(dtype, impl):
    p, t, mask = make_list((400, ), None, seed=17, dtype=dtype)
    loss, grad = evaluate(p, t, mask, impl)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    ref_loss, _ = reference(p.float(), t.float(), mask)
    assert_close_rel(loss, ref_loss)


@pytest.mark.parametrize('impl', IMPLS)
def test_under_cpu_autocast(impl):
    p, t, mask = make_list((256, ), None, seed=19, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss, grad = evaluate(p, t, mask, impl)
    ref_loss, ref_grad = reference(p, t, mask)
    assert loss.dtype == torch.float32
    assert_close_rel(loss, ref_loss)
    assert_close_rel(grad, ref_grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('impl', IMPLS)
def test_cuda_matches_cpu(impl):
    p, t, mask = make_list((2, 3000), 50, seed=23, dtype=torch.float32)
    ref_loss, ref_grad = reference(p, t, mask)
    loss, grad = evaluate(p.cuda(), t.cuda(), mask.cuda(), impl)
    assert_close_rel(loss.cpu(), ref_loss)
    assert_close_rel(grad.cpu(), ref_grad, rel=1e-5)
    with torch.autocast('cuda', dtype=torch.float16):
        loss16, _ = evaluate(p.cuda().half(), t.cuda().half(), mask.cuda(), impl)
    assert torch.isfinite(loss16)


# --- properties over random lists with ties ------------------------------------------------

values = st.integers(min_value=-4, max_value=10).map(lambda v: v / 10)  # few levels: many ties


@st.composite
def tied_lists(draw):
    n = draw(st.integers(min_value=1, max_value=160))
    t = draw(st.lists(values, min_size=n, max_size=n))
    p = draw(st.lists(values | st.floats(-1, 1, allow_nan=False), min_size=n, max_size=n))
    y = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return (torch.tensor(p, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
            torch.tensor(y, dtype=torch.bool))


@settings(max_examples=60, deadline=None)
@given(tied_lists())
def test_property_every_impl_matches_spec(lst):
    p, t, mask = lst
    ref_loss, ref_grad = reference(p, t, mask)
    for impl in ('dense', 'sorted'):
        loss, grad = evaluate(p, t, mask, impl)
        assert_close_rel(loss, ref_loss)
        assert_close_rel(grad, ref_grad)


@settings(max_examples=30, deadline=None)
@given(tied_lists(), st.randoms(use_true_random=False))
def test_property_permutation_invariant_and_bounded(lst, rnd):
    p, t, mask = lst
    perm = list(range(len(p)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    loss = continuous_ap_loss(p, t, mask, impl='sorted')
    shuffled = continuous_ap_loss(p[perm], t[perm], mask[perm], impl='sorted')
    assert 0.0 <= loss.item() < 1.0
    assert abs(loss.item() - shuffled.item()) <= 1e-12


# --- API ------------------------------------------------------------------------------------


def test_module_is_registered_and_scales_by_loss_weight():
    from mmpretrain.registry import MODELS
    loss_fn = MODELS.build(dict(type='ContinuousAPLoss', loss_weight=2.0, impl='sorted'))
    assert isinstance(loss_fn, ContinuousAPLoss)
    p, t, mask = make_list((80, ), 5, seed=29)
    assert_close_rel(loss_fn(p, t, mask), 2.0 * continuous_ap_loss(p, t, mask, impl='dense'))


def test_hyperparameters_reach_the_loss():
    p, t, mask = make_list((100, ), None, seed=31)
    for kwargs in (dict(tau=0.3), dict(weight_threshold=0.1), dict(neg_weight=0.5)):
        a = continuous_ap_loss(p, t, mask, impl='sorted', **kwargs)
        b = continuous_ap_loss(p, t, mask, impl='dense', **kwargs)
        assert_close_rel(a, b)
        assert abs(a.item() - continuous_ap_loss(p, t, mask).item()) > 1e-6


def test_select_impl():
    assert select_impl(100, torch.device('cpu')) == 'dense'
    assert select_impl(4200, torch.device('cpu')) == 'sorted'
    assert select_impl(300, torch.device('cpu'), num_lists=10**6) == 'sorted'


def test_gradient_flows_to_pred_only():
    p, t, mask = make_list((50, ), None, seed=37)
    p.requires_grad_(True)
    continuous_ap_loss(p, t, mask).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs,exc,match', [
    (dict(pred=[0.1, 0.2]), TypeError, '`pred` must be a torch.Tensor'),
    (dict(pred=torch.tensor([1, 2])), TypeError, '`pred` must be a floating-point'),
    (dict(pos_mask=torch.tensor([1, 0, 1])), TypeError, '`pos_mask` must be a bool'),
    (dict(target=torch.rand(4)), ValueError, '`target` has shape'),
    (dict(pos_mask=torch.ones(2, 3, dtype=torch.bool)), ValueError, '`pos_mask` has shape'),
    (dict(pred=torch.rand(1, 1, 3), target=torch.rand(1, 1, 3),
          pos_mask=torch.ones(1, 1, 3, dtype=torch.bool)), ValueError, r'\(n,\) or \(L, n\)'),
    (dict(target=torch.rand(3, requires_grad=True)), ValueError, '`target` requires grad'),
    (dict(impl='fast'), ValueError, '`impl` must be one of'),
    (dict(tau=0.0), ValueError, '`tau` must be > 0'),
])
def test_bad_input_is_rejected_clearly(kwargs, exc, match):
    args = dict(pred=torch.rand(3), target=torch.rand(3),
                pos_mask=torch.tensor([True, False, True]))
    args.update(kwargs)
    options = {k: args.pop(k) for k in ('impl', 'tau') if k in args}
    with pytest.raises(exc, match=match):
        continuous_ap_loss(args['pred'], args['target'], args['pos_mask'], **options)


def test_tiling_does_not_change_the_result(monkeypatch):
    from cotap_mm.models.losses import ap_rank_sums
    p, t, mask = make_list((2, 1000), 30, seed=41)
    expected = evaluate(p, t, mask, 'sorted')
    monkeypatch.setattr(ap_rank_sums, 'CHUNK_ELEMENTS', 3 * 64 * 64)  # many small tiles
    tiled = evaluate(p, t, mask, 'sorted')
    assert_close_rel(tiled[0], expected[0], rel=1e-12)
    assert_close_rel(tiled[1], expected[1], rel=1e-12)
