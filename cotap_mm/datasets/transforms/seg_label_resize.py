"""Segmentation transforms for CoTAP's evaluation protocol (docs/method.md §6.1): the label is
resized on its own (to ``target_res``), and the training crop is a RandomResizedCrop applied to
image and label alike.

Needs mmsegmentation (mmseg's ``TRANSFORMS``): imported by :mod:`cotap_mm.segmentation`, not by
``import cotap_mm``. The other steps of the protocol reuse mmseg/mmcv transforms
(``RandomFlip``, ``Resize`` with ``keep_ratio=False``, ``LoadAnnotations``, ``PackSegInputs``).
"""

import mmcv
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .crop_box import random_resized_crop_box

__all__ = ['SegLabelResize', 'SegRandomResizedCrop']


def _to_hw(size, name):
    """int | (h, w) -> (h, w) of positive ints."""
    if isinstance(size, int):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f'{name}: size must be a positive int or (h, w), got {size!r}')
    return tuple(size)


def _seg_keys(results):
    """The label maps in ``results``: ``seg_fields`` (mmseg's LoadAnnotations fills it) or
    ``gt_seg_map``."""
    keys = list(results.get('seg_fields', []))
    if 'gt_seg_map' in results and 'gt_seg_map' not in keys:
        keys.append('gt_seg_map')
    return keys


@TRANSFORMS.register_module()
class SegLabelResize(BaseTransform):
    """Resize only the label map(s) to ``size`` (nearest) and, by default, make it the evaluation
    shape by setting ``results['ori_shape']``.

    CoTAP evaluates at a fixed label resolution (``target_res``, e.g. 448x448) whatever the
    original image size. mmseg's ``EncoderDecoder.predict`` resizes logits to
    ``img_meta['ori_shape']`` and ``IoUMetric`` compares them with ``gt_sem_seg``, so both must be
    ``size``. Put this after ``LoadAnnotations`` (and after any image ``Resize``).

    Required keys: ``gt_seg_map`` (and/or ``seg_fields``). Modified keys: the label maps,
    ``ori_shape`` (with ``set_ori_shape``). Added key: ``label_shape``.

    Args:
        size (int | tuple[int, int]): Output (h, w) of the label; an int means square.
        set_ori_shape (bool): Set ``results['ori_shape'] = size``. True for validation/test;
            irrelevant but harmless in training. Defaults to True.
    """

    def __init__(self, size, set_ori_shape=True):
        self.size = _to_hw(size, 'SegLabelResize')
        self.set_ori_shape = set_ori_shape

    def transform(self, results):
        keys = _seg_keys(results)
        if not keys:
            raise KeyError('SegLabelResize: no label map in the results (expected gt_seg_map); '
                           'put LoadAnnotations before it in the pipeline')
        h, w = self.size
        for key in keys:
            # nearest: labels are class ids (255 = ignore), never interpolated
            results[key] = mmcv.imresize(results[key], (w, h), interpolation='nearest')
        results['label_shape'] = (h, w)
        if self.set_ori_shape:
            results['ori_shape'] = (h, w)
        return results

    def __repr__(self):
        return f'{type(self).__name__}(size={self.size}, set_ori_shape={self.set_ori_shape})'


@TRANSFORMS.register_module()
class SegRandomResizedCrop(BaseTransform):
    """RandomResizedCrop of the image and its label maps with the same box (torchvision's
    sampling), image resized with ``interpolation`` and labels with nearest, both to ``size``.

    mmseg has no RandomResizedCrop (mmpretrain's crops only ``img``). The box: up to
    ``max_attempts`` draws of an area fraction in ``scale`` and a log-uniform aspect ratio
    (w/h) in ``ratio``, the first that fits the image wins; otherwise the central crop of the
    whole image clamped to ``ratio``. Draws use ``np.random`` (seeded per dataloader worker by
    mmengine).

    Required keys: ``img``, optional label maps. Modified keys: ``img``, ``img_shape``, the label
    maps. Added key: ``crop_bbox`` (x1, y1, x2, y2) in the input image.

    Args:
        size (int | tuple[int, int]): Output (h, w); an int means square.
        scale (tuple[float, float]): Area fraction range. Defaults to (0.08, 1.0); CoTAP uses
            (0.64, 1) (VOC, COCO, ADE) and (0.36, 1) (Cityscapes).
        ratio (tuple[float, float]): Aspect ratio (w/h) range. Defaults to (3/4, 4/3).
        interpolation (str): Image interpolation (mmcv name). Defaults to 'bilinear'.
        max_attempts (int): Defaults to 10.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3. / 4., 4. / 3.),
                 interpolation='bilinear', max_attempts=10):
        self.size = _to_hw(size, 'SegRandomResizedCrop')
        if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f'SegRandomResizedCrop: scale must be (lo, hi) with '
                             f'0 < lo <= hi <= 1, got {scale!r}')
        if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f'SegRandomResizedCrop: ratio must be (lo, hi) with 0 < lo <= hi, '
                             f'got {ratio!r}')
        if max_attempts < 1:
            raise ValueError(f'SegRandomResizedCrop: max_attempts must be >= 1, got {max_attempts}')
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.max_attempts = max_attempts

    def get_crop_bbox(self, height, width):
        """Sample (y, x, h, w) of the crop in an image of ``height`` x ``width``."""
        return random_resized_crop_box(height, width, self.scale, self.ratio, self.max_attempts)

    def transform(self, results):
        img = results['img']
        y, x, h, w = self.get_crop_bbox(*img.shape[:2])
        out_h, out_w = self.size
        crop = img[y:y + h, x:x + w]
        results['img'] = mmcv.imresize(crop, (out_w, out_h), interpolation=self.interpolation)
        for key in _seg_keys(results):
            seg = results[key][y:y + h, x:x + w]
            results[key] = mmcv.imresize(seg, (out_w, out_h), interpolation='nearest')
        results['img_shape'] = (out_h, out_w)
        results['crop_bbox'] = (x, y, x + w, y + h)
        return results

    def __repr__(self):
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, interpolation={self.interpolation!r}, '
                f'max_attempts={self.max_attempts})')
