"""Hummingbird dense nearest-neighbour retrieval of a frozen backbone over data loaders
(``tools/analysis/hummingbird.py``, docs/probes.md): the augmented memory of patch features
with their soft labels, then the retrieval confusion matrix of a labelled split. The tensor
steps are :mod:`cotap_mm.evaluation.functional.hummingbird`."""
import sys
from typing import Iterable, Optional, Tuple

import torch

from .features import patch_features
from .functional import confusion_matrix
from .functional.hummingbird import (patch_label_fractions, retrieve_label_distributions,
                                     sample_memory_patches, upsample_argmax)

__all__ = ['patch_tokens', 'build_memory', 'retrieval_confusion']


def patch_tokens(backbone, x: torch.Tensor, device) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, 3, S, S) -> L2-normalised (B, h * w, D) float32 patch features and the grid."""
    f = patch_features(backbone, x, device, normalize=True)  # (B, h, w, D)
    return f.flatten(1, 2), tuple(f.shape[1:3])


def build_memory(backbone, dataset, loader: Iterable, num_classes: int, ignore_index: int,
                 ignore_as: Optional[int], memory_size: int, epochs: int, seed: int, device,
                 dtype=torch.float32, logger=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(M, D) features and (M, C) soft labels of ``epochs`` passes over ``loader`` (the
    augmented train split ``dataset``, re-seeded per epoch with ``set_epoch``); with a
    ``memory_size`` (0: every patch) each image contributes ``memory_size // (N * epochs)``
    patches, sampled towards rare classes."""
    from mmengine.utils import ProgressBar
    N = len(dataset)
    per_image = memory_size // (N * epochs) if memory_size else None
    if logger is not None:
        logger.info(f'memory: {N} images x {epochs} augmentation epochs, '
                    + (f'{max(1, per_image)} patches per image' if per_image is not None
                       else 'every patch'))
    generator = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    bar = ProgressBar(N * epochs)
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for x, y in loader:
            f, grid = patch_tokens(backbone, x, device)
            frac = patch_label_fractions(y, grid, num_classes, ignore_index, ignore_as)
            if per_image is not None:
                idx = sample_memory_patches(frac, max(1, per_image), generator)  # (B, K)
                f = f.cpu().gather(1, idx[..., None].expand(-1, -1, f.shape[-1]))
                frac = frac.gather(1, idx[..., None].expand(-1, -1, frac.shape[-1]))
            feats.append(f.reshape(-1, f.shape[-1]).to(dtype).cpu())
            labels.append(frac.reshape(-1, frac.shape[-1]))
            for _ in range(len(x)):
                bar.update()
    sys.stdout.write('\n')
    return torch.cat(feats), torch.cat(labels)


def retrieval_confusion(backbone, loader: Iterable, keys: torch.Tensor,
                        key_labels: torch.Tensor, num_neighbors: int, temperature: float,
                        ignore_index: int, device, query_chunk: int = 4096) -> torch.Tensor:
    """(C + 1, C) confusion matrix of the labels retrieved for every pixel of ``loader``: the
    softmax vote of each patch's ``num_neighbors`` nearest memory patches, upsampled
    bilinearly to the label size."""
    C = key_labels.shape[1]
    conf = torch.zeros((C + 1, C), dtype=torch.long)
    for x, y in loader:
        q, grid = patch_tokens(backbone, x, device)
        B, N, D = q.shape
        dist = retrieve_label_distributions(q.reshape(-1, D), keys, key_labels, num_neighbors,
                                            temperature, test_chunk=query_chunk)
        pred = upsample_argmax(dist.reshape(B, N, C), grid, y.shape[-2:]).cpu()
        conf += confusion_matrix(pred, y.long(), C, C, ignore_index)
    return conf
