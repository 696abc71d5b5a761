"""tools/benchmark_demo.py and benchmarks.fair_comparison (docs/protocol.md): the rows'
switches on the real configs, the paired t-intervals, the merge of the per-seed files and the
tables; the demo's presets."""
import json
import os.path as osp

import pytest

from conftest import load_tool

from benchmarks import demo_presets, fair_comparison
from benchmarks.demo_chain import ROOT, DemoChain

benchmark_demo = load_tool('benchmark_demo')


def test_rows_switch_only_what_they_test():
    """Every trained row but the image-level control is the CoTAP configuration with switches
    of the real config: the data-matched control turns the three dense terms off, the ablations
    one part each; the heads take what the backbone gives."""
    from mmengine.config import Config, DictAction
    for config, preset in ((demo_presets.CONFIGS['cotap'], 'default'),
                           (demo_presets.PRESETS['gpu']['configs']['cotap'], 'gpu')):
        cfg = Config.fromfile(osp.join(ROOT, config))
        dims = {**demo_presets.DEMO_ARCH, **demo_presets.PRESETS[preset]}['embed_dims']
        assert cfg.model.backbone.arch.embed_dims == dims
        for name, (options, with_oaf) in fair_comparison.cotap_rows(dims).items():
            trial = cfg.copy()
            trial.merge_from_dict({k: DictAction._parse_iterable(v)
                                   for k, v in (o.split('=', 1) for o in options)})
            assert trial.model.backbone.get('with_oaf', True) == with_oaf, name
            width = dims * (2 if with_oaf else 1)
            assert trial.model.patch_head.in_channels == width, (preset, name)
            assert trial.model.cls_head.in_channels == width, (preset, name)
            off = {k for k, v in trial.model.loss_weights.items() if v == 0}
            assert off == dict(control_cls={'cotap', 'inner_patch', 'entropy'},
                               no_rank={'cotap'}).get(name, set()), name
    assert set(fair_comparison.cotap_rows(96)) | {'init', 'control_image'} == \
        set(fair_comparison.ROWS)


def test_paired_interval_is_students_t():
    p = fair_comparison.paired([3., 4., 5., 6., 7.], [2., 2., 2., 2., 2.])
    # differences 1..5: mean 3, sd sqrt(2.5), half-width t(0.975, 4) * sd / sqrt(5)
    half = 2.776 * 2.5 ** 0.5 / 5 ** 0.5
    assert p['mean'] == 3 and p['sd'] == pytest.approx(2.5 ** 0.5, abs=1e-3)
    assert (p['lo'], p['hi']) == (pytest.approx(3 - half, abs=1e-3), pytest.approx(3 + half,
                                                                                    abs=1e-3))
    assert fair_comparison.paired([1.], [0.])['lo'] is None  # one seed: no interval
    # rounded once, at the table's digits: 0.8947 shows as +0.89 (not via 0.895 as +0.90)
    p = fair_comparison.paired([0.8947, 1.], [0., 0.])
    assert fair_comparison.gain_row('a − b', 'lbfgs_vit', p)[-1] == '+0.89 +1.00'


def _seed_file(folder, seed, offset):
    rows = {name: {split: {probe: 10. + i + offset + (0.5 if split == 'test' else 0.)
                           for probe in fair_comparison.PROBES}
                   for split in ('val', 'test')}
            for i, name in enumerate(fair_comparison.ROWS)}
    (folder / f'seed_{seed}.json').write_text(json.dumps(dict(seed=seed, rows=rows)))


def test_collect_merges_the_seed_files_and_renders_the_tables(tmp_path):
    results = tmp_path / 'fair_comparison'
    results.mkdir()
    for seed, offset in ((0, 0.), (1, 1.), (2, 3.)):
        _seed_file(results, seed, offset)
    merged = benchmark_demo.main(['--collect', '--results', str(results)])
    saved = json.loads((tmp_path / 'fair_comparison.json').read_text())
    assert saved == merged and sorted(saved['seeds']) == ['0', '1', '2']
    assert saved['seeds']['1']['cotap']['test']['lbfgs_vit'] == 10. + 3 + 1 + 0.5
    text = fair_comparison.render(merged, 'test')
    # cotap (row 3) - control_cls (row 2) is +1 on every seed: an interval of zero width
    assert '| cotap − control_cls | lbfgs_vit | +1.00 | [+1.00, +1.00] | +1.00 +1.00 +1.00 |' \
        in text
    assert '| cotap | 14.83 ± 1.53 |' in text  # 13.5, 14.5, 16.5
    assert '| 0 | +1.00 | -1.00 | n/a | 10.500 | +3.000 | not measured |' in \
        fair_comparison.render_diagnostics(merged)  # seed files without the diagnostics
    with pytest.raises(SystemExit):
        benchmark_demo.parse_args([])


