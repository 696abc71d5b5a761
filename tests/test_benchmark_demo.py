"""tools/benchmark_demo.py and benchmarks.demo_report: aggregation over seeds and the
docs section it writes."""
import os.path as osp

import pytest

from conftest import load_tool

from benchmarks import demo_presets, demo_report, demo_seeds
from benchmarks.demo_chain import ROOT, DemoChain

benchmark_demo = load_tool('benchmark_demo')


def _result(seed, scores):
    """A demo-style result: scores = {row: (linear, cluster, ratio)}."""
    rows = {name: dict(linear_miou=lin, cluster_miou=clu,
                       concentration=dict(intra=0.5, inter=0.1, gap=0.4, ratio=ratio))
            for name, (lin, clu, ratio) in scores.items()}
    return dict(seed=seed, rows=rows, pixels_miou=4.5, chance_miou=4.48, cotap_iters=300,
                preset={}, stage_seconds=dict(cotap=100.0), total_seconds=500.0)


RESULTS = [
    _result(0, dict(init=(10.0, 5.0, 0.01), init_more=(11.0, 6.0, 0.02), cotap=(15.0, 8.0, 0.05))),
    _result(1, dict(init=(12.0, 5.0, 0.01), init_more=(12.0, 6.0, 0.02), cotap=(16.0, 9.0, 0.06))),
    _result(2, dict(init=(11.0, 5.0, 0.01), init_more=(13.0, 6.0, 0.02), cotap=(12.0, 7.0, 0.04))),
]
ROWS = ['init', 'init_more', 'cotap']


def test_summary_is_mean_and_sample_std_and_gains_per_seed():
    s = demo_report.summarize(RESULTS, ROWS)
    assert s['rows']['cotap']['linear_miou']['mean'] == pytest.approx(43 / 3)
    assert s['rows']['init']['linear_miou']['std'] == pytest.approx(1.0)  # 10, 12, 11
    assert s['rows']['cotap']['concentration']['mean'] == pytest.approx(0.05)
    assert s['gains']['init']['per_seed'] == pytest.approx([5.0, 4.0, 1.0])
    assert s['gains']['init']['all_positive']
    assert s['gains']['init_more']['per_seed'] == pytest.approx([4.0, 4.0, -1.0])
    assert not s['gains']['init_more']['all_positive']
    assert s['gains']['init_more']['mean'] == pytest.approx(7 / 3)
    assert s['lbfgs_gains'] == {}  # no seed has the converged probe: no gain is made up
    with_lbfgs = [dict(r, rows={n: dict(v, lbfgs_miou=v['linear_miou'] + 1.)
                                for n, v in r['rows'].items()}) for r in RESULTS]
    s = demo_report.summarize(with_lbfgs, ROWS)
    assert s['lbfgs_gains']['init']['per_seed'] == pytest.approx([5.0, 4.0, 1.0])


def test_docs_section_replaced_between_markers(tmp_path, monkeypatch):
    docs = tmp_path / 'benchmarks.md'
    docs.write_text('# Benchmarks\n\nkeep me\n')
    monkeypatch.setattr(benchmark_demo, 'DOCS', str(docs))
    summary = demo_report.summarize(RESULTS, ROWS)
    benchmark_demo.update_docs(RESULTS, summary, ROWS, ['--seeds', '0', '1', '2'])
    benchmark_demo.update_docs(RESULTS, summary, ROWS, ['--seeds', '0', '1', '2'])
    text = docs.read_text()
    assert text.count(benchmark_demo.MARK_START) == 1 and 'keep me' in text
    assert '| (c) CoTAP, N steps from the init | 14.33 +- 2.08 |' in text
    # per seed: linear / L-BFGS (not measured here: '-') / k-means / ratio, then the gains
    assert '| 2 | 11.00 / - / 5.00 / 0.010 | 13.00 / - / 6.00 / 0.020 | 12.00 / - / 7.00 / ' \
        '0.040 | +1.00 / - | -1.00 / - |' in text


def test_rows_and_ablation_options():
    """Every ablation is a CoTAP stage with switches of the real config; the init is always
    measured, as the reference of the gains."""
    from mmengine.config import Config, DictAction
    for config, preset in ((demo_configs()['cotap'], 'default'),
                           (demo_presets.PRESETS['gpu']['configs']['cotap'], 'gpu')):
        cfg = Config.fromfile(osp.join(ROOT, config))
        dims = {**demo_presets.DEMO_ARCH, **demo_presets.PRESETS[preset]}['embed_dims']
        assert cfg.model.backbone.arch.embed_dims == dims
        for name, (options, with_oaf) in demo_seeds.ablations(dims).items():
            trial = cfg.copy()
            trial.merge_from_dict({k: DictAction._parse_iterable(v)
                                   for k, v in (o.split('=', 1) for o in options)})
            assert trial.model.backbone.get('with_oaf', True) == with_oaf, name
            width = dims * (2 if with_oaf else 1)  # the heads take what the backbone gives
            assert trial.model.patch_head.in_channels == width, (preset, name)
            assert trial.model.cls_head.in_channels == width, (preset, name)
    assert cfg.model.loss_weights.cotap == 1.
    args = benchmark_demo.parse_args(['--rows', 'cotap'])
    assert args.rows == ['init', 'cotap']
    with pytest.raises(SystemExit):  # refused before any training
        benchmark_demo.parse_args(['--rows', 'init', 'init_more'])


def demo_configs():
    return demo_presets.CONFIGS


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


def test_collect_reads_the_seeds_results(tmp_path):
    import json
    for r in RESULTS:
        (tmp_path / f"seed_{r['seed']}").mkdir()
        (tmp_path / f"seed_{r['seed']}" / 'results.json').write_text(json.dumps(r))
    args = benchmark_demo.parse_args(['--collect', '--seeds', '2', '0', '--work-dir',
                                      str(tmp_path), '--rows', *ROWS])
    assert [r['seed'] for r in benchmark_demo.collect(args.work_dir, args.seeds, args.rows)] == [2, 0]
    args = benchmark_demo.parse_args(['--collect', '--seeds', '5', '--work-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match='seed_5/results.json does not exist'):
        benchmark_demo.collect(args.work_dir, args.seeds, args.rows)
    args = benchmark_demo.parse_args(['--collect', '--seeds', '0', '--work-dir', str(tmp_path),
                                      '--rows', 'init', 'cotap', 'cotap_no_ap'])
    with pytest.raises(SystemExit, match="no rows \\['cotap_no_ap'\\]"):
        benchmark_demo.collect(args.work_dir, args.seeds, args.rows)


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
