"""The ContinuousAPLoss benchmark: per-case measurement, accuracy against dense, the table and
the command line (tools/benchmark_loss.py) end to end on tiny lists."""
import json

import pytest
import torch
from conftest import load_tool

from benchmarks.loss_timing import make_inputs, max_abs_diff, render_table, time_case


def test_inputs_are_seeded_and_cotap_like():
    pred, target, pos = make_inputs(600, 'cpu')
    pred2, _, pos2 = make_inputs(600, 'cpu')
    assert torch.equal(pred, pred2) and torch.equal(pos, pos2)
    assert pred.min() >= -1 and pred.max() <= 1
    assert target.min() >= -0.4 and target.max() <= 1.0
    assert 0.1 < pos.float().mean() < 0.25


@pytest.mark.parametrize('impl', ['dense', 'sorted', 'auto'])
def test_time_case_measures_one_impl(impl):
    r = time_case(impl, 300, 'cpu', repeats=2)
    assert r['impl'] == impl and r['n'] == 300 and r['seconds'] > 0 and r['peak_bytes'] >= 0
    assert r['chosen'] in ('dense', 'sorted')
    if impl != 'auto':
        assert r['chosen'] == impl


def test_exact_impls_agree_with_dense_and_the_table_marks_skips():
    diffs = max_abs_diff(['dense', 'sorted'], 500, 'cpu')
    assert diffs['dense'] == 0 and max(diffs.values()) < 1e-4
    results = {('dense', 500): dict(seconds=0.2, peak_bytes=2048, chosen='dense', diff=0.),
               ('sorted', 500): dict(seconds=0.1, peak_bytes=512, chosen='sorted', diff=1e-7),
               ('sorted', 5000): dict(seconds=0.3, peak_bytes=1024, chosen='sorted', diff=None)}
    table = render_table(results, [500, 5000], ['dense', 'sorted'])
    assert '| 5,000 | dense | skipped (O(n²)) |' in table
    assert '0.500×' in table and '25.0 %' in table


def test_command_line_writes_json_and_docs_section(tmp_path):
    docs, out = tmp_path / 'benchmarks.md', tmp_path / 'loss.json'
    load_tool('benchmark_loss').main(['--sizes', '200', '--impls', 'dense', 'sorted',
                                      '--repeats', '1', '--output', str(docs),
                                      '--json', str(out)])
    rows = json.loads(out.read_text())['rows']
    assert {(r['impl'], r['n']) for r in rows} == {('dense', 200), ('sorted', 200)}
    assert all('diff' in r for r in rows)
    text = docs.read_text()
    assert '<!-- benchmark_loss:start -->' in text and '| 200 | sorted |' in text
