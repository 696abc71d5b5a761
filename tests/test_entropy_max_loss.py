"""EntropyMaxLoss: value vs a hand computation, gradient to kernel only, empty bank."""
import math

import pytest
import torch

from cotap_mm.models.losses import EntropyMaxLoss, entropy_max_loss
from cotap_mm.registry import MODELS


def test_value_hand_computed():
    # kernel: 1 prototype (D=1, 3x3 -> 9-dim), bank: 2 samples with cos 1 and cos 0
    e = torch.zeros(9)
    e[0] = 1.
    f = torch.zeros(9)
    f[1] = 1.
    kernel = (2 * e).view(1, 1, 3, 3)  # norm is irrelevant
    bank = torch.stack([3 * e, f]).view(2, 1, 3, 3)
    T = 0.5
    p1 = math.exp(1 / T) / (math.exp(1 / T) + 1)
    p = [p1, 1 - p1]
    expected = -sum(pi * math.log(pi) for pi in p)
    loss = entropy_max_loss(kernel, bank, temperature=T)
    assert loss.dtype == torch.float32
    assert abs(loss.item() - expected) < 1e-6
    # mean over prototypes: a second prototype orthogonal to both samples has entropy log 2
    g = torch.zeros(9)
    g[2] = 1.
    k2 = torch.stack([2 * e, g]).view(2, 1, 3, 3)
    loss2 = entropy_max_loss(k2, bank, temperature=T)
    assert abs(loss2.item() - (expected + math.log(2)) / 2) < 1e-6


def test_module_weight_and_registry():
    loss = MODELS.build(dict(type='EntropyMaxLoss', loss_weight=2.0))
    assert isinstance(loss, EntropyMaxLoss) and loss.temperature == 0.1
    k, b = torch.randn(4, 3, 3, 3), torch.randn(7, 3, 3, 3)
    torch.testing.assert_close(loss(k, b), 2 * entropy_max_loss(k, b, 0.1))


def test_gradient_to_kernel_only():
    kernel = torch.randn(4, 3, 3, 3, requires_grad=True)
    bank = torch.randn(7, 3, 3, 3, requires_grad=True)
    entropy_max_loss(kernel, bank).backward()
    assert kernel.grad is not None and kernel.grad.abs().sum() > 0
    assert bank.grad is None


def test_autocast_fp32():
    kernel = torch.randn(4, 3, 3, 3, requires_grad=True)
    bank = torch.randn(7, 3, 3, 3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = entropy_max_loss(kernel, bank)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, entropy_max_loss(kernel, bank))


def test_bad_inputs():
    with pytest.raises(ValueError, match='empty'):
        entropy_max_loss(torch.randn(4, 3, 3, 3), torch.zeros(0, 3, 3, 3))
    with pytest.raises(ValueError, match='per-sample'):
        entropy_max_loss(torch.randn(4, 3, 3, 3), torch.randn(5, 2, 3, 3))
    with pytest.raises(ValueError, match='temperature'):
        EntropyMaxLoss(temperature=0)
