"""The continuous-target AP ranking loss of CoTAP (the "CoTAP loss").

One list holds ``n`` entries, each with a continuous teacher target ``t_i`` (no gradient), a student
prediction ``p_i`` and a binary label ``y_i``. With the surrogate ``ell`` of margin ``tau``::

    ell(x) = (1 - min(x, tau) / tau) ** 2        x >= 0     (0 for x >= tau)
           = 1 - 2 x / tau                        x <  0
    N_i = sum_j max(t_i - t_j, 0) * ell(p_i - p_j)              rank-minus term (gradient)
    P_i = sum_j [t_j >= t_i] * [p_j >= p_i]                     rank-plus term (no gradient, >= 1)
    g_i = R_i / (1 + R_i),   R_i = N_i / (P_i + 1e-5)
    w_i = max(t_i - weight_threshold, 0) * (1 if y_i else neg_weight)       (no gradient)
    loss = sum_i w_i g_i / (sum_i w_i + 1e-5)

(``docs/method.md`` §1.4.) Gradient reaches ``pred`` only, through ``N`` (as query p_i and
as competitor p_j). The evaluators of (N, P) give the same result:

- ``'dense'``: all n x n pairs with autograd; the readable reference.
- ``'sorted'``: divide and conquer over the target order with prefix sums of the surrogate's
  polynomial pieces; O(n log^2 n) time, O(n) extra memory per level, float64 sums.
- ``'auto'``: the fastest exact one for the list length and device (see :func:`select_impl`).
"""
import torch
import torch.nn as nn
from torch import Tensor

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_choice, check_positive
from .ap_rank_sums import DENSE_ELEMENT_BUDGET, dense_rank_sums, sorted_rank_sums

__all__ = ['ContinuousAPLoss', 'continuous_ap_loss', 'select_impl']

IMPLS = ('auto', 'dense', 'sorted')
_EPS = 1e-5

# List lengths above which 'sorted' beats 'dense' (fwd + bwd, fp32), measured with
# tools/benchmark_loss.py; see docs/benchmarks.md.
_SORTED_FROM_N = {'cpu': 512, 'cuda': 2048}


def select_impl(n: int, device: torch.device, num_lists: int = 1) -> str:
    """The impl ``'auto'`` uses for ``num_lists`` lists of length ``n`` on ``device``.

    Short lists are cheapest densely (a few vectorised n x n passes); longer ones use the
    divide-and-conquer evaluator, which is both faster and memory-light. Dense is never chosen once
    its pairwise temporaries would exceed ``DENSE_ELEMENT_BUDGET`` elements.
    """
    threshold = _SORTED_FROM_N.get(torch.device(device).type, _SORTED_FROM_N['cuda'])
    if n >= threshold or num_lists * n * n > DENSE_ELEMENT_BUDGET:
        return 'sorted'
    return 'dense'


def _check_inputs(pred, target, pos_mask, tau, neg_weight, impl):
    for name, value in (('pred', pred), ('target', target), ('pos_mask', pos_mask)):
        if not isinstance(value, Tensor):
            raise TypeError(f'continuous_ap_loss: `{name}` must be a torch.Tensor, '
                            f'got {type(value).__name__}')
    for name, value in (('pred', pred), ('target', target)):
        if not value.is_floating_point():
            raise TypeError(f'continuous_ap_loss: `{name}` must be a floating-point tensor, '
                            f'got dtype {value.dtype}')
    if pos_mask.dtype != torch.bool:
        raise TypeError('continuous_ap_loss: `pos_mask` must be a bool tensor (True for positive '
                        f'entries), got dtype {pos_mask.dtype}; use `mask.bool()` if it holds 0/1')
    if pred.dim() not in (1, 2):
        raise ValueError('continuous_ap_loss: `pred` must have shape (n,) or (L, n) for L lists, '
                         f'got {tuple(pred.shape)}')
    for name, value in (('target', target), ('pos_mask', pos_mask)):
        if value.shape != pred.shape:
            raise ValueError(f'continuous_ap_loss: `{name}` has shape {tuple(value.shape)} but '
                             f'`pred` has shape {tuple(pred.shape)}; they must match')
        if value.device != pred.device:
            raise ValueError(f'continuous_ap_loss: `{name}` is on {value.device} but `pred` is on '
                             f'{pred.device}')
    if target.requires_grad:
        raise ValueError('continuous_ap_loss: `target` requires grad, but the teacher targets '
                         'must be constant: pass `target.detach()`')
    check_positive('continuous_ap_loss', 'tau', tau)
    if not neg_weight >= 0:
        raise ValueError(f'continuous_ap_loss: `neg_weight` must be >= 0, got {neg_weight}')
    check_choice('continuous_ap_loss', 'impl', impl, IMPLS)


