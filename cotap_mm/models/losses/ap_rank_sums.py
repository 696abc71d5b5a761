"""Evaluators of the rank sums N and P of :mod:`continuous_ap_loss` for L lists of length n.

For lists ``p, t`` of shape (L, n)::

    N_i = sum_j (t_i - t_j)_+ * ell(p_i - p_j)        (differentiable in p)
    P_i = #{j : t_j >= t_i and p_j >= p_i}              (a count, no gradient)

Every evaluator returns ``(N, P)``, both (L, n) in the dtype of ``p``. The gradient of a loss
``sum_i a_i N_i`` (``a = dLoss/dN``) with respect to p_k is::

    a_k * G1_k - G2_k,   G1_k = sum_j (t_k - t_j)_+ ell'(p_k - p_j)
                         G2_k = sum_i a_i (t_i - t_k)_+ ell'(p_i - p_k)

which the sorted evaluator computes by hand (G1 in the forward pass, G2 in the backward
pass), so that no n x n tensor is ever kept for autograd.

The sorted evaluator orders the entries by target and splits the order recursively: at every level,
each block's first half A (smaller targets) acts on its second half B (larger targets). Every pair
(j earlier, i later) meets at exactly one level, and a later entry never gains from an earlier one
with a larger target because the order is by target; equal targets cancel in (t_i - t_j)_+.
Within a pair of halves, ``ell`` is a polynomial in p_j on each of three p-intervals around p_i
(zero, quadratic, linear), so sorting A by p and keeping prefix sums of
``1, p, p^2, t, t p, t p^2`` over A gives each entry of B its sum from two binary searches.
Blocks are processed together, one vectorised pass per level; small leaves are summed densely.
The sums run in float64: prefix-sum differences cancel, and float32 would lose the 1e-6 agreement
with the dense reference at large n.
"""
import math

import torch
from torch import Tensor

# Largest number of pairwise elements a dense evaluation may materialise per temporary; 'auto'
# never picks 'dense' above it (about 10 such temporaries live at once, 128 MB each in fp32).
DENSE_ELEMENT_BUDGET = 1 << 25
# Pairwise elements per tile of the sorted evaluator's dense leaves.
CHUNK_ELEMENTS = 1 << 20
# Target leaf size of the sorted evaluator: leaves are evaluated densely (leaf x leaf pairs);
# 8-32 measured about equal on 2 CPU cores (larger is better for short lists, smaller for long).
SORTED_LEAF = 16


def surrogate(x: Tensor, tau: float) -> Tensor:
    """ell(x): 1 - 2x/tau for x < 0, (1 - min(x, tau)/tau)^2 otherwise (C^1, zero beyond tau)."""
    return torch.where(x < 0, 1 - 2 * x / tau, (1 - x.clamp(max=tau) / tau)**2)


def surrogate_grad(x: Tensor, tau: float) -> Tensor:
    """ell'(x): -2/tau for x < 0, 2 (min(x, tau) - tau) / tau^2 otherwise (continuous)."""
    return torch.where(x < 0, torch.full_like(x, -2 / tau), 2 * (x.clamp(max=tau) - tau) / tau**2)


def _pairwise(p_rows: Tensor, t_rows: Tensor, p_cols: Tensor, t_cols: Tensor):
    """Differences of rows i against columns j: (p_i - p_j, (t_i - t_j)_+), shape (..., r, c)."""
    return (p_rows.unsqueeze(-1) - p_cols.unsqueeze(-2),
            (t_rows.unsqueeze(-1) - t_cols.unsqueeze(-2)).clamp(min=0))


def _pos_count_rows(p_rows, t_rows, p_cols, t_cols) -> Tensor:
    """#{j : t_j >= t_i and p_j >= p_i} for rows i against all columns j, shape (..., r)."""
    dominates = (t_cols.unsqueeze(-2) >= t_rows.unsqueeze(-1)) & \
                (p_cols.unsqueeze(-2) >= p_rows.unsqueeze(-1))
    return dominates.sum(-1)


