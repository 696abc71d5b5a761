"""The two CLS code losses of CoTAP (``docs/method.md`` §3.5 and §3.6).

Both are swapped-prediction cross-entropies between teacher CLS Sinkhorn codes ``q`` (targets, no
gradient) and student CLS scores ``s`` (raw cosines of the CLS head)::

    ce(q, s) = -sum_k q_k log softmax(s / T)_k

Layouts: M = 2B ImageNet images, u's first then their kNN neighbours v's (``[u_0..u_B-1,
v_0..v_B-1]``); crops are ordered globals first, then locals.

- InnerSample (:func:`inner_cls_loss`, T = 0.1): teacher codes of each global crop g (G, M, K)
  supervise the student scores of every *other* crop v != g of the same image (V, M, K)::

      loss = mean_g  sum_{v != g} mean_m ce(q[g, m], s[v, m]) / (V - 1)

- IntraSample (:func:`intra_cls_loss`, T = 0.2): the neighbour swap. u's student crops are
  supervised by v's teacher codes and vice versa, over all G x G global-crop pairs::

      loss = mean_{g, g', m} ce(q[g, swap(m)], s[g', m]),   swap(u_b) = v_b, swap(v_b) = u_b
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_positive

__all__ = ['InnerCLSLoss', 'IntraCLSLoss', 'inner_cls_loss', 'intra_cls_loss']


def _check(fn, teacher_codes, student_logits, temperature):
    for name, value in (('teacher_codes', teacher_codes), ('student_logits', student_logits)):
        if not isinstance(value, Tensor):
            raise TypeError(f'{fn}: `{name}` must be a torch.Tensor, got {type(value).__name__}')
        if not value.is_floating_point():
            raise TypeError(f'{fn}: `{name}` must be floating point, got {value.dtype}')
        if value.dim() != 3:
            raise ValueError(f'{fn}: `{name}` must be (crops, M, K), got {tuple(value.shape)}')
    if teacher_codes.shape[1:] != student_logits.shape[1:]:
        raise ValueError(f'{fn}: `teacher_codes` {tuple(teacher_codes.shape)} and '
                         f'`student_logits` {tuple(student_logits.shape)} must share (M, K)')
    if teacher_codes.requires_grad:
        raise ValueError(f'{fn}: `teacher_codes` requires grad, but the teacher targets must be '
                         'constant: pass `teacher_codes.detach()`')
    check_positive(fn, 'temperature', temperature)


def _log_probs(student_logits: Tensor, temperature: float) -> Tensor:
    # fp32 softmax: 4096-way log-softmax of scores / 0.1 loses precision in fp16.
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    return F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)


def inner_cls_loss(teacher_codes: Tensor, student_logits: Tensor,
                   temperature: float = 0.1) -> Tensor:
    """InnerSample CLS loss: codes of global crop g supervise every other crop of the same image.

    Args:
        teacher_codes: (G, M, K) Sinkhorn codes of the G global (assigning) crops; no grad.
        student_logits: (V, M, K) raw student CLS scores of all V crops, the G globals first
            (crop v < G is the same crop as teacher crop v).
        temperature: student softmax temperature. Defaults to 0.1.

    Returns:
        A scalar (float32, or float64 for float64 input).
    """
    _check('inner_cls_loss', teacher_codes, student_logits, temperature)
    G, M = teacher_codes.shape[:2]
    V = student_logits.shape[0]
    if V < G or V < 2:
        raise ValueError(f'inner_cls_loss: `student_logits` must hold the G={G} global crops '
                         f'first and at least 2 crops in all, got V={V}')
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p = _log_probs(student_logits, temperature)  # (V, M, K)
        q = teacher_codes.detach().to(log_p.dtype)
        # ce[g, v] = mean_m ce(q[g, m], s[v, m]); the g == v entries are then dropped.
        ce = -torch.einsum('gmk,vmk->gv', q, log_p) / M  # (G, V)
        other = torch.ones(G, V, dtype=torch.bool, device=ce.device)
        other[:, :G].fill_diagonal_(False)
        return (ce * other).sum() / (G * (V - 1))


def intra_cls_loss(teacher_codes: Tensor, student_logits: Tensor,
                   temperature: float = 0.2) -> Tensor:
    """IntraSample CLS loss: neighbour-swapped codes over all global-crop pairs.

    Args:
        teacher_codes: (G, M, K) Sinkhorn codes of the global crops, M = 2B images [u's; v's];
            no grad.
        student_logits: (G', M, K) raw student CLS scores of the global crops, same image order.
        temperature: student softmax temperature. Defaults to 0.2.

    Returns:
        A scalar, the mean over the M * G * G' terms.
    """
    _check('intra_cls_loss', teacher_codes, student_logits, temperature)
    G, M = teacher_codes.shape[:2]
    if M % 2:
        raise ValueError(f'intra_cls_loss: M={M} images must be even (u half, then v half)')
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_p = _log_probs(student_logits, temperature)  # (G', M, K)
        # Swapping the halves gives u_b the codes of v_b and v_b those of u_b.
        q = teacher_codes.detach().to(log_p.dtype).roll(M // 2, dims=1)
        # Sum over g, g' of q[g] . log_p[g'] = (sum_g q[g]) . (sum_g' log_p[g']).
        ce = -(q.sum(0) * log_p.sum(0)).sum()
        return ce / (M * G * student_logits.shape[0])


class _CodeLoss(nn.Module):
    """A code loss function as a module: ``loss_weight * fn(teacher_codes, student_logits, T)``;
    a subclass names the function and its released student temperature."""
    loss_fn = None
    default_temperature = None

    def __init__(self, temperature: Optional[float] = None, loss_weight: float = 1.0) -> None:
        super().__init__()
        temperature = self.default_temperature if temperature is None else temperature
        check_positive(type(self).__name__, 'temperature', temperature)
        self.temperature = temperature
        self.loss_weight = loss_weight

    def forward(self, teacher_codes: Tensor, student_logits: Tensor) -> Tensor:
        return self.loss_weight * type(self).loss_fn(teacher_codes, student_logits,
                                                     self.temperature)

    def extra_repr(self) -> str:
        return f'temperature={self.temperature}, loss_weight={self.loss_weight}'


@MODELS.register_module()
class InnerCLSLoss(_CodeLoss):
    """Module form of :func:`inner_cls_loss` (teacher_codes (G, M, K), student_logits (V, M, K)),
    scaled by ``loss_weight``.

    Args:
        temperature (float, optional): student temperature. Defaults to 0.1.
        loss_weight (float): multiplier. Defaults to 1.0.
    """
    loss_fn = inner_cls_loss
    default_temperature = 0.1


@MODELS.register_module()
class IntraCLSLoss(_CodeLoss):
    """Module form of :func:`intra_cls_loss` (teacher_codes (G, M, K), student_logits
    (G, M, K), M = 2B with u's then v's), scaled by ``loss_weight``.

    Args:
        temperature (float, optional): student temperature. Defaults to 0.2.
        loss_weight (float): multiplier. Defaults to 1.0.
    """
    loss_fn = intra_cls_loss
    default_temperature = 0.2
