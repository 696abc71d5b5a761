"""Chance level of a segmentation metric: the mIoU of a predictor that ignores the image.

The predictor labels every pixel independently at random, class ``c'`` with the probability
``q_c'`` of the training labels. Its expected confusion matrix on a validation set with
``n_c`` pixels of class ``c`` is ``conf[c', c] = q_c' * n_c``, and the chance mIoU is the mIoU of
that matrix under mmseg's ``IoUMetric`` rules (:func:`segmentation_metrics`). With many pixels
per class, this is the mIoU such a predictor gets (the relative spread of its counts is
~ 1 / sqrt(pixels)). It is the floor below which a probe has learned nothing from the pixels.
"""
from typing import Dict, Iterable, Union

import numpy as np
import torch

from .cluster_probe import confusion_matrix, segmentation_metrics

__all__ = ['class_pixel_counts', 'chance_confusion', 'chance_segmentation_metrics']

ArrayLike = Union[torch.Tensor, np.ndarray]


def class_pixel_counts(labels: Iterable[ArrayLike],
                       num_classes: int,
                       ignore_index: int = 255) -> torch.Tensor:
    """Pixels of each class over label maps (``ignore_index`` and ids outside [0, C) skipped).

    Args:
        labels (iterable of Tensor | ndarray): Label maps of any shapes (e.g. the uint8 PNGs of
            an ``ann_dir``).
        num_classes (int): C.
        ignore_index (int): Defaults to 255.

    Returns:
        Tensor: (C, ) int64 counts.
    """
    if num_classes < 1:
        raise ValueError(f'class_pixel_counts: num_classes={num_classes!r}; it must be >= 1')
    counts = torch.zeros(num_classes, dtype=torch.long)
    for label in labels:
        label = torch.as_tensor(np.asarray(label)).long()
        # one prediction id for every pixel: row 0 of the confusion matrix counts the labels
        counts += confusion_matrix(torch.zeros_like(label), label, 1, num_classes,
                                   ignore_index)[0]
    return counts


def chance_confusion(train_counts: ArrayLike, val_counts: ArrayLike) -> torch.Tensor:
    """Expected confusion matrix ``conf[pred, label]`` of the train-frequency random predictor.

    Args:
        train_counts (Tensor | ndarray): (C, ) pixels of each class in the training labels; the
            predictor draws class ``c`` with probability ``train_counts[c] / sum``.
        val_counts (Tensor | ndarray): (C, ) pixels of each class in the evaluated labels.

    Returns:
        Tensor: (C, C) float64, ``conf[p, c] = q_p * val_counts[c]``.
    """
    train = torch.as_tensor(np.asarray(train_counts), dtype=torch.float64)
    val = torch.as_tensor(np.asarray(val_counts), dtype=torch.float64)
    if train.dim() != 1 or train.shape != val.shape:
        raise ValueError(f'chance_confusion: train_counts {tuple(train.shape)} and val_counts '
                         f'{tuple(val.shape)} must be two (C,) vectors')
    if bool((train < 0).any()) or bool((val < 0).any()):
        raise ValueError('chance_confusion: train_counts and val_counts must be >= 0')
    if train.sum() <= 0:
        raise ValueError('chance_confusion: train_counts is all zero (no labelled pixel)')
    q = train / train.sum()  # (C,) prediction probabilities
    return q[:, None] * val[None, :]  # (C_pred, C_label)


def chance_segmentation_metrics(train_counts: ArrayLike,
                                val_counts: ArrayLike) -> Dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU (in %) of the train-frequency random predictor.

    The metrics of :func:`segmentation_metrics` on :func:`chance_confusion`: a class's IoU is
    ``q_c n_c / (q_c N + n_c - q_c n_c)`` (N = all val pixels). As in mmseg's ``IoUMetric``, a
    class absent from both the prediction (``q_c = 0``) and the val labels is dropped from the
    mean, and one that is predicted but absent from the val labels counts with IoU 0.

    Args:
        train_counts (Tensor | ndarray): (C, ) training pixels per class.
        val_counts (Tensor | ndarray): (C, ) val pixels per class.

    Returns:
        dict: ``mIoU``, ``aAcc``, ``IoU`` (list of C), ``num_valid_classes``, ``num_pixels``.
    """
    return segmentation_metrics(chance_confusion(train_counts, val_counts))
