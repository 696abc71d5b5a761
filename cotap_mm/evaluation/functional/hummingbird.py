"""Hummingbird in-context dense retrieval (Balažević et al., NeurIPS 2023; the protocol of the
open-hummingbird-eval reproduction): a memory of L2-normalised patch features of augmented
training images with their soft patch labels; each query patch takes the softmax-weighted label
distribution of its k nearest memory patches, upsampled and argmaxed to a segmentation.

Pure tensor functions; the data, the augmentation and the command line are in
``tools/analysis/hummingbird.py`` (docs/probes.md, "Hummingbird")."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from cotap_mm.utils.checks import check_positive
from .knn import knn_topk

__all__ = ['patch_label_fractions', 'sample_memory_patches', 'retrieve_label_distributions',
           'upsample_argmax']


def patch_label_fractions(label: torch.Tensor,
                          grid: Sequence[int],
                          num_classes: int,
                          ignore_index: int = 255,
                          ignore_as: Optional[int] = 0) -> torch.Tensor:
    """The soft label of each patch: the fraction of its pixels in each class.

    Args:
        label (Tensor): (B, H, W) integer pixel labels, H and W multiples of the grid.
        grid (tuple[int, int]): (h, w) patch grid.
        num_classes (int): C.
        ignore_index (int): Defaults to 255.
        ignore_as (int, optional): The class that ``ignore_index`` pixels count as; ``0`` as the
            reference implementation does (for Pascal VOC: its boundary pixels become
            background). ``None``: they count for no class (a patch's fractions then sum to
            less than 1). Defaults to 0.

    Returns:
        Tensor: (B, h * w, C) float32, patches in row-major order.
    """
    if label.dim() != 3 or label.is_floating_point():
        raise ValueError(f'patch_label_fractions: label must be an integer (B, H, W) tensor, '
                         f'got {label.dtype} of shape {tuple(label.shape)}')
    B, H, W = label.shape
    h, w = (int(g) for g in grid)
    if H % h or W % w:
        raise ValueError(f'patch_label_fractions: label size {(H, W)} is not a multiple of the '
                         f'patch grid {(h, w)}')
    C = int(num_classes)
    lab = label.long()
    if ignore_as is not None:
        lab = lab.masked_fill(lab == ignore_index, int(ignore_as))
    valid = (lab >= 0) & (lab < C)
    onehot = F.one_hot(lab.clamp(0, C - 1), C).float() * valid.unsqueeze(-1)  # (B, H, W, C)
    frac = onehot.reshape(B, h, H // h, w, W // w, C).mean(dim=(2, 4))  # (B, h, w, C)
    return frac.reshape(B, h * w, C)


def sample_memory_patches(fractions: torch.Tensor,
                          num_samples: int,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Which patches of each image go into the memory: a random draw that favours patches of
    the classes that are rare within the image (the reference's sampling rule).

    A patch's score is the sum, over the classes present in it, of how many patches of its
    image hold that class (a patch without any class gets 1e6); the score is multiplied by a
    uniform draw in [0, 1) and the ``num_samples`` lowest scores are kept.

    Args:
        fractions (Tensor): (B, N, C) soft patch labels (:func:`patch_label_fractions`).
        num_samples (int): K patches per image; clipped to N.
        generator (torch.Generator, optional): The uniform draws' generator (CPU).

    Returns:
        Tensor: (B, K) int64 patch indices.
    """
    present = fractions > 0  # (B, N, C)
    class_patches = present.sum(dim=1, keepdim=True)  # (B, 1, C) patches holding class c
    score = (present * class_patches).sum(dim=-1).float()  # (B, N)
    score[~present.any(dim=-1)] = 1e6
    draws = torch.rand(score.shape, generator=generator).to(score.device)
    K = min(int(num_samples), score.shape[1])
    return (score * draws).topk(K, dim=1, largest=False).indices


def retrieve_label_distributions(queries: torch.Tensor,
                                 keys: torch.Tensor,
                                 key_labels: torch.Tensor,
                                 k: int = 30,
                                 temperature: float = 0.02,
                                 **topk_kwargs) -> torch.Tensor:
    """Each query's label distribution from its k nearest memory patches.

    ``a_j = softmax_j(cos(q, key_j) / temperature)`` over the k keys of highest cosine
    similarity (exact search, :func:`knn_topk`); the result is ``sum_j a_j * key_labels_j``.

    Args:
        queries (Tensor): (Q, D) query patch features.
        keys (Tensor): (M, D) memory features (normalised here; any float dtype).
        key_labels (Tensor): (M, C) soft labels of the memory patches.
        k (int): Neighbours per query; clipped to M. Defaults to 30.
        temperature (float): Softmax temperature. Defaults to 0.02.
        **topk_kwargs: ``test_chunk`` / ``train_chunk`` of :func:`knn_topk`.

    Returns:
        Tensor: (Q, C) float32.
    """
    check_positive('retrieve_label_distributions', 'temperature', temperature)
    if keys.shape[0] != key_labels.shape[0]:
        raise ValueError(f'retrieve_label_distributions: {keys.shape[0]} keys but '
                         f'{key_labels.shape[0]} key labels')
    sims, idx = knn_topk(keys, queries, k, normalize=True, **topk_kwargs)  # (Q, k) each
    attn = torch.softmax(sims / temperature, dim=1)
    return torch.einsum('qk,qkc->qc', attn, key_labels[idx].float())


def upsample_argmax(distributions: torch.Tensor, grid: Sequence[int],
                    size: Sequence[int]) -> torch.Tensor:
    """(B, h * w, C) patch label distributions -> (B, H, W) int64 classes: bilinear upsampling
    of the distributions (not of logits) to ``size``, then the argmax over C."""
    B, N, C = distributions.shape
    h, w = (int(g) for g in grid)
    if N != h * w:
        raise ValueError(f'upsample_argmax: {N} patches do not fill a {h}x{w} grid')
    x = distributions.transpose(1, 2).reshape(B, C, h, w)
    return F.interpolate(x, size=tuple(int(s) for s in size), mode='bilinear',
                         align_corners=False).argmax(dim=1)
