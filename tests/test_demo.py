"""A miniature of `make demo` (tools/demo.py --preset mini): synthetic scenes -> kNN -> init ->
CoTAP pretraining -> extract_backbone -> `mim train mmseg` linear probes -> `mim test mmseg`, and
the recorded `mim_test_command` evaluated again by the project's tools/test.py gives the same
CoTAP mIoU (issue 7's end-to-end criterion on a real short CoTAP run)."""
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    import demo
    work_dir = tmp_path_factory.mktemp('demo') / 'work'
    results = demo.main(['--work-dir', str(work_dir), '--preset', 'mini'])
    return work_dir, results


def test_results_file_and_stages(demo_run):
    work_dir, results = demo_run
    with open(work_dir / 'results.json') as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    for key in ('init_miou', 'cotap_miou'):
        assert 0.0 <= saved[key] <= 100.0
    assert saved['gain'] == pytest.approx(saved['cotap_miou'] - saved['init_miou'], abs=0.01)
    assert set(saved['stage_seconds']) >= {'data', 'knn', 'cotap', 'probe-init', 'probe-cotap'}
    assert all(s > 0 for s in saved['stage_seconds'].values())
    # the real on-disk products of each stage
    for path in ('data/coco/train2017', 'data/imagenet/train', 'data/seg/img_dir/val',
                 'data/nns/nns_coco.npz', 'cotap_backbone.pth'):
        assert (work_dir / path).exists(), path
    assert any(f.endswith('.png') for f in os.listdir(work_dir / 'pictures' / 'cotap'))


def test_mim_test_command_matches_tools_test(demo_run):
    """The recorded command's checkpoint and options, evaluated by tools/test.py, give the
    CoTAP mIoU that `mim test mmseg` printed in the demo."""
    work_dir, results = demo_run
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
