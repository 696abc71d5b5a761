"""Chance-level mIoU (cotap_mm/evaluation/functional/chance.py, tools/analysis/chance_miou.py)."""
import math
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from cotap_mm.evaluation.functional import (chance_confusion, chance_segmentation_metrics,
                                            class_pixel_counts, confusion_matrix,
                                            segmentation_metrics)


def chance_miou(train_counts, val_counts):
    return chance_segmentation_metrics(train_counts, val_counts)['mIoU']


def test_hand_computed_cases():
    # two balanced classes: conf = [[1, 1], [1, 1]], IoU = 1 / (2 + 2 - 1) each
    assert chance_miou([1, 1], [2, 2]) == pytest.approx(100 / 3)
    # q = (3/4, 1/4), n = (1, 3): conf = [[.75, 2.25], [.25, .75]], both IoUs .75 / 3.25
    torch.testing.assert_close(chance_confusion([3, 1], [1, 3]),
                               torch.tensor([[.75, 2.25], [.25, .75]], dtype=torch.float64))
    m = chance_segmentation_metrics([3, 1], [1, 3])
    assert m['mIoU'] == pytest.approx(100 * .75 / 3.25)
    assert m['aAcc'] == pytest.approx(100 * (.75 + .75) / 4)
    # one class only: always right
    assert chance_miou([5], [7]) == pytest.approx(100.)


def test_absent_classes_follow_iou_metric_rules():
    # class 2 never in train (never predicted) but in val: IoU 0, counted
    m = chance_segmentation_metrics([1, 1, 0], [1, 1, 2])
    assert m['IoU'][2] == 0. and m['num_valid_classes'] == 3
    # class 2 predicted but absent from val: IoU 0, counted; class 3 in neither: dropped
    m = chance_segmentation_metrics([1, 1, 2, 0], [1, 1, 0, 0])
    assert m['IoU'][2] == 0. and math.isnan(m['IoU'][3]) and m['num_valid_classes'] == 3


def test_closed_form_per_class_iou():
    rng = np.random.default_rng(0)
    train, val = rng.integers(1, 1000, 7), rng.integers(1, 1000, 7)
    q, n, N = train / train.sum(), val.astype(float), val.sum()
    iou = q * n / (q * N + n - q * n)
    m = chance_segmentation_metrics(torch.as_tensor(train), val)
    np.testing.assert_allclose(m['IoU'], 100 * iou, rtol=1e-12)
    assert m['mIoU'] == pytest.approx(100 * iou.mean())


def test_matches_monte_carlo_random_predictor():
    """The mean mIoU of actual random predictions (train frequencies) on a small random label
    set agrees with the expected-confusion value."""
    g = torch.Generator().manual_seed(0)
    C = 5
    freq = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])
    train = torch.multinomial(freq, 4000, replacement=True, generator=g).reshape(40, 100)
    val = torch.multinomial(freq.flip(0), 3000, replacement=True, generator=g).reshape(30, 100)
    train_counts = class_pixel_counts([train], C)
    q = train_counts.double() / train_counts.sum()
    mious = []
    for _ in range(300):
        pred = torch.multinomial(q, val.numel(), replacement=True, generator=g).reshape(val.shape)
        mious.append(segmentation_metrics(confusion_matrix(pred, val, C, C))['mIoU'])
    mc = float(np.mean(mious))
    stderr = float(np.std(mious)) / math.sqrt(len(mious))
    expected = chance_miou(train_counts, class_pixel_counts([val], C))
    assert abs(mc - expected) < max(4 * stderr, 0.05), (mc, expected, stderr)
    # and it is not the uniform-guess level: the frequencies matter
    uniform = chance_miou(torch.ones(C), class_pixel_counts([val], C))
    assert abs(uniform - expected) > 10 * stderr


def test_class_pixel_counts():
    a = np.array([[0, 1, 1], [255, 2, 9]], np.uint8)  # 255 ignored, 9 out of range
    b = torch.tensor([[2, 2]])
    assert class_pixel_counts([a, b], 3).tolist() == [1, 2, 3]
    assert class_pixel_counts([a], 3, ignore_index=0).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match='num_classes'):
        class_pixel_counts([a], 0)


def test_bad_counts():
    with pytest.raises(ValueError, match='train_counts'):
        chance_confusion([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match='all zero'):
        chance_confusion([0, 0], [1, 2])
    with pytest.raises(ValueError, match='>= 0'):
        chance_confusion([1, -1], [1, 2])


def test_tool(tmp_path, analysis_tool):
    tool = analysis_tool('chance_miou')
    rng = np.random.default_rng(1)
    labels = {}
    for split, n in (('train', 3), ('val', 2)):
        d = tmp_path / 'ann_dir' / split
        d.mkdir(parents=True)
        labels[split] = [rng.integers(0, 4, (16, 20)).astype(np.uint8) for _ in range(n)]
        for i, lab in enumerate(labels[split]):
            lab[0, 0] = 255
            cv2.imwrite(str(d / f'{i}.png'), lab)
    out = tmp_path / 'chance.json'
    res = tool.main([str(tmp_path), '--num-classes', '4', '--out', str(out)])
    counts = {s: class_pixel_counts(labels[s], 4) for s in labels}
    assert res['train_counts'] == counts['train'].tolist()
    assert sum(res['val_counts']) == 2 * (16 * 20 - 1)
    assert res['mIoU'] == pytest.approx(chance_miou(counts['train'], counts['val']))
    assert osp.isfile(out)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        tool.main([str(tmp_path), '--num-classes', '4', '--val-ann', 'ann_dir/test'])