# ---------------------------------------------------------------------------------------------
# dense


def dense_rank_sums(p: Tensor, t: Tensor, tau: float):
    """All n x n pairs at once, with autograd; the readable reference."""
    diff, gap = _pairwise(p, t, p, t)
    neg_sum = (gap * surrogate(diff, tau)).sum(-1)
    with torch.no_grad():
        pos_count = _pos_count_rows(p, t, p, t).to(p.dtype)
    return neg_sum, pos_count


# ---------------------------------------------------------------------------------------------
# sorted (divide and conquer)


def _sorted_layout(n: int):
    """Leaf size b and number of levels k with b * 2^k >= n, b close to SORTED_LEAF."""
    levels = max(0, math.ceil(math.log2(n / SORTED_LEAF))) if n > SORTED_LEAF else 0
    leaf = -(-n // (1 << levels))
    return leaf, levels


def _pad(x: Tensor, size: int, value: float) -> Tensor:
    if x.shape[-1] == size:
        return x
    return torch.cat([x, x.new_full((x.shape[0], size - x.shape[-1]), value)], dim=-1)


def _halves(x: Tensor, size: int):
    """View (L, m) as blocks of 2 * size and return (first halves, second halves), (R, size)."""
    blocks = x.view(-1, 2, size)
    return blocks[:, 0], blocks[:, 1]


def _prefix_at(cum: Tensor, index: Tensor) -> Tensor:
    """Prefix sums ``cum`` (R, s + 1, M) at positions ``index`` (R, q): the moments summed over
    sorted positions [0, index), shape (R, q, M)."""
    return cum.gather(1, index.unsqueeze(-1).expand(-1, -1, cum.shape[-1]))


def _prefix_sums(moments: Tensor) -> Tensor:
    """(R, s, M) -> (R, s + 1, M) inclusive prefix sums with a leading zero row."""
    return torch.cat([moments.new_zeros(moments.shape[0], 1, moments.shape[2]),
                      moments.cumsum(1)], dim=1)


def _leaf_pairs(ps: Tensor, ts: Tensor, leaf: int):
    """Dense pairs inside each leaf of ``leaf`` consecutive entries, a bounded group at a time.

    Yields (block slice, p_i - p_j, (t_i - t_j)_+), the latter two of shape (blocks, leaf, leaf).
    """
    p_leaf, t_leaf = ps.view(-1, leaf), ts.view(-1, leaf)
    step = max(1, CHUNK_ELEMENTS // (leaf * leaf))
    for start in range(0, p_leaf.shape[0], step):
        blocks = slice(start, start + step)
        diff, gap = _pairwise(p_leaf[blocks], t_leaf[blocks], p_leaf[blocks], t_leaf[blocks])
        yield blocks, diff, gap


def _lexsort(p: Tensor, t: Tensor) -> Tensor:
    """Per-row order by target, ties by prediction (both ascending)."""
    by_p = torch.argsort(p, dim=-1, stable=True)
    return by_p.gather(-1, torch.argsort(t.gather(-1, by_p), dim=-1, stable=True))


def _unsort(x: Tensor, order: Tensor) -> Tensor:
    """Entries of x (L, >= n) given in ``order`` back in the original order, (L, n)."""
    return torch.empty_like(x[:, :order.shape[1]]).scatter_(-1, order, x[:, :order.shape[1]])


class _SortedRankSums(torch.autograd.Function):
    """(N, P) by divide and conquer over the target order (see the module doc).

    Entries are ordered by (t, p) ascending. At each level a block's halves are both sorted by p:
    A's sorted prefix sums give N (and G1) of B's entries, and B's sorted values give the P-count
    of A's entries (every later entry with p_j >= p_i has t_j >= t_i; no earlier one can count
    unless it is equal in both t and p, which the group step below accounts for).
    """

    @staticmethod
    def forward(ctx, p, t, tau):
        num_lists, n = p.shape
        need_grad = ctx.needs_input_grad[0]
        order = _lexsort(p, t)
        leaf, levels = _sorted_layout(n)
        size = leaf << levels
        # padding sits after every real entry, with a target above all and a prediction below
        # all: it never adds to a real entry's N (target gap <= 0) nor to its P count
        ps = _pad(p.double().gather(-1, order), size, float(p.min()) - 1.0)
        ts = _pad(t.double().gather(-1, order), size, float(t.max()) + 1.0)
        neg_sum = torch.zeros_like(ps)
        grad_self = torch.zeros_like(ps) if need_grad else None
        later = torch.zeros(num_lists, size, dtype=torch.long, device=p.device)

        after = torch.ones(leaf, leaf, dtype=torch.bool, device=p.device).triu(1)
        for blocks, diff, gap in _leaf_pairs(ps, ts, leaf):
            neg_sum.view(-1, leaf)[blocks] = (gap * surrogate(diff, tau)).sum(-1)
            if need_grad:
                grad_self.view(-1, leaf)[blocks] = (gap * surrogate_grad(diff, tau)).sum(-1)
            # j after i with p_j >= p_i
            later.view(-1, leaf)[blocks] = ((diff <= 0) & after).sum(-1)

        two_over_tau, inv_tau2 = 2.0 / tau, 1.0 / tau**2
        for level in range(levels):
            s = leaf << level
            sorted_p, perm = ps.view(-1, 2, s).sort(dim=-1)
            a_p, b_p_sorted = sorted_p[:, 0].contiguous(), sorted_p[:, 1].contiguous()
            a_t = ts.view(-1, 2, s)[:, 0].gather(-1, perm[:, 0])
            a_p_unsorted, b_p = [x.contiguous() for x in _halves(ps, s)]
            b_t = _halves(ts, s)[1]
            # P: entries j of B with p_j >= p_i, for each i of A
            _halves(later, s)[0].add_(
                s - torch.searchsorted(b_p_sorted, a_p_unsorted, right=False))
            at_p = a_t * a_p
            cum = _prefix_sums(torch.stack(
                [torch.ones_like(a_p), a_p, a_p * a_p, a_t, at_p, at_p * a_p], dim=-1))
            # competitors j in A: p_j <= p_i - tau -> 0; p_i - tau < p_j <= p_i -> quadratic
            # ((tau - p_i + p_j) / tau)^2; p_j > p_i -> linear 1 - 2 (p_i - p_j) / tau
            stop_quad = torch.searchsorted(a_p, b_p, right=True)
            start_quad = torch.searchsorted(a_p, b_p - tau, right=True)
            at_stop = _prefix_at(cum, stop_quad)
            lin = cum[:, -1:] - at_stop
            quad = at_stop - _prefix_at(cum, start_quad)
            c0, c_p, c_pp, c_t, c_tp, c_tpp = quad.unbind(-1)
            l0, l_p, _, l_t, l_tp, _ = lin.unbind(-1)
            d = tau - b_p  # quadratic piece: (t_i - t_j)(d + p_j)^2 / tau^2
            c_lin = 1 - two_over_tau * b_p  # linear piece: (t_i - t_j)(c_lin + 2 p_j / tau)
            contrib = inv_tau2 * (b_t * (d * d * c0 + 2 * d * c_p + c_pp) -
                                  (d * d * c_t + 2 * d * c_tp + c_tpp))
            contrib += b_t * (c_lin * l0 + two_over_tau * l_p) - (c_lin * l_t + two_over_tau * l_tp)
            _halves(neg_sum, s)[1].add_(contrib)
            if need_grad:
                # ell' = -2 (d + p_j) / tau^2 on the quadratic piece, -2 / tau on the linear one
                g = -2 * inv_tau2 * (b_t * (d * c0 + c_p) - (d * c_t + c_tp))
                g -= two_over_tau * (b_t * l0 - l_t)
                _halves(grad_self, s)[1].add_(g)

        # entries equal in t and p are adjacent; the first of each such group has seen the rest
        # of its group as "later", so all take its count, plus one for the entry itself
        ps_n, ts_n, later = ps[:, :n], ts[:, :n], later[:, :n]
        first = torch.ones_like(ps_n, dtype=torch.bool)
        first[:, 1:] = (ts_n[:, 1:] != ts_n[:, :-1]) | (ps_n[:, 1:] != ps_n[:, :-1])
        positions = torch.arange(n, device=p.device).expand(num_lists, n)
        first_of_group = torch.where(first, positions, 0).cummax(-1).values
        pos_count = _unsort(later.gather(-1, first_of_group) + 1, order).to(p.dtype)

        ctx.tau, ctx.leaf, ctx.levels = tau, leaf, levels
        if need_grad:
            ctx.save_for_backward(ps, ts, order, _unsort(grad_self, order))
        ctx.mark_non_differentiable(pos_count)
        # N is a sum of non-negative terms; prefix-sum differences can leave -1e-17 where it is 0
        return _unsort(neg_sum, order).clamp_(min=0).to(p.dtype), pos_count

    @staticmethod
    def backward(ctx, grad_neg, grad_pos):
        ps, ts, order, grad_self = ctx.saved_tensors
        tau, leaf, levels = ctx.tau, ctx.leaf, ctx.levels
        a = _pad(grad_neg.double().gather(-1, order), ps.shape[-1], 0.0)  # padding: no weight
        grad_other = torch.zeros_like(ps)

        for blocks, diff, gap in _leaf_pairs(ps, ts, leaf):
            weight = a.view(-1, leaf)[blocks].unsqueeze(-1)
            grad_other.view(-1, leaf)[blocks] = (weight * gap * surrogate_grad(diff, tau)).sum(-2)

        two_over_tau, inv_tau2 = 2.0 / tau, 1.0 / tau**2
        for level in range(levels):
            s = leaf << level
            a_p, b_p = _halves(ps, s)
            a_t, b_t = _halves(ts, s)
            b_a = _halves(a, s)[1]
            b_p, perm = b_p.sort(dim=-1)
            b_t, b_a = b_t.gather(-1, perm), b_a.gather(-1, perm)
            at = b_a * b_t
            cum = _prefix_sums(torch.stack([b_a, b_a * b_p, at, at * b_p], dim=-1))
            # entries i in B act on k in A with x = p_i - p_k: p_i < p_k -> ell' = -2 / tau;
            # p_k <= p_i < p_k + tau -> ell' = -2 (e - p_i) / tau^2, e = tau + p_k; beyond -> 0
            a_p = a_p.contiguous()
            stop_lin = torch.searchsorted(b_p, a_p, right=False)
            stop_quad = torch.searchsorted(b_p, a_p + tau, right=False)
            lin = _prefix_at(cum, stop_lin)
            quad = _prefix_at(cum, stop_quad) - lin
            l_a, _, l_at, _ = lin.unbind(-1)
            q_a, q_ap, q_at, q_atp = quad.unbind(-1)
            e = tau + a_p
            g = -two_over_tau * (l_at - a_t * l_a)
            g -= 2 * inv_tau2 * (e * q_at - q_atp - a_t * (e * q_a - q_ap))
            _halves(grad_other, s)[0].add_(g)

        grad = grad_neg.double() * grad_self - _unsort(grad_other, order)
        return grad.to(grad_neg.dtype), None, None


def sorted_rank_sums(p: Tensor, t: Tensor, tau: float):
    """Exact (N, P) in O(n log^2 n) time and O(n) extra memory per level."""
    return _SortedRankSums.apply(p, t, tau)
