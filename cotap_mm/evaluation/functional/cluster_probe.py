"""Unsupervised segmentation probe: k-means over patch features, cluster-to-class matching,
confusion-matrix mIoU (the STEGO / Leopart protocol, docs/probes.md).

- ``K == C``: one-to-one Hungarian matching (:func:`hungarian_match`,
  ``scipy.optimize.linear_sum_assignment`` maximising the matched pixels).
- ``K > C`` (overclustering, K = 100-500): many-to-one, each cluster to the class it overlaps most
  (:func:`majority_match`).
- The metric (:func:`segmentation_metrics`) follows mmseg's ``IoUMetric``: pixels labelled
  ``ignore_index`` (or outside [0, C)) are skipped, per-class IoU = TP / (TP + FP + FN), classes
  with an empty union (absent from both prediction and label) give NaN and are dropped from the
  mean, a class predicted but absent from the labels gets IoU 0 and counts. Predictions outside
  [0, C) (clusters left unmatched, id -1) count as misses of the true class and as nobody's false
  positive.
"""
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = [
    'confusion_matrix', 'segmentation_metrics', 'hungarian_match', 'majority_match',
    'match_clusters', 'match_confusion', 'faiss_kmeans', 'assign_clusters'
]


def confusion_matrix(pred: torch.Tensor,
                     label: torch.Tensor,
                     num_pred: int,
                     num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """Pixel counts ``conf[p, c]`` of prediction ``p`` against label ``c``.

    Args:
        pred (Tensor): Predicted ids, any shape; values outside [0, num_pred) go to an extra
            last row (``conf[num_pred]``: "no valid prediction").
        label (Tensor): Labels, same shape; ``ignore_index`` and values outside [0, num_classes)
            are skipped.
        num_pred (int): Number of prediction ids (K clusters, or C classes).
        num_classes (int): C.
        ignore_index (int): Defaults to 255.

    Returns:
        Tensor: (num_pred + 1, num_classes) int64.
    """
    if pred.shape != label.shape:
        raise ValueError(f'confusion_matrix: pred {tuple(pred.shape)} and label '
                         f'{tuple(label.shape)} differ in shape')
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    pred, label = pred[valid], label[valid]
    pred = torch.where((pred >= 0) & (pred < num_pred), pred, torch.full_like(pred, num_pred))
    return torch.bincount(pred * num_classes + label,
                          minlength=(num_pred + 1) * num_classes).reshape(num_pred + 1,
                                                                          num_classes)


def segmentation_metrics(conf: torch.Tensor) -> Dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU from a class confusion matrix.

    Args:
        conf (Tensor): (C, C) or (C + 1, C) counts ``conf[pred, label]`` (the optional last row
            holds pixels with no valid prediction, as :func:`confusion_matrix` returns).

    Returns:
        dict: ``mIoU`` and ``aAcc`` in % (NaN if nothing is valid), ``IoU`` a list of C
        per-class IoUs in % (NaN for classes absent from both prediction and label, dropped from
        the mean), ``num_valid_classes`` and ``num_pixels``.
    """
    C = conf.shape[1]
    if conf.shape[0] not in (C, C + 1):
        raise ValueError(f'segmentation_metrics: conf must be (C, C) or (C+1, C), got '
                         f'{tuple(conf.shape)}')
    conf = conf.double()
    tp = conf[:C].diagonal()
    union = conf[:C].sum(1) + conf.sum(0) - tp  # predicted-as-c + labelled-c - both
    iou = tp / union  # NaN where union == 0
    present = union > 0
    total = conf.sum().item()
    return dict(
        mIoU=100.0 * iou[present].mean().item() if bool(present.any()) else float('nan'),
        aAcc=100.0 * tp.sum().item() / total if total > 0 else float('nan'),
        IoU=(100.0 * iou).tolist(),
        num_valid_classes=int(present.sum()),
        num_pixels=int(total))


def hungarian_match(conf: torch.Tensor) -> torch.Tensor:
    """One-to-one cluster -> class map maximising the matched pixels.

    Args:
        conf (Tensor): (K, C) counts of cluster k against class c.

    Returns:
        Tensor: (K,) int64 class of each cluster; -1 for clusters left unmatched (K > C).
    """
    from scipy.optimize import linear_sum_assignment
    rows, cols = linear_sum_assignment(conf.double().cpu().numpy(), maximize=True)
    mapping = torch.full((conf.shape[0], ), -1, dtype=torch.long)
    mapping[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    return mapping


def majority_match(conf: torch.Tensor) -> torch.Tensor:
    """Many-to-one cluster -> class map: each cluster to the class it overlaps most.

    Args:
        conf (Tensor): (K, C) counts.

    Returns:
        Tensor: (K,) int64; -1 for clusters with no labelled pixel (ties: lowest class id).
    """
    mapping = conf.argmax(1).long()
    mapping[conf.sum(1) == 0] = -1
    return mapping


def match_clusters(clusters: torch.Tensor,
                   label: torch.Tensor,
                   num_clusters: int,
                   num_classes: int,
                   method: str = 'auto',
                   ignore_index: int = 255) -> Tuple[torch.Tensor, Dict[str, object]]:
    """Match clusters to classes on ``label`` and score the matched prediction.

    Args:
        clusters (Tensor): Cluster ids in [0, num_clusters), any shape.
        label (Tensor): Labels, same shape (``ignore_index`` skipped).
        num_clusters (int): K.
        num_classes (int): C.
        method (str): ``'hungarian'``, ``'majority'`` or ``'auto'`` (Hungarian if K <= C,
            majority if K > C). Defaults to ``'auto'``.
        ignore_index (int): Defaults to 255.

    Returns:
        tuple[Tensor, dict]: the (K,) cluster -> class map and :func:`segmentation_metrics` of
        the remapped prediction (plus ``method``).
    """
    cc = confusion_matrix(clusters, label, num_clusters, num_classes, ignore_index)
    return match_confusion(cc[:-1], num_classes, method, miss=cc[-1])


def match_confusion(cluster_conf: torch.Tensor,
                    num_classes: int,
                    method: str = 'auto',
                    miss: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, object]]:
    """:func:`match_clusters` from an accumulated cluster confusion matrix.

    Args:
        cluster_conf (Tensor): (K, C) counts of cluster against class, e.g. summed over image
            chunks of :func:`confusion_matrix` (its rows ``[:-1]``).
        miss (Tensor, optional): (C,) labelled pixels with no valid cluster id (the last row
            of :func:`confusion_matrix`), counted as misses.
        num_classes (int): C.
        method (str): ``'hungarian'``, ``'majority'`` or ``'auto'``.

    Returns:
        tuple[Tensor, dict]: (K,) cluster -> class map (-1: unmatched) and the metrics.
    """
    C = num_classes
    if cluster_conf.dim() != 2 or cluster_conf.shape[1] != C:
        raise ValueError(f'match_confusion: expected (K, {C}) counts, got '
                         f'{tuple(cluster_conf.shape)}')
    K = cluster_conf.shape[0]
    cc = cluster_conf.long().cpu()
    if method == 'auto':
        method = 'hungarian' if K <= C else 'majority'
    if method not in ('hungarian', 'majority'):
        raise ValueError(f"match_clusters: method must be 'hungarian', 'majority' or 'auto', "
                         f'got {method!r}')
    mapping = hungarian_match(cc) if method == 'hungarian' else majority_match(cc)
    # class confusion = cluster confusion summed over the clusters mapped to each class; the
    # clusters left unmatched (-1) go to the "miss" row C
    conf = torch.zeros((C + 1, C), dtype=torch.long)
    conf.index_add_(0, torch.where(mapping >= 0, mapping, torch.full_like(mapping, C)), cc)
    if miss is not None:
        conf[C] += miss.long().cpu()
    metrics = segmentation_metrics(conf)
    metrics['method'] = method
    return mapping, metrics


def faiss_kmeans(feats: torch.Tensor,
                 num_clusters: int,
                 niter: int = 50,
                 nredo: int = 1,
                 seed: int = 0,
                 max_points_per_centroid: int = 256,
                 use_gpu: bool = False) -> torch.Tensor:
    """k-means (faiss) of (N, C_feat) features; returns the (K, C_feat) float32 centroids.

    Features should already be L2-normalised (the tool does it). When N exceeds
    ``K * max_points_per_centroid`` (faiss's own limit, default 256), k-means trains on a
    random subset of that size drawn with ``seed`` (taken here, before the float32 numpy copy,
    so a float16 bank of millions of patches is never copied whole); every point is assigned
    afterwards with :func:`assign_clusters`. Raise the limit to train on every point.

    Args:
        feats (Tensor): (N, C_feat) features.
        num_clusters (int): K.
        niter (int): Lloyd iterations. Defaults to 50.
        nredo (int): Restarts; the run with the lowest objective is kept. Defaults to 1.
        seed (int): Seed of the subset and of faiss's initialisation. Defaults to 0.
        max_points_per_centroid (int): See above. Defaults to 256.
        use_gpu (bool): faiss GPU k-means (needs faiss-gpu). Defaults to False.

    Returns:
        Tensor: (K, C_feat) float32 centroids.
    """
    import faiss
    n = feats.shape[0]
    if n < num_clusters:
        raise ValueError(f'k-means: {n} feature vectors cannot make {num_clusters} clusters; '
                         f'lower --num-clusters or use more/larger images')
    n_max = int(num_clusters) * int(max_points_per_centroid)
    if n > n_max:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:n_max]
        feats = feats[keep.to(feats.device)]
    x = np.ascontiguousarray(feats.detach().float().cpu().numpy())
    d = x.shape[1]
    km = faiss.Kmeans(d, int(num_clusters), niter=int(niter), nredo=int(nredo), seed=int(seed),
                      max_points_per_centroid=int(max_points_per_centroid),
                      gpu=use_gpu, verbose=False)
    km.train(x)
    return torch.from_numpy(km.centroids.copy())


@torch.no_grad()
def assign_clusters(feats: torch.Tensor,
                    centroids: torch.Tensor,
                    chunk: int = 65536,
                    device=None) -> torch.Tensor:
    """Nearest centroid (Euclidean) of each feature.

    Args:
        feats (Tensor): (N, C_feat) features, any float dtype (e.g. float16 on the CPU).
        centroids (Tensor): (K, C_feat).
        chunk (int): Rows per block. Defaults to 65536.
        device (str | torch.device, optional): Where the distances are computed; blocks of
            ``feats`` are moved there one at a time. Defaults to ``feats.device``.

    Returns:
        Tensor: (N,) int64 cluster ids, on ``feats.device``.
    """
    device = torch.device(device) if device is not None else feats.device
    centroids = centroids.to(device).float()
    c2 = (centroids**2).sum(1)
    out = []
    for s in range(0, feats.shape[0], chunk):
        f = feats[s:s + chunk].to(device).float()
        # argmin ||f - c||^2 = argmin (||c||^2 - 2 f.c)
        out.append((c2[None] - 2 * f @ centroids.T).argmin(1).to(feats.device))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
