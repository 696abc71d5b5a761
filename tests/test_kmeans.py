"""spherical_kmeans on separable synthetic clusters."""
import pytest
import torch
import torch.nn.functional as F

from cotap_mm.models.utils import spherical_kmeans


def _clusters(n_clusters=6, per=40, dim=32, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(n_clusters, dim, generator=g), dim=1)
    x = dirs.repeat_interleave(per, 0) + noise * torch.randn(n_clusters * per, dim, generator=g)
    x = x * (0.5 + torch.rand(n_clusters * per, 1, generator=g))  # norms differ: spherical
    return x, dirs, torch.arange(n_clusters).repeat_interleave(per)


def test_recovers_separable_clusters():
    x, dirs, labels = _clusters()
    # several restarts: plain k-means can land in a local optimum; the best one is exact
    best = None
    for seed in range(5):
        c, a = spherical_kmeans(x, 6, generator=torch.Generator().manual_seed(seed),
                                return_assignments=True)
        score = (F.normalize(x, dim=1) * c[a]).sum(1).mean()
        if best is None or score > best[0]:
            best = (score, c, a)
    _, c, a = best
    torch.testing.assert_close(c.norm(dim=1), torch.ones(6))
    # each true direction has a centre within cos > 0.99, and assignments match labels 1:1
    assert (dirs @ c.T).max(dim=1).values.min() > 0.99
    pairs = set(zip(labels.tolist(), a.tolist()))
    assert len(pairs) == 6


def test_deterministic_with_generator_and_dtype():
    x, _, _ = _clusters(seed=1)
    c1 = spherical_kmeans(x.double(), 4, generator=torch.Generator().manual_seed(3))
    c2 = spherical_kmeans(x.double(), 4, generator=torch.Generator().manual_seed(3))
    assert c1.dtype == torch.float64
    torch.testing.assert_close(c1, c2, rtol=0, atol=0)


def test_empty_clusters_reseeded():
    # 3 distinct points, 3 clusters, but duplicated points: no NaN centres survive
    x = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.], [-1., 0.]])
    c = spherical_kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c.norm(dim=1), torch.ones(3))


def test_bad_args():
    with pytest.raises(ValueError, match='x must be'):
        spherical_kmeans(torch.randn(4), 2)
    with pytest.raises(ValueError, match='num_clusters'):
        spherical_kmeans(torch.randn(4, 3), 5)
    with pytest.raises(ValueError, match='max_iters'):
        spherical_kmeans(torch.randn(4, 3), 2, max_iters=0)
