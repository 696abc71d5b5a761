"""Leopart-style multi-crop with an overlap constraint and relative crop boxes (docs/method.md §5.2)."""
import math
import warnings
from typing import Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cotap_mm.registry import TRANSFORMS
from .crop_box import random_resized_crop_box

__all__ = ['CoTAPMultiCrop', 'relative_boxes']


def relative_boxes(boxes: np.ndarray, sizes: Sequence[int], num_global: int):
    """Intersections of every global crop with every crop, in both output frames.

    Args:
        boxes (np.ndarray): (G + L, 4) crop boxes (x1, y1, x2, y2) in original-image pixels,
            globals first.
        sizes (Sequence[int]): (G + L,) output side length S_k of each crop.
        num_global (int): G.

    Returns:
        tuple[np.ndarray, np.ndarray]: ``bbox_gc`` (G, G + L, 4), ``[g, k]`` = intersection of
        global g with crop k mapped into crop g's output frame, ``(I - origin_g) / size_g * S_g``;
        and ``bbox_all`` (G + L, G, 4), ``[k, g]`` = the same intersection in crop k's frame.
        Both float32, in output pixels (x1, y1, x2, y2).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    g_boxes = boxes[:num_global]                                         # (G, 4)
    lo = np.maximum(g_boxes[:, None, :2], boxes[None, :, :2])           # (G, K, 2)
    hi = np.minimum(g_boxes[:, None, 2:], boxes[None, :, 2:])           # (G, K, 2)
    inter = np.concatenate([lo, hi], axis=-1)                            # (G, K, 4)
    origin = boxes[:, :2]                                                # (K, 2)
    extent = boxes[:, 2:] - boxes[:, :2]                                 # (K, 2) (w, h)
    scale = sizes[:, None] / extent                                      # (K, 2)

    def to_frame(box, o, s):  # box (..., 4), o/s broadcastable (..., 2)
        return np.concatenate([(box[..., :2] - o) * s, (box[..., 2:] - o) * s], axis=-1)

    bbox_gc = to_frame(inter, origin[:num_global, None], scale[:num_global, None])
    bbox_all = to_frame(inter.transpose(1, 0, 2), origin[:, None], scale[:, None])
    return bbox_gc.astype(np.float32), bbox_all.astype(np.float32)


@TRANSFORMS.register_module()
class CoTAPMultiCrop(BaseTransform):
    """Multi-crop of one image with crop boxes (Leopart / CoTAP ``LeopartTransforms``, docs/method.md §5.2).

    Samples ``nmb_crops[0]`` global and ``nmb_crops[1]`` local RandomResizedCrop boxes (crop 0,
    crop 1, then the locals), each resized to ``size_crops`` with antialiased bilinear
    interpolation; no flip, no colour. **Overlap constraint**: every crop i > 0 must intersect
    every previously sampled global crop with an area > ``floor(min_overlap * H * W)``, or
    > ``2 * floor(min_overlap * H * W)`` when crop i is itself global; a crop that fails is
    resampled, at most ``max_tries`` times (then a ``RuntimeError``).

    Required keys: ``img`` (H, W, C) uint8 ndarray.

    Modified keys: ``img`` becomes a list of G + L (S, S, C) uint8 arrays (globals first),
    ``img_shape`` the first crop's shape.

    Added keys:
        - ``crop_boxes`` (G + L, 4) float32: crop boxes (x1, y1, x2, y2) in original pixels.
        - ``bbox_gc`` (G, G + L, 4) float32 and ``bbox_all`` (G + L, G, 4) float32: the
          intersections in output pixels, see :func:`relative_boxes`.

    Randomness comes from ``np.random`` (seeded per dataloader worker by mmengine).

    Images smaller than the global crop side are accepted (as torchvision's RandomResizedCrop,
    the crops are upsampled), with a warning naming the file, for the first
    ``MAX_SMALL_WARNINGS`` such images per process.

    Args:
        size_crops (Sequence[int]): Output sides (global, local). Defaults to (224, 96).
        nmb_crops (Sequence[int]): Numbers (G, L). Defaults to (2, 4).
        global_scale (Tuple[float, float]): Area-fraction range of global crops.
            Defaults to (0.25, 1.0).
        local_scale (Tuple[float, float]): Area-fraction range of local crops.
            Defaults to (0.05, 0.1).
        ratio (Tuple[float, float]): Aspect-ratio range. Defaults to (3/4, 4/3).
        min_overlap (float): Overlap threshold as a fraction of the image area. Defaults to 0.01.
        max_tries (int): Resampling budget per crop for the overlap constraint. Defaults to 1000.
    """

    MAX_SMALL_WARNINGS = 10

    def __init__(self,
                 size_crops: Sequence[int] = (224, 96),
                 nmb_crops: Sequence[int] = (2, 4),
                 global_scale: Tuple[float, float] = (0.25, 1.0),
                 local_scale: Tuple[float, float] = (0.05, 0.1),
                 ratio: Tuple[float, float] = (3. / 4., 4. / 3.),
                 min_overlap: float = 0.01,
                 max_tries: int = 1000):
        if len(size_crops) != 2 or len(nmb_crops) != 2:
            raise ValueError('CoTAPMultiCrop: size_crops and nmb_crops must be (global, local) '
                             f'pairs, got size_crops={size_crops}, nmb_crops={nmb_crops}')
        if nmb_crops[0] < 1:
            raise ValueError(f'CoTAPMultiCrop: nmb_crops[0] (global crops) must be >= 1, '
                             f'got {nmb_crops[0]}')
        for name, rng in (('global_scale', global_scale), ('local_scale', local_scale),
                          ('ratio', ratio)):
            if not 0 < rng[0] <= rng[1]:
                raise ValueError(f'CoTAPMultiCrop: {name} must be (min, max) with '
                                 f'0 < min <= max, got {rng}')
        self.size_crops = tuple(int(s) for s in size_crops)
        self.nmb_crops = tuple(int(n) for n in nmb_crops)
        self.global_scale = tuple(global_scale)
        self.local_scale = tuple(local_scale)
        self.ratio = tuple(ratio)
        self.min_overlap = min_overlap
        self.max_tries = max_tries
        self._num_small = 0

    @property
    def num_crops(self) -> int:
        return sum(self.nmb_crops)

    def crop_sizes(self):
        """Output side of every crop, globals first: list of G + L ints."""
        return [self.size_crops[0]] * self.nmb_crops[0] + [self.size_crops[1]] * self.nmb_crops[1]

    def _sample_box(self, height: int, width: int, scale) -> np.ndarray:
        """torchvision ``RandomResizedCrop.get_params`` with ``np.random``: (x1, y1, x2, y2)."""
        i, j, h, w = random_resized_crop_box(height, width, scale, self.ratio)
        return np.array([j, i, j + w, i + h], dtype=np.float64)

    @staticmethod
    def _inter_area(box: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Intersection area of ``box`` (4,) with each of ``others`` (n, 4): (n,)."""
        wh = np.minimum(box[2:], others[:, 2:]) - np.maximum(box[:2], others[:, :2])
        return np.clip(wh, 0, None).prod(axis=1)

    def sample_boxes(self, height: int, width: int) -> np.ndarray:
        """Sample the G + L boxes under the overlap constraint: (G + L, 4) float64."""
        G = self.nmb_crops[0]
        thr = math.floor(self.min_overlap * height * width)
        boxes = []
        for k in range(self.num_crops):
            is_global = k < G
            scale = self.global_scale if is_global else self.local_scale
            min_area = 2 * thr if is_global else thr
            prev_globals = np.asarray(boxes[:G], dtype=np.float64).reshape(-1, 4)
            for _ in range(self.max_tries):
                box = self._sample_box(height, width, scale)
                if k == 0 or (self._inter_area(box, prev_globals) > min_area).all():
                    break
            else:
                raise RuntimeError(
                    f'CoTAPMultiCrop: could not sample crop {k} overlapping the global crops by '
                    f'more than {min_area} px (image {height}x{width}) in max_tries='
                    f'{self.max_tries} tries; check global_scale={self.global_scale}, '
                    f'local_scale={self.local_scale}, min_overlap={self.min_overlap}, or raise '
                    'max_tries.')
            boxes.append(box)
        return np.stack(boxes)

    def transform(self, results: dict) -> dict:
        img = results.get('img')
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise TypeError('CoTAPMultiCrop: results["img"] must be an (H, W[, C]) ndarray (put '
                            f'LoadImageFromFile before it), got {type(img)}')
        height, width = img.shape[:2]
        if min(height, width) < self.size_crops[0]:
            self._warn_small(results.get('img_path'), height, width)
        boxes = self.sample_boxes(height, width)
        sizes = self.crop_sizes()
        chw = torch.from_numpy(np.ascontiguousarray(img if img.ndim == 3 else img[..., None]))
        chw = chw.permute(2, 0, 1)
        crops = []
        for box, size in zip(boxes.astype(np.int64), sizes):
            x1, y1, x2, y2 = box.tolist()
            crop = TF.resized_crop(chw, top=y1, left=x1, height=y2 - y1, width=x2 - x1,
                                   size=[size, size], interpolation=InterpolationMode.BILINEAR,
                                   antialias=True)
            crop = crop.permute(1, 2, 0).numpy()
            crops.append(crop if img.ndim == 3 else crop[..., 0])
        bbox_gc, bbox_all = relative_boxes(boxes, sizes, self.nmb_crops[0])
        results['img'] = crops
        results['img_shape'] = crops[0].shape[:2]
        results['crop_boxes'] = boxes.astype(np.float32)
        results['bbox_gc'] = bbox_gc
        results['bbox_all'] = bbox_all
        return results

    def _warn_small(self, path, height: int, width: int) -> None:
        self._num_small += 1
        if self._num_small > self.MAX_SMALL_WARNINGS:
            return
        more = (' (further small images are not reported)'
                if self._num_small == self.MAX_SMALL_WARNINGS else '')
        warnings.warn(
            f'CoTAPMultiCrop: image {path!r} is {height}x{width} px, smaller than the '
            f'{self.size_crops[0]}-px global crop: its crops are upsampled. If that is not '
            'intended, remove such images (then regenerate the kNN file) or lower '
            f'size_crops{more}.')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(size_crops={self.size_crops}, nmb_crops='
                f'{self.nmb_crops}, global_scale={self.global_scale}, local_scale='
                f'{self.local_scale}, ratio={self.ratio}, min_overlap={self.min_overlap}, '
                f'max_tries={self.max_tries})')
