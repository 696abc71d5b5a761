import pytest
import torch
import torch.nn.functional as F

from cotap_mm.models.losses import (InnerCLSLoss, IntraCLSLoss, inner_cls_loss,
                                    intra_cls_loss)
from cotap_mm.registry import MODELS


def _codes(*shape):
    return torch.softmax(torch.randn(*shape) * 3, -1)


def _inner_loop(q, s, T):
    G, V = q.shape[0], s.shape[0]
    total = 0.
    for g in range(G):
        lg = 0.
        for v in range(V):
            if v == g:
                continue
            lg = lg + torch.mean(torch.sum(-q[g] * F.log_softmax(s[v] / T, dim=-1), dim=-1))
        total = total + lg / (V - 1)
    return total / G


def _intra_loop(q, s, T):
    G, M, _ = q.shape
    B = M // 2
    qu, qv = q[:, :B], q[:, B:]
    su, sv = s[:, :B], s[:, B:]
    terms = []
    for gt in range(G):
        for gs in range(s.shape[0]):
            for b in range(B):
                terms.append(-(qv[gt, b] * F.log_softmax(su[gs, b] / T, -1)).sum())
                terms.append(-(qu[gt, b] * F.log_softmax(sv[gs, b] / T, -1)).sum())
    return torch.stack(terms).mean()


def test_inner_matches_loop_and_grad_to_student_only():
    torch.manual_seed(0)
    q = _codes(2, 6, 20)
    s = (torch.rand(6, 6, 20) * 2 - 1).requires_grad_()
    loss = inner_cls_loss(q, s, 0.1)
    torch.testing.assert_close(loss, _inner_loop(q, s, 0.1))
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert q.grad is None
    mod = MODELS.build(dict(type='InnerCLSLoss', loss_weight=2.0))
    torch.testing.assert_close(mod(q, s), 2 * loss.detach())


def test_intra_matches_loop():
    torch.manual_seed(1)
    q = _codes(2, 8, 10)
    s = (torch.rand(2, 8, 10) * 2 - 1).requires_grad_()
    loss = intra_cls_loss(q, s, 0.2)
    torch.testing.assert_close(loss, _intra_loop(q, s, 0.2))
    loss.backward()
    assert s.grad.abs().sum() > 0
    torch.testing.assert_close(IntraCLSLoss(loss_weight=0.5)(q, s), 0.5 * loss.detach())


def test_errors():
    q = _codes(2, 4, 5)
    with pytest.raises(ValueError, match='teacher_codes'):
        inner_cls_loss(q.requires_grad_(), torch.rand(6, 4, 5))
    q = q.detach()
    with pytest.raises(ValueError, match='share'):
        inner_cls_loss(q, torch.rand(6, 3, 5))
    with pytest.raises(ValueError, match='even'):
        intra_cls_loss(_codes(2, 3, 5), torch.rand(2, 3, 5))
    with pytest.raises(ValueError, match='temperature'):
        InnerCLSLoss(temperature=0)