def test_diagnostics_come_from_the_seed_files_and_the_code_measurements(tmp_path):
    results = tmp_path / 'fair_comparison'
    (results / 'code_entropy').mkdir(parents=True)
    _seed_file(results, 4, 0.)
    seed = json.loads((results / 'seed_4.json').read_text())
    seed['knn_agreement'] = dict(coco=dict(all=dict(knn=0.3, random=0.25, ratio=1.2, pairs=7)))
    (results / 'seed_4.json').write_text(json.dumps(seed))
    (results / 'code_entropy' / 'seed_4_no_rank.json').write_text(json.dumps(
        dict(teacher={'entropy@0.02': 2.345}, student={'entropy@0.02': 1.0})))
    merged = fair_comparison.collect(str(results))
    assert merged['diagnostics']['4']['code_entropy']['no_rank']['entropy@0.02'] == 2.345
    assert fair_comparison.render_diagnostics(merged).splitlines()[-1] == \
        '| 4 | +1.00 | -1.00 | 0.300 / 0.250 = 1.20× | 10.500 | +3.000 | not measured | ' \
        'not measured | 2.35 |'
    with pytest.raises(SystemExit):
        benchmark_demo.parse_args(['--seeds', '0', '--update-docs'])


def test_demo_work_dir_is_replaced_only_if_the_demo_made_it(tmp_path):
    prepare_work_dir = demo_presets.prepare_work_dir
    other = tmp_path / 'mine'
    other.mkdir()
    (other / 'precious.txt').write_text('x')
    with pytest.raises(SystemExit, match='not written by tools/demo.py'):
        prepare_work_dir(str(other))
    assert (other / 'precious.txt').exists()
    ours = tmp_path / 'demo'
    prepare_work_dir(str(ours))
    (ours / 'old_result.json').write_text('{}')
    prepare_work_dir(str(ours))  # a rerun starts afresh
    assert not (ours / 'old_result.json').exists() and (ours / demo_presets.MARKER).exists()


def test_gpu_preset_configs_agree_and_need_a_gpu(tmp_path):
    """The GPU-scale preset: one architecture across its init, CoTAP and probe configs (the
    widths the demo passes on), and a clear refusal without CUDA."""
    import torch
    from mmengine.config import Config
    p = demo_presets.PRESETS['gpu']
    cfgs = {k: Config.fromfile(osp.join(ROOT, v)) for k, v in p['configs'].items()}
    for key in ('supervised', 'cotap', 'probe'):
        arch = cfgs[key].model.backbone.arch
        assert (arch.embed_dims, arch.num_heads) == (p['embed_dims'], p['num_heads']), key
    assert cfgs['supervised'].model.head.in_channels == p['embed_dims']
    assert cfgs['probe'].model.decode_head.in_channels == 2 * p['embed_dims']
    assert cfgs['probe_pixels'].model.backbone.type == 'PixelPatches'
    assert cfgs['probe'].test_dataloader.dataset.pipeline[1].scale == (p['size'], p['size'])
    # the CoTAP stage's global crop is the init's crop and the backbone's img_size
    crops = cfgs['cotap'].train_dataloader.dataset.view_pipeline[0].size_crops
    assert crops[0] == cfgs['cotap'].model.backbone.img_size == \
        cfgs['supervised'].model.backbone.img_size
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='needs a CUDA GPU'):
            DemoChain(str(tmp_path / 'gpu'), 0, 'gpu')
    with pytest.raises(ValueError, match='has no selfdistill init'):
        DemoChain(str(tmp_path / 'gpu'), 0, 'gpu', init='selfdistill')


def test_a_seed_resumes_only_what_the_same_commit_and_inputs_finished(tmp_path):
    """``--resume``: a finished stage is kept with its seconds, result and row; a record of
    another commit or of other data is refused, as is a checkout with local changes."""
    chain = DemoChain(str(tmp_path / 'seed_0'), 0, 'mini')
    (tmp_path / 'seed_0' / 'data' / 'nns').mkdir(parents=True)
    (tmp_path / 'seed_0' / 'data' / 'nns' / 'nns_coco.npz').write_bytes(b'pairs')
    (tmp_path / 'seed_0' / 'init_backbone.pth').write_bytes(b'weights')
    digest = fair_comparison.inputs_digest(chain)
    calls = []

    def train(progress, task):
        calls.append(1)
        chain.rows['cotap'] = dict(checkpoint='cotap_backbone.pth', with_oaf=True)
        return dict(score=1.5)

    resumed = []
    first = fair_comparison.kept_stage(chain, 'cotap', 'abc', digest, resumed, train)
    chain.rows.clear()
    again = fair_comparison.kept_stage(chain, 'cotap', 'abc', digest, resumed, train)
    assert first == again == dict(score=1.5) and len(calls) == 1 and resumed == ['cotap']
    assert chain.rows['cotap']['with_oaf'] and chain.seconds['cotap'] >= 0
    with pytest.raises(SystemExit, match='written at commit abc'):
        fair_comparison.kept_stage(chain, 'cotap', 'def', digest, [], train)
    (tmp_path / 'seed_0' / 'data' / 'nns' / 'nns_coco.npz').write_bytes(b'other pairs')
    changed = fair_comparison.inputs_digest(chain)
    assert changed != digest
    with pytest.raises(SystemExit, match='differ from those'):
        fair_comparison.kept_stage(chain, 'cotap', 'abc', changed, [], train)
    assert len(calls) == 1


