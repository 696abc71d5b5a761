"""tools/benchmark_demo.py: aggregation over seeds and the docs section it writes."""
import os.path as osp
import sys

import pytest

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
import benchmark_demo  # noqa: E402


def _row(seed, init, cotap):
    return dict(seed=seed, init_miou=init, cotap_miou=cotap, gain=round(cotap - init, 2),
                stage_seconds=dict(cotap=100.0), total_seconds=500.0, preset={})


def test_summary_is_mean_and_sample_std():
    rows = [_row(0, 50.0, 51.0), _row(1, 52.0, 55.0), _row(2, 48.0, 50.0)]
    s = benchmark_demo.summarize(rows)
    assert s['gain']['mean'] == pytest.approx(2.0)
    assert s['gain']['std'] == pytest.approx(1.0)  # gains 1, 3, 2: sample std 1
    assert s['init_miou']['mean'] == pytest.approx(50.0)


def test_docs_section_replaced_between_markers(tmp_path, monkeypatch):
    docs = tmp_path / 'benchmarks.md'
    docs.write_text('# Benchmarks\n\nkeep me\n')
    monkeypatch.setattr(benchmark_demo, 'DOCS', str(docs))
    rows = [_row(0, 50.0, 51.0), _row(1, 52.0, 55.0)]
    summary = benchmark_demo.summarize(rows)
    benchmark_demo.update_docs(rows, summary, ['--seeds', '0', '1'], 'default', 'random')
    benchmark_demo.update_docs(rows, summary, ['--seeds', '0', '1'], 'default', 'random')
    text = docs.read_text()
    assert text.count(benchmark_demo.MARK_START) == 1 and 'keep me' in text
    assert '| 1 | 52.00 | 55.00 | +3.00 |' in text
    assert '+2.00 +- 1.41' in text


def test_demo_work_dir_is_replaced_only_if_the_demo_made_it(tmp_path):
    import demo
    other = tmp_path / 'mine'
    other.mkdir()
    (other / 'precious.txt').write_text('x')
    with pytest.raises(SystemExit, match='not written by tools/demo.py'):
        demo.prepare_work_dir(str(other))
    assert (other / 'precious.txt').exists()
    ours = tmp_path / 'demo'
    demo.prepare_work_dir(str(ours))
    (ours / 'old_result.json').write_text('{}')
    demo.prepare_work_dir(str(ours))  # a rerun starts afresh
    assert not (ours / 'old_result.json').exists() and (ours / demo._MARKER).exists()
