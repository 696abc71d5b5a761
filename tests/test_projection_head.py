import copy

import pytest
import torch
import torch.nn.functional as F

from cotap_mm.models.heads import CoTAPProjectionHead
from cotap_mm.registry import MODELS


def _head(**kw):
    cfg = dict(in_channels=16, num_prototypes=12, hidden_channels=32, bottleneck_channels=8)
    cfg.update(kw)
    return CoTAPProjectionHead(**cfg)


def test_outputs_are_cosines_to_prototypes():
    torch.manual_seed(0)
    head = _head()
    x = torch.randn(5, 16)
    out = head(x)
    assert out.shape == (5, 12)
    assert out.abs().max() <= 1 + 1e-6
    z = F.normalize(head.mlp(x), dim=-1)
    v = head.prototypes.parametrizations.weight.original1
    expected = z @ F.normalize(v, dim=-1).t()
    torch.testing.assert_close(out, expected)


def test_architecture_and_init():
    head = CoTAPProjectionHead(in_channels=768, num_prototypes=512)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(768, 2048), (2048, 2048),
                                                                  (2048, 256)]
    assert linears[-1].bias is None and head.prototypes.bias is None
    assert all(float(m.bias.detach().abs().max()) == 0 for m in linears[:2])
    assert abs(float(linears[1].weight.detach().std()) - 0.02) < 0.002
    assert sum(isinstance(m, torch.nn.GELU) for m in head.mlp) == 2
    n_params = sum(p.numel() for p in head.parameters())
    assert abs(n_params - 6.43e6) < 0.01e6  # docs/method.md §3.1, head 0 (ViT-S)


def test_gain_fixed_and_no_grad():
    head = _head()
    gain = head.prototypes.parametrizations.weight.original0
    assert not gain.requires_grad and torch.all(gain == 1)
    head(torch.randn(3, 16)).sum().backward()
    assert gain.grad is None
    assert head.prototypes.parametrizations.weight.original1.grad is not None
    assert all(p is not gain for p in head.parameters() if p.requires_grad)
    head.init_weights()
    assert torch.all(gain == 1)
    assert 'prototypes.parametrizations.weight.original0' in head.state_dict()


def test_deepcopy_for_ema_teacher():
    head = _head()
    teacher = copy.deepcopy(head)
    x = torch.randn(4, 16)
    torch.testing.assert_close(teacher(x), head(x))
    with torch.no_grad():
        teacher.prototypes.parametrizations.weight.original1.mul_(2)  # independent storage
    assert head.prototypes.parametrizations.weight.original1 is not \
        teacher.prototypes.parametrizations.weight.original1


def test_token_and_map_shapes_agree():
    head = _head()
    maps = torch.randn(2, 16, 3, 5)
    out_map = head(maps)
    assert out_map.shape == (2, 12, 3, 5)
    tokens = maps.flatten(2).transpose(1, 2)  # (B, N, C)
    out_tok = head(tokens)
    assert out_tok.shape == (2, 15, 12)
    torch.testing.assert_close(out_tok, out_map.flatten(2).transpose(1, 2))


def test_registry_and_errors():
    head = MODELS.build(dict(type='CoTAPProjectionHead', in_channels=16, num_prototypes=4,
                             hidden_channels=8, num_layers=1))
    assert len(head.mlp) == 1
    with pytest.raises(ValueError, match='channels'):
        head(torch.randn(2, 15))
    with pytest.raises(ValueError, match='`x`'):
        head(torch.randn(16))
    with pytest.raises(TypeError, match='`x`'):
        head([1.0])
    with pytest.raises(ValueError, match='num_prototypes'):
        CoTAPProjectionHead(in_channels=4, num_prototypes=0)