def test_resume_needs_a_checkout_without_local_changes(tmp_path):
    import subprocess
    repo = tmp_path / 'repo'
    repo.mkdir()
    (repo / 'a.py').write_text('x = 1\n')
    for cmd in (['init', '-q'], ['add', 'a.py'],
                ['-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'a']):
        subprocess.run(['git', '-C', str(repo), *cmd], check=True)
    commit, dirty = fair_comparison.checkout_commit(str(repo))
    assert len(commit) == 40 and not dirty
    (repo / 'a.py').write_text('x = 2\n')
    assert fair_comparison.checkout_commit(str(repo)) == (commit, True)


def test_primary_lead_reports_the_registered_comparisons(tmp_path, monkeypatch):
    """The README/demo.md lead: the rows' test means and both registered gains per seed; a
    goal is called only at five seeds, and 'not met' when its interval reaches zero."""
    results = tmp_path / 'fair_comparison'
    results.mkdir()
    _seed_file(results, 0, 0.)
    one = fair_comparison.render_primary(fair_comparison.collect(str(results)))
    assert '1 of the 5 registered seeds: 0)' in one and 'no interval from one seed' in one
    assert 'CoTAP − the data-matched control: +1.00 mIoU (per seed +1.00;' in one
    assert 'goal 1 is decided at 5 seeds' in one
    for seed, offset in ((1, 1.), (2, 3.), (3, 0.), (4, 2.)):
        _seed_file(results, seed, offset)
    merged = fair_comparison.collect(str(results))
    merged['seeds']['4']['cotap']['test']['lbfgs_vit'] -= 3.  # one seed where CoTAP loses
    five = fair_comparison.render_primary(merged)
    assert '5 of the 5 registered seeds: 0, 1, 2, 3, 4)' in five
    assert '**Primary metric** (' in five and '**Primary metric so far** (' in one
    # differences 1, 1, 1, 1, -2: mean 0.4, sd 1.342, lower end 0.4 - 2.776 * 0.6 = -1.27
    assert 'goal 1 (cotap − control_cls > 0) is not met: the interval reaches 1.27 below zero' \
        in five
    assert 'per seed +1.00, +1.00, +1.00, +1.00, -2.00' in five
    assert fair_comparison.render_primary(dict(seeds={})).startswith('No seed')
    # --update-docs puts the lead between the markers of README and demo.md, keeping the rest
    readme = tmp_path / 'README.md'
    readme.write_text('# x\n<!-- fair_comparison_primary:start -->\nold\n'
                      '<!-- fair_comparison_primary:end -->\nrest\n')
    monkeypatch.setattr(benchmark_demo, 'DOCS', str(tmp_path / 'benchmarks.md'))
    monkeypatch.setattr(benchmark_demo, 'LEADS', (str(readme),))
    benchmark_demo.main(['--collect', '--update-docs', '--results', str(results)])
    text = readme.read_text()
    assert 'old' not in text and text.endswith('rest\n') and 'goal 1 (cotap' in text
    assert 'cotap − control_cls' in (tmp_path / 'benchmarks.md').read_text()


def test_ssl_gate_trains_the_self_distilled_init_and_probes_it_against_random(tmp_path):
    """``--ssl-gate`` at the miniature scale: the self-distilled init is trained (and cached
    under a key of its steps) and both inits get the primary probe on val and test."""
    args = ['--ssl-gate', '--ssl-iters', '2', '--preset', 'mini', '--work-dir',
            str(tmp_path / 'work'), '--cache-dir', str(tmp_path / 'cache'), '--results',
            str(tmp_path / 'results')]
    benchmark_demo.main(args)
    gate = json.loads((tmp_path / 'results' / 'ssl_gate_seed_0.json').read_text())
    assert gate['selfdistill_iters'] == 2 and set(gate['scores']) == {'random', 'selfdistill'}
    for init in ('random', 'selfdistill'):
        assert all(0. <= gate['scores'][init][s] <= 100. for s in ('val', 'test'))
        assert gate['fits'][init]['weight_decay'] in (1e-5, 1e-4, 1e-3, 1e-2)
    assert gate['val_gain'] == pytest.approx(
        gate['scores']['selfdistill']['val'] - gate['scores']['random']['val'], abs=0.01)
    assert gate['passes'] == (gate['val_gain'] >= 5)
    cached = list((tmp_path / 'cache').iterdir())
    assert len(cached) == 1 and cached[0].name.startswith('selfdistill-seed0-')
    assert 'init' in gate['stage_seconds']['selfdistill']


def test_oracle_follow_up_contrasts_pair_with_the_protocols_rows(tmp_path):
    """The follow-up's files are merged beside the seeds; its three registered contrasts take
    rows (c) and (d) of the same seed from the protocol's files."""
    results = tmp_path / 'fair_comparison'
    results.mkdir()
    agreement = dict(coco=dict(all=dict(knn=0.3, random=0.25, ratio=1.2, pairs=7)))
    for seed, offset in ((0, 0.), (1, 2.)):
        _seed_file(results, seed, offset)  # cotap = 13 + offset, no_rank = 14 + offset on val
        seed_file = json.loads((results / f'seed_{seed}.json').read_text())
        seed_file['knn_agreement'] = agreement if seed == 0 else dict(coco=None)
        (results / f'seed_{seed}.json').write_text(json.dumps(seed_file))
        rows = {name: {split: {probe: 20. + offset + (3. * seed if name == 'cotap_oracle' else 0.)
                               for probe in fair_comparison.PROBES}
                       for split in ('val', 'test')}
                for name in fair_comparison.ORACLE_ROWS}
        (results / f'oracle_seed_{seed}.json').write_text(json.dumps(dict(
            seed=seed, rows=rows, knn_agreement=agreement, oracle_agreement=dict(
                coco=dict(all=dict(knn=0.7 + seed / 10))))))
    merged = fair_comparison.collect(str(results))
    assert sorted(merged['seeds']) == sorted(merged['oracle']) == ['0', '1']
    text = fair_comparison.render_oracle(merged, 'val')
    # (c°) - (d°): 0 and 3; (c) - (d) = -1 on both seeds, so the change is 1 and 4
    assert '| cotap_oracle − no_rank_oracle | lbfgs_vit | +1.50 | [-17.56, +20.56] | +0.00 +3.00 |' \
        in text
    assert '| (cotap_oracle − no_rank_oracle) − (cotap − no_rank) | lbfgs_vit | +2.50 |' in text
    assert '| cotap_oracle − cotap | kmeans_vit | +8.50 | [-10.56, +27.56] | +7.00 +10.00 |' \
        in text
    assert 'per seed: 0: 0.700, 1: 0.800.' in text
    assert text.endswith('on seeds: 0.')
    assert fair_comparison.render_oracle(dict(seeds={}, oracle={})).startswith('No seed')


def test_oracle_seed_trains_on_the_oracle_neighbours(tmp_path):
    """``--oracle-seeds`` at the miniature scale: oracle kNN files as wide as the init's, both
    rows trained on them (the files reach the training config) and probed on val and test."""
    import numpy as np
    args = ['--oracle-seeds', '0', '--iters', '2', '--preset', 'mini', '--work-dir',
            str(tmp_path / 'work'), '--cache-dir', str(tmp_path / 'cache'), '--results',
            str(tmp_path / 'results')]
    benchmark_demo.main(args)
    result = json.loads((tmp_path / 'results' / 'oracle_seed_0.json').read_text())
    assert set(result['rows']) == set(fair_comparison.ORACLE_ROWS)
    for row in result['rows'].values():
        for split in ('val', 'test'):
            assert set(row[split]) == set(fair_comparison.PROBES)
            assert 0. <= row[split]['lbfgs_vit'] <= 100.
    work = tmp_path / 'work' / 'oracle_seed_0'
    for subset in ('coco', 'imagenet'):
        with np.load(work / 'data' / 'nns' / f'nns_{subset}.npz') as knn, \
                np.load(work / 'oracle_nns' / f'nns_{subset}.npz') as o:
            assert o['nns'].shape == knn['nns'].shape
            assert (o['nns'][:, 0] == np.arange(len(o['nns']))).all()
        oracle, init = result['oracle_agreement'][subset], result['knn_agreement'][subset]
        assert oracle['all']['knn'] >= init['all']['knn']
    for row in fair_comparison.ORACLE_ROWS:
        log = (work / 'logs' / f'{row}.log').read_text()
        assert f'coco.nns_file={work / "oracle_nns" / "nns_coco.npz"}' in log
    assert 'init' in result['stage_seconds'] and result['commit']
