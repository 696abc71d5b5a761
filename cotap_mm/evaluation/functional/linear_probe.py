"""Linear classification probe on frozen features (docs/method.md §6.2).

The CoTAP code trains ``nn.Linear(2D, C)`` with Adam (lr 1e-3, no schedule, no weight decay) for a
*single pass* over the training set, on the raw features (no BatchNorm, no normalisation), and
reports top-1 on val. Here the pass runs over pre-extracted features (there is no augmentation,
so this is the same computation), in an order drawn from ``seed``.
"""
from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .knn import topk_accuracy

__all__ = ['train_linear_probe', 'evaluate_linear_probe']


def train_linear_probe(feats: torch.Tensor,
                       labels: torch.Tensor,
                       num_classes: int,
                       lr: float = 1e-3,
                       batch_size: int = 256,
                       epochs: int = 1,
                       seed: int = 0,
                       shuffle: bool = True,
                       progress=None) -> nn.Linear:
    """Train ``nn.Linear(C_feat, num_classes)`` with Adam and cross-entropy.

    Deterministic for a given seed (on CPU; on GPU up to the nondeterminism of the kernels): the
    layer is initialised (PyTorch's default ``nn.Linear`` init) and the batch order drawn from a
    private generator seeded with ``seed``; the global RNG is left untouched.

    Args:
        feats (Tensor): (N, C_feat) training features, used as they are (no normalisation).
        labels (Tensor): (N,) int64 labels in [0, num_classes).
        num_classes (int): Number of classes.
        lr (float): Adam learning rate, constant. Defaults to 1e-3.
        batch_size (int): Defaults to 256 (the official global batch).
        epochs (int): Passes over the data. Defaults to 1 (the official protocol).
        seed (int): Seed of the init and of the batch order. Defaults to 0.
        shuffle (bool): Draw a random order each pass. Defaults to True.
        progress (callable, optional): Called once per step (e.g. ``ProgressBar.update``).

    Returns:
        nn.Linear: The trained layer (on ``feats.device``, in eval mode).
    """
    if feats.dim() != 2 or labels.shape != (feats.shape[0], ):
        raise ValueError(f'linear probe: need feats (N, C) and labels (N,); got '
                         f'{tuple(feats.shape)} and {tuple(labels.shape)}')
    if feats.shape[0] == 0:
        raise ValueError('linear probe: the training set is empty')
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f'linear probe: labels must lie in [0, {num_classes}); got range '
                         f'[{int(labels.min())}, {int(labels.max())}]')
    device = feats.device
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        head = nn.Linear(feats.shape[1], num_classes).to(device)
    gen = torch.Generator().manual_seed(seed)
    optim = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    labels = labels.to(device).long()
    n = feats.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size].to(device)
            loss = F.cross_entropy(head(feats[idx].float()), labels[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if progress is not None:
                progress()
    return head.eval()


@torch.no_grad()
def evaluate_linear_probe(head: nn.Module,
                          feats: torch.Tensor,
                          labels: torch.Tensor,
                          topk: Sequence[int] = (1, 5),
                          batch_size: int = 4096) -> Dict[int, float]:
    """Top-k accuracy (%) of ``head`` on (N, C_feat) features and (N,) labels."""
    scores = torch.cat([head(feats[s:s + batch_size].float()) for s in range(0, len(feats),
                                                                              batch_size)])
    return topk_accuracy(scores, labels.to(scores.device), topk)
