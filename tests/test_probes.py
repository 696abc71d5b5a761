"""Evaluation probes: kNN / linear classification and the k-means cluster segmentation probe
(cotap_mm/evaluation, tools/analysis). The generated data and checkpoint (``probe_assets``) and
the tool loader (``analysis_tool``) are fixtures of conftest.py."""
import json
import math
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from cotap_mm.evaluation.functional import (assign_clusters, confusion_matrix,
                                            evaluate_linear_probe, faiss_kmeans,
                                            hungarian_match, knn_grid_evaluate, knn_topk,
                                            knn_vote_scores, l2_normalize_, majority_match,
                                            match_clusters, segmentation_metrics,
                                            topk_accuracy, train_linear_probe,
                                            weighted_knn_classify)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(autouse=True, scope='module')
def _few_threads():
    """Tiny problems: thread start-up and OpenMP spinning on a shared CPU cost more than the
    work itself."""
    import faiss
    n_torch, n_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(n_torch)
    faiss.omp_set_num_threads(n_faiss)


# --------------------------------------------------------------------------- kNN


def _blobs(n_per, centers, noise, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(centers, dtype=torch.float32)
    x = c.repeat_interleave(n_per, 0) + noise * torch.randn(len(c) * n_per, c.shape[1],
                                                            generator=g)
    return x, torch.arange(len(c)).repeat_interleave(n_per)


def test_knn_separable_clusters_is_perfect():
    centers = torch.eye(4, 16) * 5
    tr_x, tr_y = _blobs(20, centers, 0.3, 0)
    te_x, te_y = _blobs(10, centers, 0.3, 1)
    scores = weighted_knn_classify(tr_x, tr_y, te_x, 4, k=5, temperature=0.07, train_chunk=7)
    assert scores.shape == (40, 4)
    assert topk_accuracy(scores, te_y, (1, ))[1] == 100.0
    # a (deliberately) wrong labelling of the bank gives 0 %
    scores = weighted_knn_classify(tr_x, (tr_y + 1) % 4, te_x, 4, k=5)
    assert topk_accuracy(scores, te_y, (1, ))[1] == 0.0


def test_knn_topk_chunking_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    tr, te = torch.randn(103, 8, generator=g), torch.randn(17, 8, generator=g)
    sims, idx = knn_topk(tr, te, 10, test_chunk=5, train_chunk=9)
    full = torch.nn.functional.normalize(te, dim=1) @ torch.nn.functional.normalize(tr, dim=1).T
    ref_s, ref_i = full.topk(10, dim=1)
    torch.testing.assert_close(sims, ref_s)
    assert torch.equal(idx, ref_i)
    # k larger than the bank is clipped
    assert knn_topk(tr[:3], te, 10)[0].shape == (17, 3)
    # pre-normalised (in place, chunked, half storage) + normalize=False gives the same
    tr16 = l2_normalize_(tr.clone().half(), chunk=10)
    torch.testing.assert_close(tr16.float().norm(dim=1), torch.ones(103), atol=1e-3, rtol=0)
    s16, i16 = knn_topk(tr16, l2_normalize_(te.clone()), 10, normalize=False, train_chunk=9)
    torch.testing.assert_close(s16, ref_s, atol=2e-3, rtol=0)


def test_knn_temperature_weights():
    # query q; two class-0 neighbours at cosine 0.9, three class-1 neighbours at cosine 0.5
    sims = torch.tensor([[0.9, 0.9, 0.5, 0.5, 0.5]])
    labels = torch.tensor([[0, 0, 1, 1, 1]])
    for t in (0.07, 0.5, 10.0):
        s = knn_vote_scores(sims, labels, 3, t)
        torch.testing.assert_close(
            s, torch.tensor([[2 * math.exp(0.9 / t), 3 * math.exp(0.5 / t), 0.0]]))
    # a small T trusts the two close neighbours, a large T tends to majority voting
    assert knn_vote_scores(sims, labels, 3, 0.07).argmax() == 0
    assert knn_vote_scores(sims, labels, 3, 10.0).argmax() == 1
    with pytest.raises(ValueError, match='temperature'):
        knn_vote_scores(sims, labels, 3, 0.0)

    # the same through real features and the full classifier
    ang0, ang1 = math.acos(0.9), math.acos(0.5)
    bank = torch.tensor([[math.cos(ang0), math.sin(ang0)], [math.cos(ang0), -math.sin(ang0)],
                         [math.cos(ang1), math.sin(ang1)], [math.cos(ang1), -math.sin(ang1)],
                         [math.cos(ang1), math.sin(ang1)]])
    y = torch.tensor([0, 0, 1, 1, 1])
    q = torch.tensor([[2.0, 0.0]])  # not unit: normalised inside
    assert weighted_knn_classify(bank, y, q, 2, k=5, temperature=0.07).argmax() == 0
    assert weighted_knn_classify(bank, y, q, 2, k=5, temperature=10.0).argmax() == 1


def test_knn_grid_matches_single_runs():
    centers = torch.randn(3, 8, generator=torch.Generator().manual_seed(3))
    tr_x, tr_y = _blobs(15, centers, 0.8, 0)
    te_x, te_y = _blobs(8, centers, 0.8, 1)
    grid = knn_grid_evaluate(tr_x, tr_y, te_x, te_y, 3, ks=(1, 5, 20), temperatures=(0.05, 1.0),
                             topk=(1, 2), train_chunk=4)
    assert set(grid) == {(k, t) for k in (1, 5, 20) for t in (0.05, 1.0)}
    for (k, t), acc in grid.items():
        single = weighted_knn_classify(tr_x, tr_y, te_x, 3, k=k, temperature=t)
        assert acc == topk_accuracy(single, te_y, (1, 2))
    with pytest.raises(ValueError, match='channels'):
        weighted_knn_classify(tr_x, tr_y, te_x[:, :4], 3)


# --------------------------------------------------------------------------- linear probe


def test_linear_probe_learns_and_is_deterministic():
    centers = torch.eye(3, 6) * 4
    tr_x, tr_y = _blobs(30, centers, 0.5, 0)
    te_x, te_y = _blobs(10, centers, 0.5, 1)
    state = torch.random.get_rng_state()
    head = train_linear_probe(tr_x, tr_y, 3, lr=0.05, batch_size=16, epochs=5, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert evaluate_linear_probe(head, te_x, te_y)[1] == 100.0
    again = train_linear_probe(tr_x, tr_y, 3, lr=0.05, batch_size=16, epochs=5, seed=1)
    assert torch.equal(head.weight, again.weight)
    other = train_linear_probe(tr_x, tr_y, 3, lr=0.05, batch_size=16, epochs=5, seed=2)
    assert not torch.equal(head.weight, other.weight)
    # one pass = ceil(N / batch) optimiser steps
    steps = []
    train_linear_probe(tr_x, tr_y, 3, batch_size=16, progress=lambda: steps.append(1))
    assert len(steps) == math.ceil(90 / 16)
    with pytest.raises(ValueError, match=r'\[0, 2\)'):
        train_linear_probe(tr_x, tr_y, 2)


# --------------------------------------------------------------------------- cluster probe


def test_segmentation_metrics_hand_computed():
    # classes 0..2; class 2 absent from label and prediction -> NaN, dropped
    label = torch.tensor([0, 0, 1, 1, 255, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])  # ignored pixels do not count
    conf = confusion_matrix(pred, label, 3, 3)
    assert conf.shape == (4, 3) and conf.sum() == 4
    m = segmentation_metrics(conf)
    # class 0: tp 1, union 2 -> 50 ; class 1: tp 2, union 3 -> 66.7 ; class 2: NaN
    assert m['IoU'][0] == pytest.approx(50.0) and m['IoU'][1] == pytest.approx(200 / 3)
    assert math.isnan(m['IoU'][2]) and m['num_valid_classes'] == 2
    assert m['mIoU'] == pytest.approx((50 + 200 / 3) / 2)
    assert m['aAcc'] == pytest.approx(75.0)
    # a class predicted but absent from the labels scores 0 and counts (mmseg IoUMetric)
    m = segmentation_metrics(confusion_matrix(torch.tensor([0, 2, 1, 1]),
                                              torch.tensor([0, 0, 1, 1]), 3, 3))
    assert m['IoU'][2] == 0.0 and m['num_valid_classes'] == 3
    assert m['mIoU'] == pytest.approx((50 + 100 + 0) / 3)
    # invalid predictions (-1: unmatched cluster) are misses of the true class only
    m = segmentation_metrics(confusion_matrix(torch.tensor([-1, 0, 1, 1]),
                                              torch.tensor([0, 0, 1, 1]), 2, 2))
    assert m['IoU'] == pytest.approx([50.0, 100.0]) and m['aAcc'] == pytest.approx(75.0)


def test_segmentation_metrics_match_mmseg_iou_metric():
    metrics = pytest.importorskip('mmseg.evaluation.metrics')
    g = torch.Generator().manual_seed(0)
    C = 6
    label = torch.randint(0, C, (3, 20, 20), generator=g)
    label[label == 4] = 5  # class 4 absent from the labels ...
    label[:, :3] = 255
    pred = torch.randint(0, C, (3, 20, 20), generator=g)
    pred[pred == 4] = 3  # ... and from the predictions: NaN, dropped
    areas = [metrics.IoUMetric.intersect_and_union(p, lb, C, 255) for p, lb in zip(pred, label)]
    ref = metrics.IoUMetric.total_area_to_metrics(*[sum(a[i] for a in areas) for i in range(4)],
                                                  metrics=['mIoU'])
    ours = segmentation_metrics(confusion_matrix(pred, label, C, C))
    assert ours['mIoU'] == pytest.approx(100 * np.nanmean(ref['IoU']), rel=1e-5)
    assert ours['aAcc'] == pytest.approx(100 * float(ref['aAcc']), rel=1e-5)
    np.testing.assert_allclose(ours['IoU'], 100 * ref['IoU'], rtol=1e-5)
    assert ours['num_valid_classes'] == 5


def test_hungarian_on_permuted_labelling_is_perfect():
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 5, (4, 16, 16), generator=g)
    label[:, 0] = 255
    perm = torch.tensor([3, 0, 4, 1, 2])
    clusters = perm[label.clamp(max=4)]  # a relabelling of the ground truth
    mapping, m = match_clusters(clusters, label, 5, 5)
    assert m['method'] == 'hungarian' and m['mIoU'] == 100.0 and m['aAcc'] == 100.0
    assert torch.equal(mapping[perm], torch.arange(5))
    # fewer clusters than classes: Hungarian leaves classes unpredicted
    _, m = match_clusters(clusters.clamp(max=3), label, 4, 5)
    assert 0 < m['mIoU'] < 100


def test_majority_on_overclustering_is_perfect():
    g = torch.Generator().manual_seed(1)
    label = torch.randint(0, 3, (2, 12, 12), generator=g)
    # split every class into 4 clusters: 12 clusters, each pure
    clusters = label * 4 + torch.randint(0, 4, label.shape, generator=g)
    mapping, m = match_clusters(clusters, label, 12, 3)
    assert m['method'] == 'majority' and m['mIoU'] == 100.0
    assert torch.equal(mapping, torch.arange(12) // 4)
    # Hungarian on the same overclustering matches only 3 clusters: the rest become misses
    _, mh = match_clusters(clusters, label, 12, 3, method='hungarian')
    assert mh['mIoU'] < 50
    assert torch.equal(majority_match(torch.tensor([[0, 0], [1, 3]])), torch.tensor([-1, 1]))
    assert torch.equal(hungarian_match(torch.tensor([[5, 1], [6, 0]])), torch.tensor([1, 0]))


def test_faiss_kmeans_recovers_blobs():
    centers = torch.nn.functional.normalize(torch.eye(3, 8) + 0.1, dim=1)
    x, y = _blobs(50, centers, 0.02, 0)
    x = torch.nn.functional.normalize(x, dim=1)
    # nredo: random-sample init can put two seeds in one blob; the best of 8 restarts does not
    cent = faiss_kmeans(x, 3, niter=20, nredo=8, seed=0)
    a = assign_clusters(x, cent, chunk=17)
    assert cent.shape == (3, 8) and a.shape == (150, )
    assert match_clusters(a, y, 3, 3)[1]['mIoU'] == 100.0
    assert torch.equal(faiss_kmeans(x, 3, niter=20, nredo=8, seed=0), cent)  # seeded
    # training on a seeded subset (K * max_points_per_centroid = 45 of 150 points) still works
    sub = faiss_kmeans(x.half(), 3, niter=20, nredo=8, seed=0, max_points_per_centroid=15)
    assert match_clusters(assign_clusters(x.half(), sub), y, 3, 3)[1]['mIoU'] == 100.0
    with pytest.raises(ValueError, match='cannot make'):
        faiss_kmeans(x[:2], 3)


# --------------------------------------------------------------------------- tools


COMMON = ['--device', 'cpu', '--num-workers', '0', '--batch-size', '8']


def test_knn_and_linear_tools(probe_assets, analysis_tool, tmp_path):
    knn, lin = analysis_tool('knn_classification'), analysis_tool('linear_classification')
    cls_args = [str(probe_assets / 'tiny.py'), str(probe_assets / 'tiny.pth'), '--data-root',
                str(probe_assets / 'cls'), '--resize', '36', '--crop', '32', '--work-dir',
                str(tmp_path / 'wd'), '--feature-cache', str(tmp_path / 'feats.pth')] + COMMON
    res = knn.main(cls_args + ['--k', '5', '--grid-k', '1', '5', '100', '--grid-t', '0.07',
                               '1.0'])
    saved = json.loads((tmp_path / 'wd' / 'knn_classification.json').read_text())
    assert saved['headline'] == res['headline']
    assert saved['num_train'] == 18 and saved['num_val'] == 9 and saved['num_classes'] == 3
    assert saved['feature_dim'] == 128  # 2D: the OAF CLS token of the 64-d tiny ViT
    assert saved['headline']['k'] == 5 and saved['headline']['effective_k'] == 5
    # solid-colour classes are trivially separable, even by a random ViT
    assert saved['headline']['top1'] == 100.0
    assert len(saved['grid']) == 6 and all(0 <= g['top1'] <= 100 for g in saved['grid'])
    assert 'selected on the val set' in saved['grid_best_selected_on_val']['note']
    assert [f for f in os.listdir(tmp_path / 'wd') if f.endswith('.log')]
    assert not [f for f in os.listdir(tmp_path / 'wd') if f.endswith('.tmp')]
    assert (tmp_path / 'feats.pth').is_file()

    out = tmp_path / 'lin' / 'linear.json'
    lres = lin.main(cls_args + ['--out', str(out), '--lr', '0.05', '--probe-batch-size', '4',
                                '--epochs', '20', '--save-head', str(tmp_path / 'head.pth')])
    saved = json.loads(out.read_text())
    assert saved['top1'] == lres['top1'] and saved['steps'] == 20 * 5
    assert saved['top1'] >= 66.0 and saved['train_top1'] >= 66.0
    assert torch.load(tmp_path / 'head.pth')['weight'].shape == (3, 128)
    # the cache refuses features made with other settings
    with pytest.raises(ValueError, match='feature-cache'):
        lin.main(cls_args[:5] + ['40'] + cls_args[6:])


def test_cluster_tool(probe_assets, analysis_tool, tmp_path):
    seg = analysis_tool('cluster_segmentation')
    args = [str(probe_assets / 'seg_cfg.py'), str(probe_assets / 'tiny.pth'), '--data-root',
            str(probe_assets / 'seg'), '--num-classes', '3', '--size', '48', '--num-clusters', '3',
            '6', '--niter', '10', '--nredo', '8', '--work-dir', str(tmp_path)] + COMMON
    res = seg.main(args)
    saved = json.loads((tmp_path / 'cluster_segmentation.json').read_text())
    assert saved['num_images'] == 4 and saved['patch_grid'] == [3, 3]
    assert saved['feature_dim'] == 128
    hung, maj = saved['runs']
    assert hung['method'] == 'hungarian' and maj['method'] == 'majority'
    assert len(hung['cluster_to_class']) == 3 and len(maj['cluster_to_class']) == 6
    for r in saved['runs']:
        assert 0 <= r['mIoU'] <= 100 and 0 <= r['aAcc'] <= 100 and len(r['IoU']) == 3
    # each 16-px colour band is exactly one patch column: the clusters are the classes
    assert hung['mIoU'] == pytest.approx(100.0) and maj['mIoU'] == pytest.approx(100.0)
    assert res['runs'][0]['mIoU'] == hung['mIoU']
    # --ann-file (relative to ROOT) restricts and orders the images
    (probe_assets / 'seg' / 'subset.txt').write_text('3\n1\n')
    sub = seg.main(args + ['--ann-file', 'subset.txt', '--num-clusters', '3', '--out',
                           str(tmp_path / 'sub.json')])
    assert sub['num_images'] == 2 and sub['patch_grid'] == [3, 3]
    (probe_assets / 'seg' / 'bad.txt').write_text('1\n7\n')
    with pytest.raises(FileNotFoundError, match="lists 1 images.*'7'"):
        seg.main(args + ['--ann-file', 'bad.txt'])
    # labels outside [0, C) are reported with the file name
    with pytest.raises(ValueError, match='num-classes'):
        seg.main(args[:4] + ['--num-classes', '2'] + args[6:])


def test_lbfgs_dense_probe_converges_where_few_adam_steps_do_not():
    """optimizer='lbfgs' fits the 1x1-conv probe to the optimum: on features that separate the
    classes only through small, differently scaled channels, it is perfect where 20 Adam steps
    are not, and the global RNG is untouched."""
    from cotap_mm.evaluation.functional import (confusion_matrix, fit_dense_linear_probe,
                                                segmentation_metrics)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (8, 4, 4), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    feats = torch.cat([onehot * torch.tensor([1e-3, 1., 30.]).view(1, 3, 1, 1),
                       torch.randn(8, 5, 4, 4, generator=g)], 1)
    big = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    interior = big.clone()
    for off in (0, 3):  # bilinear upsampling blurs cell borders: interior pixels decide
        interior[:, off::4] = 255
        interior[:, :, off::4] = 255

    def score(predict):
        pred = predict(feats).argmax(1)
        return segmentation_metrics(confusion_matrix(pred, interior, 3, 3))['mIoU']

    rng = torch.get_rng_state()
    lbfgs = fit_dense_linear_probe(feats, big, 3, iters=100, optimizer='lbfgs', normalize=False,
                                   chunk=3)
    assert torch.equal(rng, torch.get_rng_state())
    adam = fit_dense_linear_probe(feats, big, 3, iters=20, lr=1e-3, normalize=False)
    assert score(lbfgs) == pytest.approx(100.) and score(adam) < 90
    log = lbfgs.fit_log  # how the fit ended: at most the iterations asked, a small gradient
    assert 1 <= log['iterations'] <= 100 and log['function_evals'] >= log['iterations']
    assert log['grad_norm'] < 1e-3 and 0 < log['final_loss'] < 0.5 and adam.fit_log is None
    with pytest.raises(ValueError, match="'adam' or 'lbfgs'"):
        fit_dense_linear_probe(feats, big, 3, optimizer='sgd')


def test_linear_segmentation_tool(probe_assets, analysis_tool, tmp_path):
    tool = analysis_tool('linear_segmentation')
    args = [str(probe_assets / 'seg_cfg.py'), str(probe_assets / 'tiny.pth'), '--data-root',
            str(probe_assets / 'seg'), '--num-classes', '3', '--size', '48', '--iters', '50',
            '--work-dir', str(tmp_path)] + COMMON
    res = tool.main(args)
    saved = json.loads((tmp_path / 'linear_segmentation.json').read_text())
    assert saved['num_images'] == [4, 4] and saved['patch_grid'] == [3, 3]
    assert saved['feature_dim'] == 128 and saved['mIoU'] == res['mIoU']
    # each colour band is one patch column: a converged linear probe separates them
    assert res['mIoU'] > 90 and len(res['IoU']) == 3
    with pytest.raises(SystemExit):
        tool.parse_args(args + ['--weight-decay', '-1'])
    assert res['weight_decay_selection'] is None and res['fit']['iterations'] >= 1


def test_linear_segmentation_chooses_weight_decay_on_train_and_scores_splits(
        probe_assets, analysis_tool, tmp_path):
    """Several weight decays: each is fitted on part of the training split and scored on the
    rest; the best is refitted on all of it, and one probe scores every --splits split."""
    tool = analysis_tool('linear_segmentation')
    res = tool.main([str(probe_assets / 'seg_cfg.py'), str(probe_assets / 'tiny.pth'),
                     '--data-root', str(probe_assets / 'seg'), '--num-classes', '3', '--size',
                     '48', '--iters', '30', '--work-dir', str(tmp_path), '--weight-decay', '1e-4',
                     '30', '--select-fraction', '0.5', '--splits', 'val', 'train'] + COMMON)
    sel = res['weight_decay_selection']
    assert sel['held_out_images'] == 2 and [c['weight_decay'] for c in sel['candidates']] == [
        1e-4, 30.]
    best = max(sel['candidates'], key=lambda c: c['mIoU'])
    assert res['weight_decay'] == best['weight_decay'] == 1e-4  # a huge penalty fits nothing
    assert set(res['splits']) == {'val', 'train'} and res['mIoU'] == res['splits']['val']['mIoU']
    assert res['splits']['train']['num_images'] == 4 and res['fit']['weight_decay'] == 1e-4
    with pytest.raises(SystemExit):
        tool.parse_args(['c', 'k', '--data-root', 'r', '--num-classes', '2',
                         '--select-fraction', '1'])


def test_checkpoint_loading_is_strict(probe_assets, tmp_path):
    from cotap_mm.models.utils.loading import build_backbone, load_backbone_weights
    cfg = str(probe_assets / 'tiny.py')
    bb, _ = build_backbone(cfg, out_type='cls_token')
    with pytest.raises(KeyError, match=r'(?s)missing keys .*\(7 in total\).*with_oaf=False'):
        load_backbone_weights(bb, str(probe_assets / 'tiny_no_oaf.pth'))
    with pytest.raises(KeyError, match="no key starts with 'model.'"):
        load_backbone_weights(bb, str(probe_assets / 'tiny.pth'), prefix='model.')
    # a plain ViT takes the checkpoint, dropping its oaf.* keys (with a warning)
    plain, _ = build_backbone(cfg, {'model.with_oaf': False}, out_type='cls_token')
    info = load_backbone_weights(plain, str(probe_assets / 'tiny.pth'))
    assert len(info['dropped']) == 7 and info['meta'] == {'note': 'test'}
    assert plain(torch.rand(1, 3, 32, 32))[-1].shape == (1, 64)
    # a wrong arch is a listed shape mismatch
    small, _ = build_backbone(cfg, {'model.arch': 'small'}, out_type='cls_token')
    with pytest.raises(KeyError, match='shape mismatch'):
        load_backbone_weights(small, str(probe_assets / 'tiny.pth'))


def test_json_output_is_strict(tmp_path):
    from mmengine.logging import MMLogger

    from cotap_mm.evaluation.features import json_safe
    from tools._common.probes import write_results
    obj = json_safe({'iou': [50.0, float('nan')], 'k': (1, np.float32(2.5)), 't': torch.ones(2)})
    assert obj == {'iou': [50.0, None], 'k': [1, 2.5], 't': [1.0, 1.0]}
    path = write_results(obj, str(tmp_path / 'a' / 'r.json'),
                         MMLogger.get_instance('test_json_output_is_strict'))
    assert json.loads(open(path).read(), parse_constant=lambda c: 1 / 0) == obj
    assert os.listdir(tmp_path / 'a') == ['r.json']


def test_knn_tool_as_script(probe_assets, tmp_path, monkeypatch):
    """The ``__main__`` entry (argv from the command line), run with runpy: a fresh interpreter
    would spend ~25 s importing the OpenMMLab stack on a loaded 2-core machine."""
    import runpy
    out = tmp_path / 'r.json'
    script = osp.join(ROOT, 'tools', 'analysis', 'knn_classification.py')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', [
        script, str(probe_assets / 'tiny.py'), str(probe_assets / 'tiny.pth'), '--data-root',
        str(probe_assets / 'cls'), '--resize', '36', '--crop', '32', '--no-grid', '--out', str(out),
        '--cfg-options', 'model.with_oaf=False'] + COMMON)
    runpy.run_path(script, run_name='__main__')
    saved = json.loads(out.read_text())
    assert saved['feature_dim'] == 64 and 'grid' not in saved  # plain ViT: D-wide CLS
    assert saved['headline']['top1'] == 100.0
    # default work dir: ./work_dirs/<config name>, holding the log
    logs = [f for f in os.listdir(tmp_path / 'work_dirs' / 'tiny') if f.endswith('.log')]
    log = (tmp_path / 'work_dirs' / 'tiny' / logs[0]).read_text()
    assert 'kNN classification' in log and 'fixed (headline)' in log and '100.00' in log
