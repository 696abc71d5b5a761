"""cotap_mm.evaluation.functional.hummingbird, AugmentedSegFolderDataset and
tools/analysis/hummingbird.py, each against a brute-force reference written here with loops."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import COLORS
from cotap_mm.datasets.folder_datasets import AugmentedSegFolderDataset
from cotap_mm.evaluation.functional import (patch_label_fractions, retrieve_label_distributions,
                                            sample_memory_patches, upsample_argmax)

COMMON = ['--device', 'cpu', '--num-workers', '0', '--batch-size', '3']


def _fractions_loop(label, grid, C, ignore_index, ignore_as):
    B, H, W = label.shape
    h, w = grid
    ph, pw = H // h, W // w
    out = np.zeros((B, h * w, C))
    for b in range(B):
        for i in range(h):
            for j in range(w):
                for v in label[b, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].reshape(-1).tolist():
                    if v == ignore_index:
                        if ignore_as is None:
                            continue
                        v = ignore_as
                    out[b, i * w + j, v] += 1 / (ph * pw)
    return out


@pytest.mark.parametrize('ignore_as', [0, 2, None])
def test_patch_label_fractions(ignore_as):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 4, (2, 12, 8), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.2] = 255
    frac = patch_label_fractions(label, (3, 2), 4, ignore_as=ignore_as)
    ref = _fractions_loop(label.numpy(), (3, 2), 4, 255, ignore_as)
    assert frac.shape == (2, 6, 4)
    np.testing.assert_allclose(frac.numpy(), ref, atol=1e-6)
    if ignore_as is not None:
        np.testing.assert_allclose(frac.sum(-1).numpy(), 1, atol=1e-6)
    with pytest.raises(ValueError, match='not a multiple'):
        patch_label_fractions(label, (5, 2), 4)


def test_sample_memory_patches_prefers_rare_classes():
    g = torch.Generator().manual_seed(1)
    frac = torch.zeros(3, 10, 3)
    for b in range(3):  # class 0 in 8 patches, class 1 in 2, class 2 in one (with class 0)
        frac[b, :8, 0] = 1
        frac[b, 8:, 1] = 1
        frac[b, 0, 2] = 0.5
    frac[2, 5] = 0  # a patch without any class
    draws = torch.rand(3, 10, generator=torch.Generator().manual_seed(7))
    idx = sample_memory_patches(frac, 4, torch.Generator().manual_seed(7))
    for b in range(3):  # the rule, patch by patch
        freq = [sum(1 for p in range(10) if frac[b, p, c] > 0) for c in range(3)]
        scores = []
        for p in range(10):
            classes = [c for c in range(3) if frac[b, p, c] > 0]
            s = sum(freq[c] for c in classes) if classes else 1e6
            scores.append(s * float(draws[b, p]))
        assert sorted(idx[b].tolist()) == sorted(np.argsort(scores, kind='stable')[:4].tolist())
    # rare-class patches are kept far more often than their share
    kept = torch.zeros(10)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        kept.index_add_(0, sample_memory_patches(frac[:1], 3, gen)[0], torch.ones(3))
    assert kept[8:].mean() > 2 * kept[1:8].mean()
    assert sample_memory_patches(frac, 50).shape == (3, 10)  # clipped to N


def test_retrieve_label_distributions_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    keys, queries = torch.randn(200, 16, generator=g), torch.randn(30, 16, generator=g)
    labels = torch.rand(200, 5, generator=g)
    out = retrieve_label_distributions(queries, keys, labels, k=7, temperature=0.05,
                                       test_chunk=8, train_chunk=64)
    kn = keys.double().numpy() / np.linalg.norm(keys.double().numpy(), axis=1, keepdims=True)
    for q in range(30):
        v = queries[q].double().numpy()
        sims = kn @ (v / np.linalg.norm(v))
        top = np.argsort(-sims)[:7]
        a = np.exp(sims[top] / 0.05 - (sims[top] / 0.05).max())
        a /= a.sum()
        np.testing.assert_allclose(out[q].numpy(), (a[:, None] * labels[top].double().numpy())
                                   .sum(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match='temperature'):
        retrieve_label_distributions(queries, keys, labels, temperature=0)


def test_upsample_argmax():
    dist = torch.zeros(1, 4, 3)
    dist[0, :, 0] = torch.tensor([1., 0, 0, 0])
    dist[0, :, 2] = torch.tensor([0., 1, 1, 1])
    pred = upsample_argmax(dist, (2, 2), (8, 8))
    assert pred.shape == (1, 8, 8) and pred[0, 0, 0] == 0 and pred[0, 7, 7] == 2
    up = F.interpolate(dist.transpose(1, 2).reshape(1, 3, 2, 2), (8, 8), mode='bilinear')
    assert torch.equal(pred, up.argmax(1))


def test_augmented_dataset_is_seeded_and_aligned(probe_assets):
    ds = AugmentedSegFolderDataset(str(probe_assets / 'seg'), 'train', size=32, num_classes=3,
                                   seed=3)
    x0, y0 = ds[1]
    x1, y1 = ds[1]
    assert x0.shape == (3, 32, 32) and y0.shape == (32, 32)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)  # a function of (seed, epoch, item)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], x0)
    # the crop is the same for image and label: each labelled pixel has its class's colour
    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, y = ds[i]
            rgb = x * std + mean
            colours = torch.tensor(COLORS, dtype=torch.float32)  # (3, 3)
            nearest = (rgb.flatten(1).T[:, None] - colours[None]).norm(dim=-1).argmin(1)
            lab = y.reshape(-1).long()
            core = lab != 255
            # away from band edges (bilinear mixing) the colour gives the label
            agree = (nearest[core] == lab[core]).float().mean()
            assert agree > 0.85


def _brute_force_tool(backbone, files, epochs, size, C, k, temperature):
    """Every patch of every augmented train image in the memory, neighbours by sorting."""
    from cotap_mm.datasets.folder_datasets import SegFolderDataset
    kw = dict(size=size, num_classes=C, img_suffix='.png')
    train = AugmentedSegFolderDataset(files, 'train', seed=0, **kw)
    keys, key_labels = [], []
    with torch.no_grad():
        for e in range(epochs):
            train.set_epoch(e)
            for i in range(len(train)):
                x, y = train[i]
                f = backbone(x[None])[-1][0]  # (D, h, w)
                h, w = f.shape[1:]
                ph = size // h
                for r in range(h):
                    for c in range(w):
                        keys.append(F.normalize(f[:, r, c].double(), dim=0).numpy())
                        block = y[r * ph:(r + 1) * ph, c * ph:(c + 1) * ph].long().clone()
                        block[block == 255] = 0
                        key_labels.append(np.bincount(block.reshape(-1).numpy(), minlength=C)
                                          / block.numel())
        keys, key_labels = np.stack(keys), np.stack(key_labels)
        conf = np.zeros((C, C))
        for x, y in SegFolderDataset(files, 'val', **kw):
            f = backbone(x[None])[-1][0].double()
            D, h, w = f.shape
            dist = np.zeros((C, h, w))
            for r in range(h):
                for c in range(w):
                    q = F.normalize(f[:, r, c], dim=0).numpy()
                    sims = keys @ q
                    top = np.argsort(-sims)[:k]
                    a = np.exp((sims[top] - sims[top].max()) / temperature)
                    dist[:, r, c] = (a[:, None] * key_labels[top]).sum(0) / a.sum()
            up = F.interpolate(torch.from_numpy(dist)[None].float(), (size, size),
                               mode='bilinear')[0].argmax(0)
            for p, t in zip(up.reshape(-1).tolist(), y.reshape(-1).tolist()):
                if t != 255:
                    conf[p, t] += 1
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    return 100 * np.mean(tp[union > 0] / union[union > 0])


def _blocks_dataset(root, seed=0):
    """mmseg layout, 6 train + 3 val 48x48 images of 12-px blocks of 4 classes (not aligned
    with 16-px patches), a class's colour plus strong noise, some blocks 255."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    colours = np.array(COLORS + [(200, 200, 40)], dtype=np.float64)
    for split, n in (('train', 6), ('val', 3)):
        (root / 'img_dir' / split).mkdir(parents=True)
        (root / 'ann_dir' / split).mkdir(parents=True)
        for i in range(n):
            lab = np.kron(rng.integers(0, 4, (4, 4)), np.ones((12, 12), np.int64))
            img = colours[lab] + rng.normal(0, 60, (48, 48, 3))
            lab[:12, :12] = 255 if i % 2 else lab[:12, :12]
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                root / 'img_dir' / split / f'{i}.png')
            Image.fromarray(lab.astype(np.uint8)).save(root / 'ann_dir' / split / f'{i}.png')
    return root


