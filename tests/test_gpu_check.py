"""tools/gpu_check.sh and benchmarks/gpu_check.py: the CPU dry run of the whole check, and the
derivations (crossover, goals of benchmarks/gpu_goals.py) on known measurements."""
import json
import os
import os.path as osp
import subprocess
import sys

from conftest import ROOT

from benchmarks.gpu_goals import crossover, goals


def _rows(times):
    """benchmark_loss rows from {(impl, n): seconds}, memory proportional to time."""
    return [dict(impl=impl, n=n, seconds=s, peak_bytes=int(1e9 * s))
            for (impl, n), s in times.items()]


def test_crossover_is_where_sorted_stays_faster():
    times = {('dense', 1000): 1.0, ('sorted', 1000): 2.0,
             ('dense', 2048): 1.0, ('sorted', 2048): 0.9,
             ('dense', 4200): 1.0, ('sorted', 4200): 1.1,   # slower again: not yet
             ('dense', 8400): 3.0, ('sorted', 8400): 1.0,
             ('sorted', 65536): 2.0}                         # no dense there: not compared
    assert crossover(_rows(times)) == 8400
    assert crossover(_rows({('dense', 10): 1.0, ('sorted', 10): 2.0})) is None


def test_goals_read_the_measurements():
    rows = _rows({('dense', 4200): 1.0, ('auto', 4200): 1.2, ('sorted', 1048576): 0.7,
                  ('auto', 1048576): 0.4})
    rows[1]['peak_bytes'] = int(0.04e9)
    train = dict(ratio=dict(median=1.4), timing=dict(cotap=dict(median_ms=500.)),
                 loader=dict(batches_per_s=3.0))
    g = goals(rows, train)
    assert g['auto_time_vs_dense_4200'] == dict(bound=1.5, value=1.2, met=True)
    assert g['auto_memory_vs_dense_4200']['met'] is True
    assert g['exact_seconds_1048576'] == dict(bound=0.5, value=0.4, met=True)
    assert g['cotap_vs_plain_step']['met'] is False
    assert g['loader_not_the_bottleneck']['met'] is True  # 3 batches/s against 2 steps/s
    assert goals([], None)['cotap_vs_plain_step']['met'] is None


def test_dry_run_of_the_whole_check(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable)
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu_check.sh'), '--dry-run', '--out',
                           str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads((out / 'gpu_check.json').read_text())
    assert report['dry_run'] is True and report['machine']['device'] == 'cpu'
    for step in ('cuda_tests', 'benchmark_loss', 'benchmark_train', 'train_resume'):
        assert report['steps'][step]['status'] == 'passed', step
    # the resumed run went on from the checkpoint of the first
    log = (out / 'logs' / 'train_resume.log').read_text()
    assert 'resumed' in log.lower() and (out / 'train' / 'iter_2.pth').is_file()
    # the crossover is the one of the measured loss rows (None where sorted lost at n = 1,000:
    # a timing on a loaded CPU), reported rather than written into the package
    rows = json.loads((out / 'benchmark_loss.json').read_text())['rows']
    assert {r['impl'] for r in rows} == {'dense', 'sorted', 'auto'}
    assert report['sorted_from_n'] == crossover(rows) and report['sorted_from_n'] in (None, 1000)
    assert report['goals']['cotap_vs_plain_step']['value'] > 0
    # the patch holds only the docs sections written by the benchmarks (the crossover is in the
    # report, never a change of the package) and applies to this tree
    patch = (out / 'gpu_check.patch').read_text()
    assert patch.startswith('--- a/docs/benchmarks.md') and 'benchmark_train' in patch
    assert patch.count('\n--- a/') == 0 and 'continuous_ap_loss.py' not in patch
    check = subprocess.run(['git', 'apply', '--check', str(out / 'gpu_check.patch')], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_gpu_run_without_wheels_is_refused(tmp_path):
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu_check.sh'), '--out',
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and '--wheels WHEELS is required' in proc.stderr