def continuous_ap_loss(pred: Tensor,
                       target: Tensor,
                       pos_mask: Tensor,
                       *,
                       tau: float = 0.5,
                       weight_threshold: float = -0.2,
                       neg_weight: float = 0.1,
                       impl: str = 'auto') -> Tensor:
    """Continuous-target AP loss of one list (n,) or the mean over L lists (L, n).

    Args:
        pred: student similarities, (n,) or (L, n), floating point; receives the gradient.
        target: teacher similarities, same shape; must not require grad.
        pos_mask: bool, same shape; True where the entry is a positive pair (weight 1), False for
            a negative pair (weight ``neg_weight``).
        tau: margin of the surrogate.
        weight_threshold: targets at or below it get zero weight.
        neg_weight: weight factor of negative entries (alpha).
        impl: ``'auto'``, ``'dense'`` or ``'sorted'``.

    Returns:
        A scalar tensor, float32 for half/bfloat16/float32 inputs, float64 for float64 inputs.
    """
    _check_inputs(pred, target, pos_mask, tau, neg_weight, impl)
    compute_dtype = torch.promote_types(pred.dtype, torch.float32)
    # fp16/bf16 inputs (autocast) are computed in fp32: differences of near-equal similarities
    # and the sums over n entries do not survive 16-bit arithmetic.
    with torch.autocast(device_type=pred.device.type, enabled=False):
        p = pred.to(compute_dtype)
        t = target.detach().to(compute_dtype)
        if p.dim() == 1:
            p, t, mask = p.unsqueeze(0), t.unsqueeze(0), pos_mask.unsqueeze(0)
        else:
            mask = pos_mask
        num_lists, n = p.shape
        if n == 0 or num_lists == 0:
            return p.sum() * 0.0
        if impl == 'auto':
            impl = select_impl(n, p.device, num_lists)
        if impl == 'dense':
            neg_sum, pos_count = dense_rank_sums(p, t, tau)
        else:
            neg_sum, pos_count = sorted_rank_sums(p, t, tau)
        with torch.no_grad():
            weight = (t - weight_threshold).clamp(min=0)
            weight = torch.where(mask, weight, weight * neg_weight)
        ratio = neg_sum / (pos_count + _EPS)
        per_entry = ratio / (1 + ratio)
        list_loss = (weight * per_entry).sum(-1) / (weight.sum(-1) + _EPS)
        return list_loss.mean()


@MODELS.register_module()
class ContinuousAPLoss(nn.Module):
    """Module form of :func:`continuous_ap_loss`, scaled by ``loss_weight``.

    Args:
        tau (float): margin of the surrogate. Defaults to 0.5.
        weight_threshold (float): targets at or below it get zero weight. Defaults to -0.2.
        neg_weight (float): weight factor of negative entries. Defaults to 0.1.
        impl (str): ``'auto'``, ``'dense'`` or ``'sorted'``. Defaults to 'auto'.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 tau: float = 0.5,
                 weight_threshold: float = -0.2,
                 neg_weight: float = 0.1,
                 impl: str = 'auto',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        check_choice('ContinuousAPLoss', 'impl', impl, IMPLS)
        check_positive('ContinuousAPLoss', 'tau', tau)
        self.tau = tau
        self.weight_threshold = weight_threshold
        self.neg_weight = neg_weight
        self.impl = impl
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, pos_mask: Tensor) -> Tensor:
        """pred, target: (n,) or (L, n) floats; pos_mask: bool of the same shape."""
        loss = continuous_ap_loss(
            pred, target, pos_mask, tau=self.tau, weight_threshold=self.weight_threshold,
            neg_weight=self.neg_weight, impl=self.impl)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'tau={self.tau}, weight_threshold={self.weight_threshold}, '
                f'neg_weight={self.neg_weight}, impl={self.impl!r}, '
                f'loss_weight={self.loss_weight}')
