"""A miniature of `make demo` (tools/demo.py --preset mini): synthetic scenes -> supervised init
-> kNN -> CoTAP pretraining -> extract_backbone -> `mim train mmseg` linear probes (pixels, init,
CoTAP) -> `mim test mmseg` -> concentration and cluster probes; the recorded `mim_test_command`
evaluated again by the project's tools/test.py gives the same CoTAP mIoU, and a second run
reuses the cached init."""
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT, load_tool

from benchmarks.demo_chain import DemoChain
from benchmarks.demo_presets import prepare_work_dir

demo = load_tool('demo')


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    base = tmp_path_factory.mktemp('demo')
    work_dir, cache = base / 'work', base / 'cache'
    results = demo.main(['--work-dir', str(work_dir), '--preset', 'mini', '--cache-dir',
                         str(cache)])
    return work_dir, results, cache


def test_results_file_and_stages(demo_run):
    work_dir, results, _ = demo_run
    with open(work_dir / 'results.json') as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    for key in ('init_miou', 'cotap_miou'):
        assert 0.0 <= saved[key] <= 100.0
    assert saved['gain'] == pytest.approx(saved['cotap_miou'] - saved['init_miou'], abs=0.01)
    assert set(saved['stage_seconds']) >= {'data', 'init', 'knn', 'control_cls', 'cotap',
                                           'probe-pixels', 'probe-init', 'probe-cotap',
                                           'analysis', 'primary', 'chance'}
    # the light stages (chance level) may round to 0.0 s
    assert all(s >= 0 for s in saved['stage_seconds'].values())
    assert all(saved['stage_seconds'][s] > 0 for s in ('init', 'cotap', 'probe-cotap'))
    assert saved['init'] == 'supervised' and saved['init_cached'] is None
    assert 0.0 <= saved['pixels_miou'] <= 100.0 and 0.0 < saved['chance_miou'] < 100.0
    for name in ('init', 'cotap'):
        row = saved['rows'][name]
        assert 0.0 <= row['cluster_miou'] <= 100.0
        assert -1.0 <= row['concentration']['ratio'] <= 1.0
    # the classes the init's kNN pairs share, against random pairs of the same scenes
    assert set(saved['knn_agreement']) == {'coco', 'imagenet'}
    for agreement in saved['knn_agreement'].values():
        for kind in ('all', 'things'):
            assert 0.0 <= agreement[kind]['knn'] <= 1.0 and 0.0 <= agreement[kind]['random'] <= 1.0
    # the supervised init has no object-aware filter: probed on its D-wide tokens
    assert saved['rows']['init']['with_oaf'] is False and saved['rows']['cotap']['with_oaf']
    # the real on-disk products of each stage
    for path in ('data/coco/train2017', 'data/imagenet/train', 'data/seg/img_dir/val',
                 'data/nns/nns_coco.npz', 'cotap_backbone.pth'):
        assert (work_dir / path).exists(), path
    assert any(f.endswith('.png') for f in os.listdir(work_dir / 'pictures' / 'cotap'))
    # every stage is a command line, logged in its own file
    for stage in ('data', 'knn', 'cotap', 'analysis', 'chance', 'pictures'):
        assert (work_dir / 'logs' / f'{stage}.log').is_file(), stage
    assert (work_dir / 'pictures' / 'pca_init_vs_cotap.png').is_file()
    # the primary metric of docs/protocol.md: the init, the data-matched control and CoTAP, each
    # on its D-wide ViT tokens (CoTAP's without the filter), on val and the held-out test scenes
    assert set(saved['primary']) == {'init', 'control_cls', 'cotap'}
    for name, scores in saved['primary'].items():
        assert set(scores) == {'val', 'test'} and all(0 <= v <= 100 for v in scores.values())
        probe = json.loads((work_dir / 'analysis' / f'{name}_lbfgs_vit.json').read_text())
        assert probe['feature_dim'] == 96
        assert len(probe['weight_decay_selection']['candidates']) == 4
    assert saved['rows']['cotap_vit']['with_oaf'] is False
    assert saved['rows']['control_cls']['with_oaf']
    assert (work_dir / 'data' / 'seg' / 'img_dir' / 'test').is_dir()


