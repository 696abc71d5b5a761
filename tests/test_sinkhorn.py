import pytest
import torch

from cotap_mm.models.utils import sinkhorn_knopp


def _literal(S, T, iters=3, W=1):
    """Line-by-line transcription of docs/method.md §3.3 (no max-subtraction)."""
    Q = torch.exp(S / T).t()
    Q /= torch.sum(Q)
    K, N = Q.shape
    r = torch.ones(K, dtype=Q.dtype) / K
    c = torch.ones(N, dtype=Q.dtype) / (W * N)
    u = torch.sum(Q, dim=1)
    for _ in range(iters):
        Q *= (r / u).unsqueeze(1)
        Q *= (c / torch.sum(Q, dim=0)).unsqueeze(0)
        u = torch.sum(Q, dim=1)
    return (Q / torch.sum(Q, dim=0, keepdim=True)).t()


def test_matches_literal_transcription():
    torch.manual_seed(0)
    S = torch.rand(300, 32) * 2 - 1  # cosines
    for T, iters in ((0.05, 3), (0.07, 3), (0.5, 1), (0.1, 10)):
        torch.testing.assert_close(sinkhorn_knopp(S, T, iters), _literal(S, T, iters),
                                   rtol=1e-5, atol=1e-7)


def test_marginals():
    torch.manual_seed(1)
    N, K = 512, 16
    S = torch.randn(N, K) * 0.3 + torch.linspace(0, 0.5, K)  # skewed towards high k
    codes = sinkhorn_knopp(S, 0.1, 3)
    assert codes.shape == (N, K) and codes.dtype == torch.float32 and torch.all(codes >= 0)
    # exact: rows sum to 1 (hence total N)
    torch.testing.assert_close(codes.sum(1), torch.ones(N))
    # approximate after 3 rounds: prototype marginals near N / K, much closer than softmax
    col = codes.sum(0)
    soft = torch.softmax(S / 0.1, 1).sum(0)
    assert (col - N / K).abs().max() < 0.25 * (soft - N / K).abs().max()
    assert (col - N / K).abs().max() < 0.2 * N / K
    # and converging with more rounds
    col_many = sinkhorn_knopp(S, 0.1, 50).sum(0)
    assert (col_many - N / K).abs().max() < 1e-2 * N / K


def test_no_overflow_and_half_input():
    S = torch.rand(64, 8) * 2 - 1
    # exp(1 / 0.01) overflows fp32 without the max-subtraction; the result stays finite
    codes = sinkhorn_knopp(S, 0.01)
    assert torch.isfinite(codes).all()
    codes = sinkhorn_knopp(S.half(), 0.07)
    assert codes.dtype == torch.float32
    torch.testing.assert_close(codes, sinkhorn_knopp(S.half().float(), 0.07))


def test_global_scope_equals_local_when_not_distributed():
    S = torch.randn(40, 6)
    torch.testing.assert_close(sinkhorn_knopp(S, 0.1, scope='global'), sinkhorn_knopp(S, 0.1))


def test_errors():
    with pytest.raises(ValueError, match='scores'):
        sinkhorn_knopp(torch.rand(5), 0.1)
    with pytest.raises(ValueError, match='temperature'):
        sinkhorn_knopp(torch.rand(5, 3), 0)
    with pytest.raises(ValueError, match='scope'):
        sinkhorn_knopp(torch.rand(5, 3), 0.1, scope='world')
    with pytest.raises(TypeError, match='scores'):
        sinkhorn_knopp(torch.ones(5, 3, dtype=torch.long), 0.1)


def test_code_entropy_spans_one_hot_to_uniform():
    import math

    from cotap_mm.models.utils import code_entropy
    K = 16
    assert float(code_entropy(torch.full((5, K), 1.0 / K))) == pytest.approx(math.log(K))
    assert float(code_entropy(torch.eye(K))) == pytest.approx(0.0, abs=1e-6)
    assert 0 < float(code_entropy(torch.softmax(torch.randn(5, K), -1))) < math.log(K)
