"""Sinkhorn-Knopp soft assignment of scores to prototypes (``docs/method.md`` §3.3).

For scores S (N, K) = [queue rows; current-batch rows] and temperature T::

    Q = exp(S / T)^T                           (K, N)
    Q = Q / sum(Q)
    r = 1/K ; c = 1/(W * N)                   (W = world size)
    u = rowsum(Q)
    repeat num_iters (3) times:
        Q = diag(r / u) Q                      rows -> 1/K
        Q = Q diag(c / colsum(Q))              columns -> c
        u = rowsum(Q)
    codes = (Q / colsum(Q))^T                  (N, K), each row sums to 1

What this guarantees: each row of ``codes`` sums to 1, hence ``codes.sum() == N``. The column
normalisation is the last step, so the prototype marginals (column sums of ``codes``) are only
*approximately* N / K after the finite number of iterations, closer the more iterations are run.

Scope (``sinkhorn_scope`` of §8):

- ``'local'`` (as released): the official code calls a ``reduce`` on the row sums but discards its
  result, so each GPU balances its own rows only; W then cancels in the final normalisation.
- ``'global'``: the total, the row sums and N are all-reduced over the default process group, so
  the prototype marginals are balanced over all GPUs' rows (SwAV-style). Identical to ``'local'``
  outside distributed runs.

Numerics: computed in fp32 (or fp64 for fp64 input) under ``no_grad``. Unlike the released code, the
(global) maximum of S / T is subtracted before ``exp``; a scalar factor cancels in the first
normalisation ``Q / sum(Q)``, so the result is mathematically identical while no longer able to
overflow for small temperatures.
"""
import torch
from mmengine import dist
from torch import Tensor

from cotap_mm.utils.checks import check_choice, check_positive

__all__ = ['sinkhorn_knopp', 'code_entropy', 'SINKHORN_SCOPES']

SINKHORN_SCOPES = ('local', 'global')


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor,
                   temperature: float,
                   num_iters: int = 3,
                   scope: str = 'local') -> Tensor:
    """Sinkhorn-Knopp codes of ``scores``.

    Args:
        scores: (N, K) raw teacher scores (cosines), e.g. ``cat([queue.rows, batch_rows])``.
        temperature: T (0.05 for the patch head, 0.07 for the CLS head).
        num_iters: number of row/column normalisation rounds. Defaults to 3.
        scope: ``'local'`` (as released) or ``'global'`` (all-reduce over ranks).

    Returns:
        (N, K) codes, rows summing to 1, fp32 (fp64 for fp64 input), no gradient. The caller keeps
        the rows of the current batch (the last ones when the queue is prepended).
    """
    if not isinstance(scores, Tensor):
        raise TypeError(f'sinkhorn_knopp: `scores` must be a torch.Tensor, '
                        f'got {type(scores).__name__}')
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f'sinkhorn_knopp: `scores` must be a non-empty (N, K) tensor, '
                         f'got shape {tuple(scores.shape)}')
    if not scores.is_floating_point():
        raise TypeError(f'sinkhorn_knopp: `scores` must be floating point, got {scores.dtype}')
    check_positive('sinkhorn_knopp', 'temperature', temperature)
    if not isinstance(num_iters, int) or num_iters < 0:
        raise ValueError(f'sinkhorn_knopp: `num_iters` must be an int >= 0, got {num_iters!r}')
    check_choice('sinkhorn_knopp', 'scope', scope, SINKHORN_SCOPES)
    distributed = scope == 'global' and dist.get_world_size() > 1

    def reduce(t: Tensor, op: str = 'sum') -> Tensor:
        if distributed:
            dist.all_reduce(t, op=op)
        return t

    dtype = torch.promote_types(scores.dtype, torch.float32)
    with torch.autocast(device_type=scores.device.type, enabled=False):
        logits = scores.to(dtype) / temperature
        # The same scalar on every rank in 'global' scope, or the local sums would mix scales.
        logits = logits - reduce(logits.max().clone(), op='max')
        q = torch.exp(logits).t()  # (K, N)
        num_protos, num_rows = q.shape
        q = q / reduce(q.sum().clone())
        total_rows = reduce(torch.tensor(float(num_rows), dtype=dtype, device=q.device))
        r = 1.0 / num_protos
        c = 1.0 / total_rows
        u = reduce(q.sum(dim=1))
        for _ in range(num_iters):  # a few sequential rounds, not a loop over data
            q = q * (r / u).unsqueeze(1)
            q = q * (c / q.sum(dim=0)).unsqueeze(0)
            u = reduce(q.sum(dim=1))
        return (q / q.sum(dim=0, keepdim=True)).t()


@torch.no_grad()
def code_entropy(codes: Tensor) -> Tensor:
    """Mean entropy (nats) of (N, K) soft codes, rows summing to 1: log K for uniform codes,
    which carry no training signal (every prototype equally likely), 0 for one-hot codes."""
    return -(codes * codes.clamp_min(1e-12).log()).sum(-1).mean()
