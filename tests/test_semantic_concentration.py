"""Semantic concentration measure (cotap_mm/evaluation/functional/concentration.py) and its tool
(tools/analysis/semantic_concentration.py). The generated mmseg-layout data and the tiny
checkpoint are conftest.py's ``probe_assets``."""
import json
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cotap_mm.evaluation.functional import patch_labels, semantic_concentration

COMMON = ['--device', 'cpu', '--num-workers', '0', '--batch-size', '8']


def _scene(n=300, dim=16, num_classes=5, num_images=7, signal=2.0, seed=0):
    """Random features with a class signal: (N, dim) feats, (N,) labels with ignored
    (255, -1) patches, (N,) image ids; class 4 lives in one image only."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    labels = torch.randint(0, num_classes, (n, ), generator=g)
    ids = torch.randint(0, num_images, (n, ), generator=g)
    ids[labels == 4] = 3
    feats = torch.randn(n, dim, generator=g) + signal * centers[labels]
    labels[:10], labels[10:15] = 255, -1
    return feats, labels, ids


def _brute_force(feats, labels, ids, center=True, ignore_index=255):
    """Every pair of labelled patches, from the (M, M) cosine matrix: per-class intra over
    cross-image pairs, and the (K, K) inter-class means."""
    keep = (labels >= 0) & (labels != ignore_index)
    x, y, i = feats[keep].double(), labels[keep], ids[keep]
    if center:
        x = x - x.mean(0)
    z = F.normalize(x, dim=1)
    cos = z @ z.T  # (M, M)
    classes = y.unique().tolist()
    intra, inter = [], torch.full((len(classes), len(classes)), math.nan, dtype=torch.float64)
    for a, ca in enumerate(classes):
        pairs = (y[:, None] == ca) & (y[None, :] == ca) & (i[:, None] != i[None, :])
        intra.append(cos[pairs].mean().item() if pairs.any() else math.nan)
        for b, cb in enumerate(classes):
            if a != b:
                inter[a, b] = cos[y == ca][:, y == cb].mean()
    return classes, torch.tensor(intra, dtype=torch.float64), inter


def _summary(m):
    return [m['intra'], m['inter'], m['gap'], m['ratio']]


# --------------------------------------------------------------------------- closed form


@pytest.mark.parametrize('center', [True, False])
def test_closed_form_matches_brute_force(center):
    feats, labels, ids = _scene()
    m = semantic_concentration(feats.half(), labels, ids, center=center, chunk=37)
    classes, intra, inter = _brute_force(feats.half(), labels, ids, center=center)
    assert m['classes'].tolist() == classes == [0, 1, 2, 3, 4]
    torch.testing.assert_close(m['intra_per_class'], intra, equal_nan=True)
    assert math.isnan(m['intra_per_class'][4])  # class 4: one image, no cross-image pair
    off = ~torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(m['cosine_matrix'][off], inter[off])
    torch.testing.assert_close(m['cosine_matrix'].diagonal(), intra, equal_nan=True)
    ref_intra = intra[:4].mean().item()
    ref_inter = inter[torch.triu_indices(5, 5, 1).unbind()].mean().item()
    assert m['intra'] == pytest.approx(ref_intra, abs=1e-12)
    assert m['inter'] == pytest.approx(ref_inter, abs=1e-12)
    assert m['gap'] == pytest.approx(ref_intra - ref_inter, abs=1e-12)
    assert m['ratio'] == pytest.approx((ref_intra - ref_inter) / (1 - ref_inter), abs=1e-12)
    assert m['num_patches'] == 285 and m['num_classes'] == 5 and m['num_intra_classes'] == 4
    assert m['num_patches_per_class'].tolist() == [int((labels == c).sum()) for c in classes]
    assert m['num_images_per_class'].tolist() == [ids[labels == c].unique().numel()
                                                  for c in classes]
    assert m['intra'] > m['inter']  # the class signal concentrates the classes


def test_order_and_id_values_do_not_matter():
    feats, labels, ids = _scene(seed=1)
    m = semantic_concentration(feats, labels, ids)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    p = semantic_concentration(feats[perm], labels[perm], 1000 - 7 * ids[perm])
    assert _summary(p) == pytest.approx(_summary(m), abs=1e-12)
    # merging all images into one leaves no cross-image pair at all
    one = semantic_concentration(feats, labels, torch.zeros_like(ids))
    assert one['num_intra_classes'] == 0 and math.isnan(one['intra'])


def test_concentrated_random_and_in_between():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (600, ), generator=g)
    ids = torch.randint(0, 30, (600, ), generator=g)
    # one orthogonal direction per class: perfectly concentrated and separated
    onehot = torch.eye(32)[labels]
    m = semantic_concentration(onehot, labels, ids)
    assert m['intra'] == pytest.approx(1.0, abs=1e-9)
    assert m['ratio'] == pytest.approx(1.0, abs=1e-9)
    assert m['inter'] < 0  # centred: e_c - mean and e_c' - mean point apart
    # uncentred, the length of the features does not matter
    scaled = onehot * (torch.rand(600, 1, generator=g) + 0.5)
    m = semantic_concentration(scaled, labels, ids, center=False)
    assert _summary(m) == pytest.approx([1.0, 0.0, 1.0, 1.0], abs=1e-9)
    # random features: classes no tighter than random pairs
    m = semantic_concentration(torch.randn(600, 64, generator=g), labels, ids)
    assert abs(m['ratio']) < 0.03 and abs(m['intra']) < 0.03 and abs(m['inter']) < 0.03
    # in between, and the more noise, the less concentration
    ratios = [semantic_concentration(onehot + s * torch.randn(600, 32, generator=g), labels,
                                     ids)['ratio'] for s in (0.05, 0.2, 0.5)]
    assert 1 > ratios[0] > ratios[1] > ratios[2] > 0


def test_centering_removes_a_shared_offset():
    feats, labels, ids = _scene(signal=1.0, seed=2)
    offset = 30.0 * F.normalize(torch.ones(feats.shape[1]), dim=0)
    plain = semantic_concentration(feats, labels, ids)
    shifted = semantic_concentration(feats + offset, labels, ids)
    assert _summary(shifted) == pytest.approx(_summary(plain), abs=1e-9)
    # without centring the shared direction makes every cosine close to 1
    raw = semantic_concentration(feats + offset, labels, ids, center=False)
    assert not raw['centered'] and raw['inter'] > 0.95 and raw['intra'] > 0.95
    assert raw['gap'] < 0.1 * plain['gap']


def test_bad_inputs():
    feats, labels, ids = _scene(n=40)
    cases = [
        ((feats[0], labels, ids), 'feats must be a floating \\(N, C\\)'),
        ((feats.long(), labels, ids), 'feats must be a floating'),
        ((feats[:0], labels[:0], ids[:0]), 'feats is empty'),
        ((feats, labels.float(), ids), 'labels must be an integer \\(40,\\)'),
        ((feats, labels[:-1], ids), 'labels must be an integer'),
        ((feats, labels, ids[:, None]), 'image_ids must be an integer'),
        ((feats, labels.tolist(), ids), 'labels must be'),
        ((feats, torch.full_like(labels, 255), ids), 'no labelled patch'),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            semantic_concentration(*args)
    bad = feats.clone()
    bad[20, 3] = float('nan')
    with pytest.raises(ValueError, match='non-finite'):
        semantic_concentration(bad, labels, ids)
    bad_ignored = bad.clone()
    labels_ignored = labels.clone()
    labels_ignored[20] = 255  # a non-finite feature of an ignored patch is never read
    semantic_concentration(bad_ignored, labels_ignored, ids)
    with pytest.raises(ValueError, match='chunk'):
        semantic_concentration(feats, labels, ids, chunk=0)


# --------------------------------------------------------------------------- patch labels


def test_patch_labels_majority_and_purity():
    # 4x4 pixels -> 2x2 patches of 4 pixels each
    label = torch.tensor([[[0, 0, 1, 1],
                           [0, 255, 1, 1],
                           [2, 2, 3, 3],
                           [2, 1, 3, 255]]])
    out, purity = patch_labels(label, (2, 2), 4, return_purity=True)
    assert out.tolist() == [[[0, 1], [2, 3]]]
    assert purity.tolist() == [[[0.75, 1.0], [0.75, 0.75]]]  # ignored pixels count against
    assert patch_labels(label, (2, 2), 4, min_purity=0.8).tolist() == [[[255, 1], [255, 255]]]
    # ties go to the lowest class; a fully ignored patch stays ignored even at purity 0
    tie = torch.tensor([[[3, 1], [255, 255]]])
    assert patch_labels(tie, (1, 1), 4, min_purity=0.5).tolist() == [[[255]]]
    assert patch_labels(tie, (1, 1), 4, min_purity=0.0).tolist() == [[[1]]]
    assert patch_labels(torch.full((1, 2, 2), 255), (1, 1), 4, min_purity=0.0,
                        ignore_index=-1).tolist() == [[[-1]]]
    # a size that is not a multiple of the grid: 5 rows spread over 2 patches (3 + 2)
    stripes = torch.tensor([0, 0, 0, 1, 1])[None, :, None].expand(2, 5, 4)
    assert patch_labels(stripes, (2, 2), 2, min_purity=1.0).tolist() == [[[0, 0], [1, 1]]] * 2


def test_patch_labels_in_chunks_equal_one_pass():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (7, 16, 16), generator=g)
    label[0, :4] = 255
    whole, purity = patch_labels(label, (4, 4), 5, min_purity=0.3, return_purity=True)
    chunked, chunked_purity = patch_labels(label, (4, 4), 5, min_purity=0.3, return_purity=True,
                                           chunk=3)
    assert torch.equal(whole, chunked) and torch.equal(purity, chunked_purity)
    assert torch.equal(patch_labels(label, (4, 4), 5, min_purity=0.3, chunk=2), whole)
    assert (whole != 255).any() and (whole == 255).any()


def test_patch_labels_bad_inputs():
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match='integer \\(B, H, W\\)'):
        patch_labels(label.float(), (2, 2), 3)
    with pytest.raises(ValueError, match='grid'):
        patch_labels(label, (8, 2), 3)
    with pytest.raises(ValueError, match='min_purity'):
        patch_labels(label, (2, 2), 3, min_purity=1.5)


# --------------------------------------------------------------------------- tool


def _reference_features(probe_assets):
    """The tool's measure from scratch: the backbone run image by image, each patch labelled
    by the pixel at its centre (each 16-px colour band is one patch column)."""
    from cotap_mm.datasets.folder_datasets import SegFolderDataset
    from cotap_mm.models.utils.loading import (build_backbone, get_normalization,
                                               load_backbone_weights)
    bb, cfg = build_backbone(str(probe_assets / 'seg_cfg.py'), out_type='featmap')
    load_backbone_weights(bb, str(probe_assets / 'tiny.pth'))
    mean, std = get_normalization(cfg)
    ds = SegFolderDataset(str(probe_assets / 'seg'), 'val', size=48, mean=mean, std=std)
    feats, labels, ids = [], [], []
    with torch.no_grad():
        for n in range(len(ds)):
            img, lab = ds[n]
            fmap = bb(img[None])[-1][0]  # (C, 3, 3)
            for r in range(3):
                for c in range(3):
                    feats.append(fmap[:, r, c])
                    labels.append(int(lab[16 * r + 8, 16 * c + 8]))
                    ids.append(n)
    return torch.stack(feats), torch.tensor(labels), torch.tensor(ids)


def test_tool_end_to_end(probe_assets, analysis_tool, tmp_path):
    tool = analysis_tool('semantic_concentration')
    args = [str(probe_assets / 'seg_cfg.py'), str(probe_assets / 'tiny.pth'), '--data-root',
            str(probe_assets / 'seg'), '--num-classes', '3', '--size', '48',
            '--work-dir', str(tmp_path)] + COMMON
    res = tool.main(args)
    saved = json.loads((tmp_path / 'semantic_concentration.json').read_text())
    assert saved == json.loads(json.dumps(res))  # the returned dict is what was written
    assert saved['num_images'] == 4 and saved['patch_grid'] == [3, 3]
    assert saved['feature_dim'] == 128 and saved['center'] is True
    # the 2-px ignored top rows leave the top patches 14/16 = 0.875 pure: all 36 labelled
    assert saved['num_patches'] == saved['num_patches_total'] == 36
    assert saved['classes'] == [0, 1, 2] and saved['num_intra_classes'] == 3
    assert [(r['num_patches'], r['num_images']) for r in saved['per_class']] == [(12, 4)] * 3
    ref = semantic_concentration(*_reference_features(probe_assets))
    assert _summary(res) == pytest.approx(_summary(ref), abs=1e-5)
    torch.testing.assert_close(torch.tensor(saved['cosine_matrix'], dtype=torch.float64),
                               ref['cosine_matrix'], atol=1e-5, rtol=0)
    if saved['heatmap'] is not None:  # matplotlib installed
        assert saved['heatmap'] == str(tmp_path / 'semantic_concentration.png')
        with Image.open(saved['heatmap']) as im:
            assert im.format == 'PNG' and min(im.size) > 100

    # stricter purity drops the top row; no centring changes the numbers; no picture
    out = tmp_path / 'strict' / 'r.json'
    strict = tool.main(args + ['--min-purity', '0.9', '--no-center', '--no-heatmap',
                               '--out', str(out)])
    assert json.loads(out.read_text())['num_patches'] == strict['num_patches'] == 24
    assert [r['num_patches'] for r in strict['per_class']] == [8] * 3
    assert strict['center'] is False and strict['heatmap'] is None
    assert not osp.exists(tmp_path / 'strict' / 'r.png')
    assert strict['inter'] != pytest.approx(res['inter'], abs=1e-3)
    with pytest.raises(SystemExit):
        tool.main(args + ['--min-purity', '1.5'])
