"""Spherical k-means used to initialise the OAF prototypes from the bank (docs/method.md §2.4)."""
import torch
import torch.nn.functional as F

__all__ = ['spherical_kmeans']


def spherical_kmeans(x, num_clusters, max_iters=3000, generator=None, return_assignments=False):
    """Spherical k-means (unit-norm centres), as in CoTAP's ``VisionTransformer.cluster``.

    1. L2-normalise the samples; initialise the centres with ``num_clusters`` random *distinct*
       samples.
    2. Repeat up to ``max_iters`` times: assign every sample to the centre with the smallest
       squared Euclidean distance; stop if the mean of these minimum distances equals the previous
       iteration's value *exactly* (the reference's criterion; it is reached once the assignment
       stops changing); otherwise set each centre to the mean of its members, re-seed empty
       clusters with random samples, and re-normalise the centres.

    All clusters are updated at once (``index_add_``), no Python loop over clusters.

    Args:
        x (Tensor): Samples (N, F). Computed in fp32 (or fp64 if given).
        num_clusters (int): Number of centres, ``1 <= num_clusters <= N``.
        max_iters (int): Maximum number of assignment/update iterations. Defaults to 3000.
        generator (torch.Generator, optional): RNG for the initial and re-seeding draws (must be
            on ``x``'s device). Defaults to None (global RNG).
        return_assignments (bool): Also return the final assignment (N,). Defaults to False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: Unit-norm centres (num_clusters, F), in ``x``'s dtype
        (and the assignments, long (N,), when requested).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f'spherical_kmeans: x must be a 2-D (N, F) tensor, got '
                         f'{type(x).__name__ if not isinstance(x, torch.Tensor) else tuple(x.shape)}')
    N = x.shape[0]
    if (isinstance(num_clusters, bool) or not isinstance(num_clusters, int)
            or not 1 <= num_clusters <= N):
        raise ValueError(f'spherical_kmeans: num_clusters must be an int in [1, N={N}], got '
                         f'{num_clusters!r}')
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f'spherical_kmeans: max_iters must be a positive int, got {max_iters!r}')
    out_dtype = x.dtype
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = F.normalize(x.detach().to(work), dim=1, eps=1e-12)
    dev = x.device

    centres = x[torch.randperm(N, generator=generator, device=dev)[:num_clusters]].clone()
    x_sq = x.square().sum(1, keepdim=True)  # (N, 1)
    prev = None
    for _ in range(max_iters):
        # squared Euclidean distance, (N, num_clusters)
        dist = x_sq + centres.square().sum(1)[None] - 2 * x @ centres.T
        min_d, assign = dist.min(dim=1)
        cur = min_d.mean().item()
        if prev is not None and cur == prev:
            break
        prev = cur
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=num_clusters).to(work)
        centres = sums / counts[:, None]  # empty clusters -> NaN (0/0), as in the reference
        empty = counts == 0
        # re-seed empty clusters with random samples (torch.where: no data-dependent loop)
        seeds = x[torch.randint(N, (num_clusters, ), generator=generator, device=dev)]
        centres = torch.where(empty[:, None], seeds, centres)
        centres = F.normalize(centres, dim=1, eps=1e-12)
    centres = centres.to(out_dtype)
    if return_assignments:
        return centres, assign
    return centres
