"""tools/benchmark_loop.py: the real tools/train.py loop, each iteration read from its scalar
log, beside the same config's steps; the rows' table."""
import pytest

from conftest import load_tool, make_cotap_workspace

benchmark_loop = load_tool('benchmark_loop')


def test_loop_and_step_of_the_same_config(tmp_path, monkeypatch):
    root = make_cotap_workspace(tmp_path / 'ws')
    monkeypatch.chdir(root)
    row = benchmark_loop.main(['tiny.py', '--label', 'tiny', '--iters', '6', '--skip', '2',
                               '--step-iters', '2', '--warmup', '1', '--work-dir',
                               str(tmp_path / 'loop')])
    assert row['loop_iters'] == 4 and row['step_iters'] == 2 and row['batch_size'] == 2
    assert row['loop_ms'] > 0 and row['step_ms'] > 0 and 0 <= row['data_ms'] < row['loop_ms']
    assert row['loop_over_step'] == pytest.approx(row['loop_ms'] / row['step_ms'], abs=2e-3)
    assert (tmp_path / 'loop').is_dir() and row['command'].startswith(
        'python tools/benchmark_loop.py tiny.py')
    table = benchmark_loop.render({'tiny': row})
    assert '| tiny | `' in table and f'{row["loop_over_step"]:.3f}×' in table
    with pytest.raises(SystemExit):
        benchmark_loop.parse_args(['tiny.py', '--label', 'x', '--iters', '4', '--skip', '4'])
