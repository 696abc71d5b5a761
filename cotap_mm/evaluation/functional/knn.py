"""Weighted k-nearest-neighbour classification on L2-normalised features (docs/method.md §6.2).

The vote is DINO's (and the CoTAP code's): each of the top-k training neighbours of a query, by
cosine similarity ``s``, votes for its class with weight ``exp(s / T)``; the class with the
largest summed weight wins. Similarities are computed chunk by chunk over the *training* set and
merged into a running top-k, so the memory is O(query_chunk x train_chunk), never O(Q x N): an
ImageNet-1k train bank (1.28M x 768) is searched without building a 1.28M-wide matrix.
"""
from typing import Dict, Iterable, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    'l2_normalize_', 'knn_topk', 'knn_vote_scores', 'weighted_knn_classify', 'knn_grid_evaluate',
    'topk_accuracy'
]


@torch.no_grad()
def l2_normalize_(x: torch.Tensor, chunk: int = 65536, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise the rows of (N, C) ``x`` in place, chunk by chunk (no full-size copy; norms
    computed in float32 also for half-precision storage). Returns ``x``."""
    for s in range(0, x.shape[0], chunk):
        blk = x[s:s + chunk]
        blk.div_(blk.float().norm(dim=1, keepdim=True).clamp_min(eps).to(blk.dtype))
    return x


def _check_pair(train_feats, train_labels, test_feats):
    if train_feats.dim() != 2 or test_feats.dim() != 2:
        raise ValueError(f'kNN: features must be 2-D (N, C); got train {tuple(train_feats.shape)}, '
                         f'test {tuple(test_feats.shape)}')
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f'kNN: train features have {train_feats.shape[1]} channels, test '
                         f'features {test_feats.shape[1]}: were they extracted by the same model?')
    if train_labels.shape != (train_feats.shape[0], ):
        raise ValueError(f'kNN: train_labels must have shape ({train_feats.shape[0]},), got '
                         f'{tuple(train_labels.shape)}')
    if train_feats.shape[0] == 0:
        raise ValueError('kNN: the training set is empty')


@torch.no_grad()
def knn_topk(train_feats: torch.Tensor,
             test_feats: torch.Tensor,
             k: int,
             normalize: bool = True,
             test_chunk: int = 1024,
             train_chunk: int = 65536) -> Tuple[torch.Tensor, torch.Tensor]:
    """Top-k cosine neighbours of each test feature in the training set.

    Args:
        train_feats (Tensor): (N, C) training features (any float dtype, any device).
        test_feats (Tensor): (Q, C) query features, same device as ``train_feats``.
        k (int): Neighbours per query; clipped to N.
        normalize (bool): L2-normalise both sets first (cosine similarity). Defaults to True.
        test_chunk (int): Queries per block. Defaults to 1024.
        train_chunk (int): Training rows per block; the similarity block is at most
            ``test_chunk x train_chunk`` floats. Defaults to 65536.

    Returns:
        tuple[Tensor, Tensor]: similarities (Q, k) float32, sorted in decreasing order, and the
        matching training indices (Q, k) int64. Ties keep the lower training index first within
        a block (``torch.topk`` order is not guaranteed across blocks for exact ties).
    """
    N = train_feats.shape[0]
    k = min(int(k), N)
    if k < 1:
        raise ValueError(f'kNN: k must be >= 1, got {k}')
    sims_out, idx_out = [], []
    for q0 in range(0, test_feats.shape[0], test_chunk):
        q = test_feats[q0:q0 + test_chunk].float()
        if normalize:
            q = F.normalize(q, dim=1)
        best_s = q.new_full((q.shape[0], 0), float('-inf'))
        best_i = torch.empty((q.shape[0], 0), dtype=torch.long, device=q.device)
        for t0 in range(0, N, train_chunk):
            t = train_feats[t0:t0 + train_chunk].float()
            if normalize:
                t = F.normalize(t, dim=1)
            s = q @ t.T  # (q, t) block of cosine similarities
            kk = min(k, s.shape[1])
            s, i = s.topk(kk, dim=1)
            # merge the block's top-k with the running top-k
            cat_s, cat_i = torch.cat([best_s, s], 1), torch.cat([best_i, i + t0], 1)
            best_s, order = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
            best_i = cat_i.gather(1, order)
        sims_out.append(best_s)
        idx_out.append(best_i)
    return torch.cat(sims_out), torch.cat(idx_out)


def knn_vote_scores(sims: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int,
                    temperature: float) -> torch.Tensor:
    """Per-class weighted votes ``sum_{j in top-k, y_j = c} exp(s_j / T)``.

    Args:
        sims (Tensor): (Q, k) cosine similarities of the k neighbours used.
        neighbour_labels (Tensor): (Q, k) int64 class of each neighbour, in [0, num_classes).
        num_classes (int): C.
        temperature (float): T > 0; smaller T puts more weight on the closest neighbours.

    Returns:
        Tensor: (Q, C) float32 vote totals.
    """
    if temperature <= 0:
        raise ValueError(f'kNN: temperature must be > 0, got {temperature}')
    weights = (sims.float() / temperature).exp()
    scores = sims.new_zeros((sims.shape[0], num_classes), dtype=torch.float32)
    return scores.scatter_add_(1, neighbour_labels.long(), weights)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)
                  ) -> Dict[int, float]:
    """Top-k accuracy in % from (Q, C) scores and (Q,) labels. k > C is clipped to C."""
    out = {}
    for k in topk:
        kk = min(k, scores.shape[1])
        pred = scores.topk(kk, dim=1).indices
        out[k] = 100.0 * (pred == labels.view(-1, 1)).any(1).float().mean().item()
    return out


@torch.no_grad()
def weighted_knn_classify(train_feats: torch.Tensor,
                          train_labels: torch.Tensor,
                          test_feats: torch.Tensor,
                          num_classes: int,
                          k: int = 20,
                          temperature: float = 0.07,
                          **chunk_kwargs) -> torch.Tensor:
    """Weighted kNN class scores for each query (DINO's ``knn_classifier`` vote).

    Args:
        train_feats (Tensor): (N, C_feat) training features (normalised inside).
        train_labels (Tensor): (N,) int64 training labels in [0, num_classes).
        test_feats (Tensor): (Q, C_feat) query features.
        num_classes (int): Number of classes.
        k (int): Neighbours (clipped to N). Defaults to 20.
        temperature (float): T in ``exp(s / T)``. Defaults to 0.07.
        **chunk_kwargs: ``normalize`` / ``test_chunk`` / ``train_chunk`` of :func:`knn_topk`
            (``normalize=False`` when the features are already unit vectors, e.g. after
            :func:`l2_normalize_`, saves re-normalising the bank for every query block).

    Returns:
        Tensor: (Q, num_classes) vote scores; ``scores.argmax(1)`` is the prediction.
    """
    _check_pair(train_feats, train_labels, test_feats)
    sims, idx = knn_topk(train_feats, test_feats, k, **chunk_kwargs)
    return knn_vote_scores(sims, train_labels.to(idx.device)[idx], num_classes, temperature)


@torch.no_grad()
def knn_grid_evaluate(train_feats: torch.Tensor,
                      train_labels: torch.Tensor,
                      test_feats: torch.Tensor,
                      test_labels: torch.Tensor,
                      num_classes: int,
                      ks: Iterable[int] = (5, 10, 20, 50, 100),
                      temperatures: Iterable[float] = (0.05, 0.07, 0.1, 0.15, 0.2),
                      topk: Sequence[int] = (1, 5),
                      **chunk_kwargs) -> Dict[Tuple[int, float], Dict[int, float]]:
    """Accuracy of the weighted kNN for every (k, T) of a grid, with a single neighbour search.

    The top-max(ks) neighbours are searched once; each k uses their first k (the search returns
    them sorted), so the grid costs one search plus cheap re-weighting.

    Args:
        train_feats (Tensor): (N, C_feat).
        train_labels (Tensor): (N,) int64.
        test_feats (Tensor): (Q, C_feat).
        test_labels (Tensor): (Q,) int64.
        num_classes (int): Number of classes.
        ks (Iterable[int]): Neighbour counts (each clipped to N).
        temperatures (Iterable[float]): Temperatures.
        topk (Sequence[int]): Accuracies reported. Defaults to (1, 5).
        **chunk_kwargs: see :func:`knn_topk`.

    Returns:
        dict: ``{(k, T): {1: top1_percent, 5: top5_percent}}`` with k as requested (not clipped).
    """
    _check_pair(train_feats, train_labels, test_feats)
    ks, temperatures = list(ks), list(temperatures)
    if not ks or not temperatures:
        raise ValueError('kNN grid: ks and temperatures must not be empty')
    sims, idx = knn_topk(train_feats, test_feats, max(ks), **chunk_kwargs)
    nb_labels = train_labels.to(idx.device)[idx]
    test_labels = test_labels.to(idx.device)
    results = {}
    for k in ks:
        for t in temperatures:
            scores = knn_vote_scores(sims[:, :k], nb_labels[:, :k], num_classes, t)
            results[(k, t)] = topk_accuracy(scores, test_labels, topk)
    return results
