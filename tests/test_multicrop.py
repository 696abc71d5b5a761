"""CoTAPMultiCrop: shapes, overlap constraint, and geometric correctness of the relative boxes."""
import math

import numpy as np
import pytest

from cotap_mm.datasets.transforms.multicrop import CoTAPMultiCrop, relative_boxes
from cotap_mm.registry import TRANSFORMS


def coord_image(h=200, w=250):
    """uint8 image whose channels encode (x, y): B = x, G = y, R = 0 (values < 256)."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)


def bilinear(img, x, y):
    """Sample img (H, W, C) at continuous output coords (pixel centres at i + 0.5)."""
    x, y = x - 0.5, y - 0.5
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    fx, fy = x - x0, y - y0
    h, w = img.shape[:2]
    get = lambda yy, xx: img[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)].astype(float)  # noqa
    return ((1 - fx) * (1 - fy) * get(y0, x0) + fx * (1 - fy) * get(y0, x0 + 1)
            + (1 - fx) * fy * get(y0 + 1, x0) + fx * fy * get(y0 + 1, x0 + 1))


def test_shapes_and_registry():
    np.random.seed(0)
    t = TRANSFORMS.build(dict(type='CoTAPMultiCrop', size_crops=(64, 32)))
    out = t(dict(img=coord_image()))
    assert len(out['img']) == 6
    assert [c.shape for c in out['img']] == [(64, 64, 3)] * 2 + [(32, 32, 3)] * 4
    assert all(c.dtype == np.uint8 for c in out['img'])
    assert out['bbox_gc'].shape == (2, 6, 4) and out['bbox_gc'].dtype == np.float32
    assert out['bbox_all'].shape == (6, 2, 4) and out['bbox_all'].dtype == np.float32
    assert out['crop_boxes'].shape == (6, 4)


def test_overlap_constraint_and_nonempty():
    t = CoTAPMultiCrop(size_crops=(32, 16))
    h, w = 120, 160
    thr = math.floor(0.01 * h * w)
    for seed in range(30):
        np.random.seed(seed)
        boxes = t.sample_boxes(h, w)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        for k in range(1, 6):
            for g in range(min(k, 2)):
                area = t._inter_area(boxes[k], boxes[g:g + 1])[0]
                assert area > (2 * thr if k < 2 else thr)
        gc, al = relative_boxes(boxes, t.crop_sizes(), 2)
        assert (gc[..., 2:] > gc[..., :2]).all() and (al[..., 2:] > al[..., :2]).all()


def test_boxes_identity_on_own_crop():
    np.random.seed(1)
    t = CoTAPMultiCrop(size_crops=(64, 32))
    out = t(dict(img=coord_image()))
    for g in range(2):
        np.testing.assert_allclose(out['bbox_gc'][g, g], [0, 0, 64, 64], atol=1e-4)
    for k in range(6):
        s = 64 if k < 2 else 32
        # All boxes lie inside their frame.
        assert (out['bbox_all'][k] >= -1e-4).all() and (out['bbox_all'][k] <= s + 1e-4).all()
    # bbox_all[g, g'] and bbox_gc[g, g'] are both the intersection of g and g' in g's frame.
    np.testing.assert_allclose(out['bbox_all'][:2], out['bbox_gc'][:, :2])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_boxes_map_to_same_content(seed):
    """The intersection box points at the same original pixels in both crop frames."""
    np.random.seed(seed)
    t = CoTAPMultiCrop(size_crops=(96, 48), global_scale=(0.3, 1.0), local_scale=(0.1, 0.2))
    img = coord_image(200, 250)
    out = t(dict(img=img))
    crops, gc, al = out['img'], out['bbox_gc'], out['bbox_all']
    for g in range(2):
        for k in range(6):
            bg, bk = gc[g, k], al[k, g]
            for fx, fy in [(0.5, 0.5), (0.25, 0.75), (0.8, 0.2)]:
                pg = bilinear(crops[g], bg[0] + fx * (bg[2] - bg[0]), bg[1] + fy * (bg[3] - bg[1]))
                pk = bilinear(crops[k], bk[0] + fx * (bk[2] - bk[0]), bk[1] + fy * (bk[3] - bk[1]))
                # Both decode to the same original (x, y) within interpolation error.
                np.testing.assert_allclose(pg[:2], pk[:2], atol=3.0)
            # And the box maps back to the absolute intersection.
            box_g, box_k = out['crop_boxes'][g], out['crop_boxes'][k]
            inter = np.r_[np.maximum(box_g[:2], box_k[:2]), np.minimum(box_g[2:], box_k[2:])]
            sz = box_g[2:] - box_g[:2]
            back = np.r_[bg[:2] / 96 * sz + box_g[:2], bg[2:] / 96 * sz + box_g[:2]]
            np.testing.assert_allclose(back, inter, atol=1e-3)


def test_impossible_overlap_raises():
    np.random.seed(0)
    t = CoTAPMultiCrop(global_scale=(0.01, 0.011), max_tries=20)
    with pytest.raises(RuntimeError, match='max_tries'):
        t.sample_boxes(100, 100)


def test_bad_arguments():
    with pytest.raises(ValueError, match='size_crops'):
        CoTAPMultiCrop(size_crops=(224,))
    with pytest.raises(TypeError, match='LoadImageFromFile'):
        CoTAPMultiCrop()(dict(img=None))