def test_mim_test_command_matches_tools_test(demo_run):
    """The recorded command's checkpoint and options, evaluated by tools/test.py, give the
    CoTAP mIoU that `mim test mmseg` printed in the demo."""
    work_dir, results, _ = demo_run
    cmd = shlex.split(results['mim_test_command'])
    assert cmd[:3] == ['mim', 'test', 'mmseg']
    config, ckpt = cmd[3], cmd[cmd.index('--checkpoint') + 1]
    options = cmd[cmd.index('--cfg-options') + 1:]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/test.py'), config, ckpt,
                          '--work-dir', str(work_dir / 'tools_test'), '--cfg-options',
                          *options], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    found = re.findall(r'mIoU:\s*([0-9.]+)', out.stdout + out.stderr)
    assert found, (out.stdout + out.stderr)[-2000:]
    assert float(found[-1]) == pytest.approx(results['cotap_miou'], abs=1e-6)


def test_second_run_reuses_the_cached_init(demo_run, tmp_path):
    """Same config, seed and data: the init comes from the cache, bit for bit."""
    import torch
    work_dir, _, cache = demo_run
    again = tmp_path / 'again'
    prepare_work_dir(str(again))
    d = DemoChain(str(again), 0, 'mini', 'supervised', cache_dir=str(cache))
    d.stage('data', d.data)
    d.stage('init', d.trained_init)
    assert d.init_cached is not None and d.init_cached.startswith(str(cache))
    assert not (again / 'init').exists()  # nothing was trained
    first = torch.load(work_dir / 'init_backbone.pth', weights_only=True)['state_dict']
    second = torch.load(again / 'init_backbone.pth', weights_only=True)['state_dict']
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # another seed or schedule is another init; the CoTAP stage's settings are not part of it
    other = DemoChain(str(again), 1, 'mini', 'supervised', cache_dir=str(cache))
    assert other.init_key() != d.init_key()
    longer = DemoChain(str(again), 0, 'mini', 'supervised', cache_dir=str(cache))
    longer.p = dict(longer.p, init_iters=longer.p['init_iters'] + 1, cotap_iters=99)
    assert longer.init_key() != d.init_key()
    longer.p = dict(d.p, cotap_iters=99, probe_iters=99)
    assert longer.init_key() == d.init_key()


def test_fair_comparison_scores_a_row_without_a_filter(demo_run):
    """The protocol's probes of the init: its ViT tokens, and the 2D-wide readout built from its
    own k-means prototypes (the filter at its seeded initial weights), on val and test."""
    import torch
    from benchmarks.fair_comparison import PROBES, kmeans_readout, score_row
    work_dir, results, cache = demo_run
    d = DemoChain(str(work_dir), 0, 'mini', 'supervised', cache_dir=str(cache))
    d.rows['init'] = dict(checkpoint=str(work_dir / 'init_backbone.pth'), with_oaf=False)
    full = torch.load(kmeans_readout(d, 'init'), weights_only=True)['state_dict']
    vit = torch.load(work_dir / 'init_backbone.pth', weights_only=True)['state_dict']
    assert all(torch.equal(full[k], v) for k, v in vit.items())  # the row's own ViT
    kernel = full['backbone.oaf.kernel']
    assert kernel.shape[0] == 32 and torch.isfinite(kernel).all()
    scores = score_row(d, 'init')
    for split in ('val', 'test'):
        assert set(scores[split]) == set(PROBES)
        assert all(0 <= scores[split][p] <= 100 for p in PROBES if p != 'concentration_vit')
    assert scores['val']['lbfgs_vit'] == results['primary']['init']['val']
    for probe in ('lbfgs_vit', 'lbfgs_full'):
        fit = scores['fits'][probe]
        assert fit['weight_decay'] in (1e-5, 1e-4, 1e-3, 1e-2) and fit['fit']['iterations'] >= 1
    width = json.loads((work_dir / 'analysis' / 'init_lbfgs_full.json').read_text())
    assert width['feature_dim'] == 192