def test_hummingbird_tool_matches_brute_force(probe_assets, analysis_tool, tmp_path):
    from cotap_mm.models.utils.loading import build_backbone, load_backbone_weights
    tool = analysis_tool('hummingbird')
    data = _blocks_dataset(tmp_path / 'blocks')
    base = [str(probe_assets / 'seg_cfg.py'), str(probe_assets / 'tiny.pth'), '--data-root',
            str(data), '--num-classes', '4', '--size', '48', '--img-suffix', '.png',
            '--num-neighbors', '5', '--augmentation-epochs', '2'] + COMMON
    res = tool.main(base + ['--memory-size', '0', '--work-dir', str(tmp_path)])
    saved = json.loads((tmp_path / 'hummingbird.json').read_text())
    assert saved['memory_patches'] == 6 * 2 * 9 and saved['num_images'] == [6, 3]
    assert saved['mIoU'] == res['mIoU'] and 10 < res['mIoU'] < 90
    backbone, _ = build_backbone(str(probe_assets / 'seg_cfg.py'), out_type='featmap')
    load_backbone_weights(backbone, str(probe_assets / 'tiny.pth'))
    ref = _brute_force_tool(backbone.eval(), str(data), 2, 48, 4, 5, 0.02)
    assert res['mIoU'] == pytest.approx(ref, abs=1e-6)
    # the brute force tells the knobs apart on this data
    assert abs(_brute_force_tool(backbone, str(data), 2, 48, 4, 1, 0.02) - ref) > 0.1
    # a bounded memory: memory_size // (images * epochs) patches per image
    res = tool.main(base + ['--memory-size', '16', '--work-dir', str(tmp_path / 'b')])
    assert res['memory_patches'] == 12
    with pytest.raises(SystemExit):
        tool.parse_args(base + ['--temperature', '0'])
    with pytest.raises(SystemExit):
        tool.parse_args(base + ['--ignore-as', 'background'])
